"""`baynet bundle replay` and `baynet bundle export` through the real path: Tempo-compatible server, Debian's
Prometheus backfilled with promtool, moto SQS, the incident flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from baynet.generator import generate, write_incident
from baynet.stack import LocalStack, prometheus_available
from tests.conftest import ROOT, SHARED, require

pytestmark = pytest.mark.integration
RCD = SHARED / "datasets" / "rcd-sockshop"


def baynet(*args, env=None, check=True):
    done = subprocess.run([sys.executable, "-m", "baynet.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def test_export_from_the_local_stack_then_replay_gives_the_same_ranking(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from flows.incident import incident_rca
    from prefect.settings import PREFECT_API_URL

    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900,
                        after_s=300, rate_per_s=0.5)
    paths = write_incident(incident, tmp_path / "incident")
    saved = dict(os.environ)
    try:
        with LocalStack(tmp_path / "live", traces=paths["traces"], openmetrics=paths["openmetrics"]) as st:
            os.environ.update(st.env)
            original = incident_rca(json.dumps(incident.event))
            env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
            bundle = tmp_path / "bundle"
            done = baynet("bundle", "export", "--event", paths["event"], "--out", bundle, env=env)
            assert "spans" in done.stdout and "signals" in done.stdout
            # Exporting again over the bundle is refused: nothing is overwritten.
            again = baynet("bundle", "export", "--event", paths["event"], "--out", bundle, env=env, check=False)
            assert again.returncode == 2 and "not empty" in again.stderr
    finally:
        os.environ.clear()
        os.environ.update(saved)
    summary = json.loads(baynet("bundle", "check", bundle, "--json").stdout)
    assert summary["traces"] > 100 and summary["rows"]["signals.csv"] > 0 and summary["rows"]["topology.csv"] > 0
    assert not summary["has_truth"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    replayed = json.loads(baynet("bundle", "replay", bundle, "--json", "--workdir", tmp_path / "replay",
                                 env=env).stdout)
    assert replayed["fetch"]["sources"] == ["traces", "metrics"] == original["fetch"]["sources"]
    assert [r["service"] for r in replayed["ranking"]] == [r["service"] for r in original["ranking"]]
    assert replayed["ranking"][0]["service"] == incident.fault_service
    assert replayed["propagation_path"] == original["path"]


@pytest.mark.slow  # the metrics-only flow is covered by test_faults (Tempo unreachable); this adds 1 s data
def test_a_metrics_only_bundle_replays_through_prometheus(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    require((RCD / "user-cpu" / "1").is_dir(), f"RCD Sock Shop data at {RCD}")
    from prefect.settings import PREFECT_API_URL

    from baynet.datasets.convert import rcd_bundle

    bundle = rcd_bundle(RCD / "user-cpu" / "1", tmp_path / "user-cpu-1")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = baynet("bundle", "replay", bundle, "--json", env=env)
    summary = json.loads(done.stdout)
    assert summary["fetch"]["sources"] == ["metrics"] and summary["fetch"]["evidence_complete"] is False
    assert summary["replay"]["metric_step_s"] == 1.0 and summary["replay"]["metric_series"] > 20
    assert summary["ranking"][0]["service"] == "user"  # its CPU, read back through PromQL
    assert "cpu +" in summary["ranking"][0]["evidence"]


def test_replay_of_a_bad_bundle_exits_2_naming_the_problem(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "event.json").write_text('{"service": ""}')
    done = baynet("bundle", "replay", tmp_path / "b", check=False)
    assert done.returncode == 2 and "event.json" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_rollout_replayed_the_flow_reads_versions_from_istio_and_blames_the_new_one(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    from baynet.datasets.rollouts import rollout_bundle

    bundle = rollout_bundle(tmp_path / "rollout", "sock-shop", "user", seed=5)
    (bundle / "changes.csv").unlink()  # the flow must find the deployments in destination_version alone
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    top = summary["ranking"][0]
    assert top["service"] == "user"
    assert "new version fails more than the old" in top["evidence"]
    assert any(c.startswith("user: version v2 first serves calls") for c in summary["fetch"]["changes"])
    # Harmless rollouts seen beside it (one may serve too few calls in the window to show) are not blamed.
    assert len(summary["fetch"]["changes"]) >= 2
