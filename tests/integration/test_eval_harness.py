"""`baynet eval nezha` on two faults of the Online Boutique data, through the real path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, require

pytestmark = pytest.mark.integration

DATA = SHARED / "datasets" / "nezha" / "onlineboutique"


def test_eval_two_faults_json():
    require(DATA.is_dir(), f"Nezha data at {DATA}")
    baynet = Path(sys.executable).with_name("baynet")
    proc = subprocess.run([str(baynet), "eval", "nezha", str(DATA), "--cases", "2", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert {"overall", "by_type", "cases", "skipped", "seconds_per_case", "baselines"} <= set(result)
    assert result["overall"]["n"] == 2 and len(result["cases"]) == 2
    for metrics in [result["overall"], *result["by_type"].values(),
                    *(b["overall"] for b in result["baselines"].values())]:
        assert {"AC@1", "AC@3", "AC@5", "Avg@5"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("AC@1", "AC@3", "AC@5", "Avg@5"))
    assert set(result["baselines"]) == {"baro", "microrank", "random"}
    # faults without span files are reported, not silently dropped (15 of 56 in this data)
    assert len(result["skipped"]) == 15 and all("no span file" in s["reason"] for s in result["skipped"])
    for case in result["cases"]:
        assert case["rank"] is not None and case["rank"] <= 5, case
    assert result["seconds_per_case"] > 0
