"""The README's demo path, as a user runs it (a subprocess, real servers, the real flow)."""

import subprocess
import sys
from pathlib import Path

import pytest

from baynet.local.stack import prometheus_available
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

ARTIFACTS = ("ranking.json", "ranking.csv", "posteriors.csv", "evidence.csv", "topology.json", "topology_diff.json",
             "topology_diff.md", "model.json", "structure.html", "_COMPLETE")


@pytest.mark.parametrize("mesh, service, fault", [("sock-shop", "carts", "latency"),
                                                  ("petclinic", "visits-service", "gray")])
def test_demo_ranks_the_injected_service_first(tmp_path, mesh, service, fault):
    baynet = Path(sys.executable).with_name("baynet")
    proc = subprocess.run([str(baynet), "demo", "--workdir", str(tmp_path / "run"), "--mesh", mesh, "--service",
                           service, "--fault", fault], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"top root cause {service} matches" in proc.stdout
    assert "propagation path:" in proc.stdout
    if prometheus_available():  # the stand-in's Prometheus holds Tempo's metrics-generator series: read first
        assert "rates, errors, latencies: Tempo metrics-generator:" in " ".join(proc.stdout.split())
    incidents = list((tmp_path / "run" / "artifacts" / "incidents").iterdir())
    assert len(incidents) == 1
    for name in ARTIFACTS:
        assert (incidents[0] / name).stat().st_size > 0, name
    assert "[" in proc.stderr and "stack up" in proc.stderr  # progress lines
    # it ends by saying how to open the report page; the servers' access logs are in a file, not the terminal
    assert f"baynet serve --artifacts {tmp_path / 'run' / 'artifacts'}" in proc.stdout
    assert "werkzeug" not in proc.stdout + proc.stderr and '"POST / HTTP/1.1"' not in proc.stderr
    assert '"POST / HTTP/1.1"' in (tmp_path / "run" / "servers.log").read_text()
