"""`baynet eval nezha` on a fault of each Nezha mesh, through the real path: one table per mesh, pooled."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from baynet.lab.harness import mesh_names
from baynet.lab.scoring import summarise
from tests.conftest import ROOT, SHARED, require

pytestmark = pytest.mark.integration

BOUTIQUE = SHARED / "datasets" / "nezha" / "onlineboutique"
TRAIN_TICKET = SHARED / "datasets" / "nezha" / "trainticket"


def _check_result(result: dict, n: int) -> None:
    assert {"overall", "by_type", "cases", "skipped", "relocated", "seconds_per_case", "baselines"} <= set(result)
    assert result["overall"]["n"] == n and len(result["cases"]) == n
    for metrics in [result["overall"], *result["by_type"].values(),
                    *(b["overall"] for b in result["baselines"].values())]:
        assert {"AC@1", "AC@3", "AC@5", "Avg@5"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("AC@1", "AC@3", "AC@5", "Avg@5"))
    assert set(result["baselines"]) == {"baro", "microrank", "random"}
    for case in result["cases"]:
        assert set(case["ranks"]) == {"baynet", "baro", "microrank"} and case["candidates"] >= 1
    assert result["seconds_per_case"] > 0


def test_eval_one_fault_of_each_mesh_json():
    require(BOUTIQUE.is_dir() and TRAIN_TICKET.is_dir(), f"Nezha data at {BOUTIQUE} and {TRAIN_TICKET}")
    baynet = Path(sys.executable).with_name("baynet")
    proc = subprocess.run([str(baynet), "eval", "nezha", str(BOUTIQUE), str(TRAIN_TICKET), "--cases", "1",
                           "--synthetic", "3", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert set(result["meshes"]) == {"onlineboutique", "trainticket"}
    for mesh in result["meshes"].values():
        _check_result(mesh, 1)
    _check_result(result["pooled"], 2)
    boutique, ticket = result["meshes"]["onlineboutique"], result["meshes"]["trainticket"]
    # faults without span files are reported, not silently dropped (15 of 56 in this data)
    assert len(boutique["skipped"]) == 15 and all("no span file" in s["reason"] for s in boutique["skipped"])
    assert boutique["cases"][0]["rank"] is not None and boutique["cases"][0]["rank"] <= 5
    # Train-Ticket's first fault is listed 8 h off; it runs where its spans are, and says so
    assert ticket["skipped"] == [] and "inject_time" in ticket["relocated"][0]["reason"]
    assert [c["case"].split(" ", 1)[0] for c in result["pooled"]["cases"]] == ["onlineboutique", "trainticket"]
    # semi-synthetic cases beside the real ones, never mixed into their figures
    for mesh in result["meshes"].values():
        assert mesh["synthetic"]["overall"]["n"] == 3
        assert all(c["fault_type"].startswith("synthetic_") for c in mesh["synthetic"]["cases"])
    assert result["pooled"]["synthetic"]["overall"]["n"] == 6


def test_summary_ranks_and_mesh_names():
    rows = [{"case": "a", "fault_type": "x", "truth": "s2", "candidates": 3, "seconds": 1.0,
             "rankings": {"baynet": ["s2", "s1", "s3"], "baro": ["s1", "s3", "s2"], "microrank": ["s1", "s3"]}}]
    out = summarise(rows, [], [{"case": "a", "reason": "moved"}])
    assert out["cases"][0]["ranks"] == {"baynet": 1, "baro": 3, "microrank": None}
    assert out["overall"]["AC@1"] == 1.0 and out["baselines"]["baro"]["overall"]["AC@3"] == 1.0
    assert out["baselines"]["random"]["overall"]["AC@1"] == 1 / 3 and out["relocated"][0]["reason"] == "moved"
    assert mesh_names([Path("x/onlineboutique"), Path("y/trainticket")]) == ["onlineboutique", "trainticket"]
    assert mesh_names([Path("x/day"), Path("y/day")]) == ["x/day", "y/day"]
