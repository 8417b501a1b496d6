"""Public datasets -> bundles (baynet bundle from-rcd / from-nezha) -> baynet eval bundles, through the CLI."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED, require

RCD = SHARED / "datasets" / "rcd-sockshop"
TRAIN_TICKET = SHARED / "datasets" / "nezha" / "trainticket"


def baynet(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "baynet.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def rcd_bundles(tmp_path_factory):
    require(RCD.is_dir(), f"RCD Sock Shop data at {RCD}")
    small = tmp_path_factory.mktemp("rcd")
    for case in ("carts-cpu/1", "user-mem/2", "orders-cpu/3"):
        (small / case).parent.mkdir(parents=True, exist_ok=True)
        (small / case).symlink_to(RCD / case)
    out = tmp_path_factory.mktemp("bundles") / "rcd"
    done = baynet("bundle", "from-rcd", small, out)
    assert "3 bundles" in done.stdout
    return out


def test_converted_rcd_bundles_are_valid_and_metrics_only(rcd_bundles):
    for d in sorted(rcd_bundles.iterdir()):
        summary = json.loads(baynet("bundle", "check", d, "--json").stdout)
        assert summary["trace_files"] == 0 and summary["has_truth"]
        assert summary["rows"]["signals.csv"] > 0 and summary["rows"]["resources.csv"] > 0
    # Converting into a directory that already holds bundles overwrites nothing.
    again = baynet("bundle", "from-rcd", rcd_bundles.parent.parent, rcd_bundles, check=False)
    assert again.returncode == 2


def test_eval_bundles_scores_each_bundle_and_reports_a_broken_one(rcd_bundles, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(rcd_bundles, root / "good")
    broken = root / "broken" / "bad-1"
    shutil.copytree(rcd_bundles / "carts-cpu-1", broken)
    (broken / "signals.csv").write_text("time,destination,requests\n1,carts,-5\n")
    done = baynet("eval", "bundles", root, "--json")
    result = json.loads(done.stdout)
    assert result["overall"]["n"] == 3
    assert [s["case"] for s in result["skipped"]] == [str(broken)]
    assert "signals.csv, line 2" in result["skipped"][0]["reason"]
    assert set(result) >= {"overall", "by_type", "by_directory", "cases", "skipped", "seconds_per_case", "baselines"}
    assert [d["overall"]["n"] for d in result["by_directory"].values()] == [3]
    assert set(result["baselines"]) == {"error_rise", "latency_rise", "random"}
    assert result["baselines"]["error_rise"]["overall"]["AC@1"] == 0.0  # no error data in RCD: it ranks nobody
    for case in result["cases"]:
        assert case["sources"] == ["metrics"]
        assert case["rank"] is not None and case["top5"]
    # The faulty container's own saturation decides: these three are clear cases.
    assert result["overall"]["AC@1"] == 1.0
    text = baynet("eval", "bundles", root).stdout
    assert "Root-cause accuracy on bundles" in text and "skipped" in text


def test_eval_bundles_rejects_unknown_sources(rcd_bundles):
    done = baynet("eval", "bundles", rcd_bundles, "--sources", "tweets", check=False)
    assert done.returncode == 2 and "tweets" in done.stderr and "logs" in done.stderr


def test_a_nezha_fault_as_a_bundle_carries_traces_metrics_logs_and_topology(tmp_path):
    require(TRAIN_TICKET.is_dir(), f"Nezha Train-Ticket data at {TRAIN_TICKET}")
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle, read_truth
    from baynet.lab.datasets.convert import _read_metric_day, nezha_bundle
    from baynet.lab.datasets.nezha import list_cases

    case = [c for c in list_cases(TRAIN_TICKET) if c.fault_type == "cpu_contention"][0]
    out = nezha_bundle(case, TRAIN_TICKET, tmp_path / "b",
                       metrics_day=_read_metric_day(TRAIN_TICKET / case.day / "metric"))
    bundle = load_bundle(out)
    assert bundle.sources == ["traces", "signals", "resources", "logs"]
    # every line is tied to a span of the bundle, the normal phase's too (moved and re-identified alike)
    assert set(zip(bundle.logs["trace_id"], bundle.logs["span_id"])) <= set(zip(bundle.spans["trace_id"],
                                                                              bundle.spans["span_id"]))
    assert bundle.logs["time"].min() < bundle.event.unix - 300  # the normal phase's lines: the baseline
    assert bundle.topology and bundle.event.service == "ts-gateway-service"
    assert read_truth(out) == {"root_cause": case.truth, "fault_type": "cpu_contention"}
    assert set(bundle.resources["metric"]) == {"cpu", "memory", "net_rx", "net_tx"}
    metrics_only = analyse_bundle(bundle, use={"metrics"})
    assert metrics_only.used == ["metrics"]
    assert metrics_only.ranking[0]["service"] == case.truth  # CPU contention shows in the pod's CPU
    assert "cpu +" in metrics_only.ranking[0]["evidence"]
    fused = analyse_bundle(bundle)
    assert fused.used == ["traces", "metrics", "logs"]
    assert {"traces+metrics+logs"} <= set(fused.evidence["sources"])


def test_eval_bundles_online_learns_only_after_each_ranking(rcd_bundles):
    """--online: the bundles in time order through one persistent model each way; the first case is
    ranked before any confirmation, so both ways agree on it; the figures and halves are reported."""
    from baynet.lab.bundle_eval import evaluate_online

    out = evaluate_online([rcd_bundles])
    assert out["learning"]["n"] == out["static"]["n"] == 3
    assert set(out["halves"]) == {"learning", "static"} and len(out["halves"]["learning"]) == 2
    (part,) = out["by_directory"].values()
    assert part["learning"]["n"] == 3
    done = json.loads(baynet("eval", "bundles", rcd_bundles, "--online", "--json").stdout)
    assert done["online"]["static"]["AC@1"] == pytest.approx(out["static"]["AC@1"])


def test_online_learning_never_sees_a_case_truth_before_its_ranking(rcd_bundles, monkeypatch):
    """Truth files are read only after both rankings of their case are recorded."""
    import baynet.lab.bundle_eval as evaluate

    log = []
    real_analyse = evaluate.analyse_bundle

    monkeypatch.setattr(evaluate, "read_truth", lambda path: log.append(("truth", path.name)) or
                        json.loads((path / "truth.json").read_text()))
    monkeypatch.setattr(evaluate, "analyse_bundle", lambda bundle, *a, **k: log.append(("rank", bundle.path.name))
                        or real_analyse(bundle, *a, **k))
    evaluate.evaluate_online([rcd_bundles])
    for i, (what, name) in enumerate(log):
        if what == "truth":
            assert log[i - 2:i] == [("rank", name), ("rank", name)]
    assert [w for w, _ in log].count("truth") == 3
