"""Traces that hold no span of the incident window (Tempo has not ingested them yet, or a bundle kept only other
minutes) say nothing of the incident: the metrics still judge every slice, and the analysis says so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.analysis import analyse
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.settings import Settings
from baynet.sources.base import Observations, Observed

T = 1_700_000_000.0


def _signals(slow_from: float) -> pd.DataFrame:
    """front -> cart and front -> pay every 15 s for 20 minutes; cart answers 8x slower from ``slow_from``."""
    rng = np.random.default_rng(3)
    rows = []
    for t in np.arange(T - 1200, T + 1, 15.0):
        for dst in ("cart", "pay"):
            ms = 10.0 * float(rng.lognormal(0, 0.05)) * (8.0 if dst == "cart" and t > slow_from else 1.0)
            rows.append((t, "front", dst, 15.0, 30.0, 0.0, ms, ms, "v1", "destination"))
    return pd.DataFrame(rows, columns=["time", "source", "destination", "window_s", "requests", "error_ratio",
                                       "latency_ms_avg", "latency_ms_p50", "destination_version", "reporter"])


def _spans(starts: list[float]) -> pd.DataFrame:
    """A front span calling cart and pay at each start."""
    rows = []
    for i, t in enumerate(starts):
        for j, (svc, parent) in enumerate((("front", ""), ("cart", f"s{i}-0"), ("pay", f"s{i}-0"))):
            rows.append((f"t{i}", f"s{i}-{j}", parent, svc, "GET /", int(t * 1e9) + j * 1000,
                         int(t * 1e9) + (9_000_000 if j == 0 else 3_000_000), False))
    return pd.DataFrame(rows, columns=["trace_id", "span_id", "parent_span_id", "service", "name", "start_ns",
                                       "end_ns", "failed"])


def _analyse(spans: pd.DataFrame):
    (event,) = parse_object({"id": "e", "service": "front", "event_type": "latency", "timestamp": T,
                             "severity": "critical"})
    obs = Observations([Observed("traces", {"spans": spans}), Observed("metrics", {"signals": _signals(T - 170)})])
    return analyse(event, obs, DBNModel(), Settings(_env_file=None))


def test_traces_of_the_baseline_only_leave_the_metrics_to_judge_every_slice() -> None:
    result = _analyse(_spans(list(np.arange(T - 700, T - 400, 2.0))))
    assert result.ranking and result.ranking[0]["service"] == "cart"
    incident = result.evidence[result.evidence["window"] >= 0]
    assert sorted(incident["window"].unique()) == [0, 1, 2]
    assert set(incident["sources"]) == {"metrics"}
    assert any("no span in the incident window" in n for n in result.notes)


def test_traces_in_one_slice_still_set_the_slices_every_source_judges() -> None:
    spans = _spans(list(np.arange(T - 700, T - 400, 2.0)) + list(np.arange(T - 50, T - 10, 2.0)))
    result = _analyse(spans)
    assert sorted(result.evidence.loc[result.evidence["window"] >= 0, "window"].unique()) == [0]
    assert not any("no span in the incident window" in n for n in result.notes)
