"""`make demo DEMO_ARGS=--from-metrics`: metrics -> detector -> SQS -> incident flow, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from baynet.local.stack import prometheus_available
from tests.conftest import ROOT, require

pytestmark = pytest.mark.e2e


def test_a_gray_failure_found_in_metrics_is_traced_to_its_service(tmp_path):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    baynet = Path(sys.executable).with_name("baynet")
    run = tmp_path / "run"
    proc = subprocess.run([str(baynet), "demo", "--from-metrics", "--workdir", str(run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "detected from metrics; top root cause vets-service matches" in proc.stdout
    models = run / "artifacts" / "detector" / "models"
    latest = json.loads((models / "latest.json").read_text())
    meta = json.loads((models / latest["version"] / "meta.json").read_text())
    assert meta["kind"] == "gbm" and meta["features"] and 0 < meta["threshold"] < 1
    state = json.loads((run / "artifacts" / "detector" / "state.json").read_text())
    assert state["default"]["vets-service"]["onset"] is not None  # still firing at the end of the run
    incidents = list((run / "artifacts" / "incidents").iterdir())
    ranking = json.loads((incidents[0] / "ranking.json").read_text())
    assert ranking["event"]["labels"]["detector"] == "baynet/detector"
