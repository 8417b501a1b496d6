"""The evidence benchmark runs and reports what issue 3 asks for (the timing itself is not asserted)."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_evidence_benchmark_prints_its_numbers():
    proc = subprocess.run([sys.executable, "benchmarks/evidence.py", "--json", "--traces", "300", "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert {"spans", "extract_s", "decode_floor_s", "ratio", "peak_mb"} <= set(out)
    assert out["traces"] >= 240 and out["spans"] > 5 * out["traces"]  # ~300 traces at the generator's rate
    # The printed seconds are rounded to 1 ms: the ratio (from unrounded times) lies within their bounds.
    low = (out["extract_s"] - 5e-4) / (out["decode_floor_s"] + 5e-4)
    high = (out["extract_s"] + 5e-4) / max(out["decode_floor_s"] - 5e-4, 1e-6)
    assert low - 0.01 <= out["ratio"] <= high + 0.01
    assert out["evidence_rows"] > 0 and out["edges"] > 0 and out["peak_mb"] > 0
