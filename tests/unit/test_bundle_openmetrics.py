"""Bundle rows -> Istio/cAdvisor OpenMetrics (baynet.local.openmetrics): what replay backfills."""

import re

import numpy as np
import pandas as pd

from baynet.local.openmetrics import ISTIO_BUCKETS_MS, render

SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+) (\S+)$')


def parse(text):
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        out.append((m.group(1), labels, float(m.group(3)), float(m.group(4))))
    return out


def histogram_quantile(q, buckets):
    """Prometheus' linear interpolation inside the bucket that holds rank q x count."""
    les = sorted(buckets)
    total = buckets[les[-1]]
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le in les:
        if buckets[le] >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(buckets[le] - prev_c, 1e-12)
        prev_le, prev_c = le, buckets[le]
    return les[-1]


def signals(**extra):
    rows = [{"time": 1000.0 + 60 * i, "source": "front", "destination": 'orders_AWS::DynamoDB::Table "x"',
             "window_s": 60.0, "requests": 600.0, "error_ratio": 0.1, "latency_ms_avg": np.nan,
             "latency_ms_p50": 40.0, "latency_ms_p90": 200.0, "latency_ms_p99": 900.0, "destination_version": "v2",
             "reporter": "destination", **extra} for i in range(3)]
    return pd.DataFrame(rows)


def test_requests_become_istio_counters_split_by_response_code_and_names_survive():
    rendered = render(signals(), None, "shop")
    samples = parse(rendered.text)
    assert rendered.text.endswith("# EOF\n")
    req = [s for s in samples if s[0] == "istio_requests_total"]
    ok = [s for s in req if s[1]["response_code"] == "200"]
    failed = [s for s in req if s[1]["response_code"] == "500"]
    assert [s[2] for s in ok] == [0, 540, 1080, 1620] and [s[2] for s in failed] == [0, 60, 120, 180]
    labels = ok[0][1]
    assert labels["destination_canonical_service"] == 'orders_AWS::DynamoDB::Table \\"x\\"'  # escaped quote
    assert labels["source_workload"] == "front" and labels["destination_version"] == "v2"
    assert labels["reporter"] == "destination" and labels["destination_workload_namespace"] == "shop"


def test_histogram_buckets_give_the_quantiles_back_within_a_bucket():
    samples = parse(render(signals(), None, "shop").text)
    last = {}
    for name, labels, value, t in samples:
        if name == "istio_request_duration_milliseconds_bucket" and t == 1120.0:
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            last[le] = value
    first = {le: 0.0 for le in last}
    for name, labels, value, t in samples:
        if name == "istio_request_duration_milliseconds_bucket" and t == 1060.0:
            first[float("inf") if labels["le"] == "+Inf" else float(labels["le"])] = value
    window = {le: last[le] - first[le] for le in last}  # one window's counts, as rate() would see them
    assert window[float("inf")] == 600
    for q, want in ((0.5, 40.0), (0.9, 200.0), (0.99, 900.0)):
        got = histogram_quantile(q, window)
        assert got == np.clip(got, want * 0.8, want * 1.25), (q, got, want)
    assert len(window) == len(ISTIO_BUCKETS_MS) + 1


def test_resources_become_cadvisor_series_and_unknown_names_are_listed():
    res = pd.DataFrame({"time": [0.0, 60.0, 120.0] * 3, "service": ["cart"] * 9,
                        "metric": ["cpu"] * 3 + ["memory"] * 3 + ["disk_iops"] * 3,
                        "value": [0.5, 0.5, 2.0, 100.0, 110.0, 120.0, 5.0, 5.0, 5.0]})
    rendered = render(None, res, "shop")
    samples = parse(rendered.text)
    cpu = [s for s in samples if s[0] == "container_cpu_usage_seconds_total"]
    assert [s[2] for s in cpu] == [0, 30, 60, 180]  # a rate of 0.5, 0.5, 2.0 cores over 60 s steps
    assert cpu[0][1] == {"namespace": "shop", "container": "cart", "pod": "cart-00000"}
    mem = [s[2] for s in samples if s[0] == "container_memory_working_set_bytes"]
    assert mem == [100.0, 110.0, 120.0]
    assert any("disk_iops" in line for line in rendered.skipped)
