"""The metric baseline holds points of the data's own step: 5-minute data are judged against ten of them, not
against the one or none a 600 s baseline holds once the slices widen to whole steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.evidence.metrics import MetricThresholds, aligned_metric_evidence, build_metric_evidence
from baynet.evidence.steps import baseline_for_step, read_from, slices_for_step
from baynet.settings import Settings
from baynet.windows import Windows

T = 1_700_000_000.0


def _signals(step: float, since: float) -> pd.DataFrame:
    """Calls to cart and pay every ``step`` seconds from ``since``; cart's latency x4 in the last step."""
    rng = np.random.default_rng(5)
    rows = []
    for t in np.arange(T - since, T + 1, step):
        for dst in ("cart", "pay"):
            ms = 20.0 * float(rng.lognormal(0, 0.05)) * (4.0 if dst == "cart" and t > T - step else 1.0)
            rows.append((t, "front", dst, step, 600.0, 0.0, ms, "destination"))
    return pd.DataFrame(rows, columns=["time", "source", "destination", "window_s", "requests", "error_ratio",
                                       "latency_ms_p50", "reporter"])


def test_the_baseline_reaches_back_ten_steps_of_coarse_data_and_keeps_fine_data_as_configured() -> None:
    w = Windows.around(T, Settings(_env_file=None))           # baseline (T-900, T-300), slices of 60 s
    assert baseline_for_step(w.baseline, w.slices[0][0], 15.0) == w.baseline
    assert baseline_for_step(w.baseline, w.slices[0][0], 60.0) == w.baseline
    assert baseline_for_step(w.baseline, T - 900, 300.0) == (T - 900 - 3000, T - 900)
    assert baseline_for_step(w.baseline, T - 900, 300.0, points=4) == (T - 2100, T - 900)


def test_five_minute_data_find_the_slow_service_that_the_configured_baseline_left_unjudged() -> None:
    w = Windows.around(T, Settings(_env_file=None))
    ev, notes = aligned_metric_evidence(_signals(300.0, 7200.0), None, w.baseline, w.slices)
    cart = ev[(ev["service"] == "cart") & (ev["window"] >= 0)]
    pay = ev[(ev["service"] == "pay") & (ev["window"] >= 0)]
    assert cart["latency_z"].max() >= MetricThresholds().z_severe and cart["state"].max() == 2
    assert pay["state"].max() == 0
    assert any("metric baseline 3000 s" in n for n in notes)
    # the configured 600 s baseline alone (what the analysis judged against before): nothing to judge with
    wide, _ = slices_for_step(_signals(300.0, 7200.0), None, w.slices)
    before = build_metric_evidence(_signals(300.0, 7200.0), None, (w.baseline[0], min(w.baseline[1], wide[0][0])),
                                   wide)
    assert before.loc[before["window"] >= 0, "latency_z"].abs().max() == 0.0


def test_data_that_do_not_reach_back_are_named_as_unjudged_not_read_as_healthy() -> None:
    w = Windows.around(T, Settings(_env_file=None))
    _, notes = aligned_metric_evidence(_signals(300.0, 1000.0), None, w.baseline, w.slices)
    assert any(n.startswith("metric baseline too short to judge") and "cart" in n and "pay" in n for n in notes)


def test_a_reader_at_a_coarse_step_begins_early_enough_for_that_baseline() -> None:
    w = Windows.around(T, Settings(_env_file=None))
    assert read_from(w.baseline, w.slices, 15.0) == w.baseline[0] == read_from(w.baseline, w.slices, 60.0)
    start = read_from(w.baseline, w.slices, 300.0)
    wide, _ = slices_for_step(_signals(300.0, 7200.0), None, w.slices)
    assert start == baseline_for_step(w.baseline, wide[0][0], 300.0)[0] == T - 900 - 3000
