"""The load benchmark, small: a flooded queue with bursts of the same incident and bad messages through
`baynet listen --concurrency`, against one-at-a-time (slow: `make bench`)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_load_drains_the_queue_and_loses_nothing():
    proc = subprocess.run([sys.executable, "benchmarks/load.py", "--json", "--events", "60", "--concurrency", "3",
                           "--baseline-events", "12"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in (out, out["baseline"]):
        assert run["lost"] == 0 and run["left_on_queue"] == 0 and run["dlq_unexpected"] == 0
        assert run["dlq"] == run["dlq_expected"]
        assert run["analysed"] == run["unique_incidents"]
        assert run["analysed"] + run["duplicates_collapsed"] + run["dlq"] == run["events"]
    assert out["events"] == 60 and out["dlq_expected"] == 1
