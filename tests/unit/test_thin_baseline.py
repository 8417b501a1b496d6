"""A trace baseline that covers less than one slice (the data begin late: retention, a fresh deployment, a
tracing outage, an alert that came early) runs on into the gap before the first slice, where the gap holds
spans; a baseline that covers a slice or more keeps its gap out (a slow onset must not become the norm)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.evidence import traces
from baynet.evidence.traces import build_evidence
from baynet.settings import Settings
from baynet.sources.base import Observations, Observed
from baynet.windows import Windows, baseline_into_gap, thin_baseline

T = 1_700_000_000.0
SETTINGS = Settings(_env_file=None)
WINDOWS = Windows.around(T, SETTINGS)  # slices [T-180, T); gap [T-300, T-180); baseline [T-900, T-300)


def _spans(starts: np.ndarray, cart_ms) -> pd.DataFrame:
    """A front span calling cart at each start; cart takes ``cart_ms(t)`` milliseconds."""
    rows = []
    for i, t in enumerate(starts):
        ms = cart_ms(t)
        rows.append((f"t{i}", f"a{i}", "", "front", "GET /", int(t * 1e9), int(t * 1e9) + int((ms + 2) * 1e6), False))
        rows.append((f"t{i}", f"b{i}", f"a{i}", "cart", "GET /cart", int(t * 1e9) + 1000,
                     int(t * 1e9) + 1000 + int(ms * 1e6), False))
    return pd.DataFrame(rows, columns=["trace_id", "span_id", "parent_span_id", "service", "name", "start_ns",
                                       "end_ns", "failed"])


def _cart_ms(warm_until: float):
    """cart answers in ~10 ms, but 5x slower while it warms up (until ``warm_until``)."""
    rng = np.random.default_rng(5)
    return lambda t: 10.0 * float(rng.lognormal(0, 0.05)) * (5.0 if t < warm_until else 1.0)


def test_the_rule_on_start_times():
    base, slices = WINDOWS.baseline, WINDOWS.slices
    assert WINDOWS.gap == (T - 300, T - 180)
    late = np.array([T - 302.0, T - 301.0, T - 250.0, T - 100.0])  # two seconds of baseline, then the gap
    assert thin_baseline(late, base, slices)
    assert baseline_into_gap(late, base, slices) == (base[0], slices[0][0])
    whole = np.array([T - 800.0, T - 400.0, T - 250.0, T - 100.0])  # 400 s of baseline
    assert not thin_baseline(whole, base, slices) and baseline_into_gap(whole, base, slices) is None
    nothing_in_gap = np.array([T - 302.0, T - 100.0])
    assert thin_baseline(nothing_in_gap, base, slices) and baseline_into_gap(nothing_in_gap, base, slices) is None


def test_a_baseline_of_a_few_seconds_of_warm_up_is_not_the_norm_a_normal_incident_is_judged_by():
    """The traces begin 3 s before the baseline's end, while cart warms up (5x slower): judged against
    those 3 s, cart's normal answers would read as far faster than usual and the rest as nothing; with the
    gap's two minutes in the baseline the incident slices, as normal as the gap, read normal."""
    starts = np.arange(T - 303.0, T, 0.5)
    spans = _spans(starts, _cart_ms(warm_until=T - 300))
    ev, _ = build_evidence(spans, WINDOWS.baseline, WINDOWS.slices)
    assert ev.attrs["baseline"] == (WINDOWS.baseline[0], WINDOWS.slices[0][0])
    cart = ev[(ev["service"] == "cart") & (ev["window"] >= 0)]
    assert (cart["state"] == 0).all() and (cart["fast_frac"] < 0.05).all(), cart
    # against the three seconds alone (what the evidence did before), the normal answers read as a change
    thin, _ = build_evidence(spans[spans["start_ns"] / 1e9 < WINDOWS.baseline[1]].pipe(
        lambda b: pd.concat([b, spans[spans["start_ns"] / 1e9 >= WINDOWS.slices[0][0]]])),
        WINDOWS.baseline, WINDOWS.slices)
    assert thin.attrs["baseline"] == WINDOWS.baseline
    assert (thin[(thin["service"] == "cart") & (thin["window"] >= 0)]["fast_frac"] > 0.9).all()
    # the analysis says so
    observations = Observations([Observed("traces", {"spans": spans}, {})])
    judged = traces.judge(observations, WINDOWS, SETTINGS)
    assert any("baseline runs on to the first slice (720 s, from 600 s)" in n for n in judged.notes), judged.notes


def test_a_baseline_that_covers_a_slice_keeps_the_gap_out():
    """Ten minutes of baseline, and a slow onset in the gap: the baseline is the ten minutes, so cart's
    slow slices read slow."""
    starts = np.arange(T - 900.0, T, 0.5)
    spans = _spans(starts, lambda t: 10.0 * (1.0 if t < T - 300 else 6.0))
    ev, _ = build_evidence(spans, WINDOWS.baseline, WINDOWS.slices)
    assert ev.attrs["baseline"] == WINDOWS.baseline
    cart = ev[(ev["service"] == "cart") & (ev["window"] >= 0)]
    assert (cart["state"] >= 1).all(), cart
