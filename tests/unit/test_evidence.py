import orjson
import pandas as pd
import pytest

from baynet.windows import Windows
from baynet.evidence import BAND_COLUMNS, EVIDENCE_COLUMNS, build_evidence, spans_frame
from baynet.otlp import Span
from baynet.settings import Settings


def test_self_time_and_entry_spans_by_hand():
    t = "1" * 32
    spans = [
        Span(t, "a" * 16, "", "front", "GET /", "server", 0, 100_000_000, "unset"),
        Span(t, "b" * 16, "a" * 16, "front", "call db", "client", 10_000_000, 70_000_000, "unset"),
        Span(t, "c" * 16, "b" * 16, "db", "query", "server", 20_000_000, 60_000_000, "error", 500),
    ]
    df = spans_frame(spans)
    ev, edges = build_evidence(df, baseline=(0, 0.05), slices=[(0, 1)])
    front = ev[(ev.service == "front") & (ev.window == 0)].iloc[0]
    db = ev[(ev.service == "db") & (ev.window == 0)].iloc[0]
    assert front.requests == 1 and db.requests == 1 and db.errors == 1  # client span is not an entry
    # front's own work: 100 ms minus the 60 ms call. Its client span's 20 ms outside db's server span is
    # network time, judged per edge, not as front's own work.
    assert front.self_p95_ms == pytest.approx(40.0)
    assert db.self_p95_ms == pytest.approx(40.0)
    assert list(ev.columns) == EVIDENCE_COLUMNS + BAND_COLUMNS
    (edge,) = edges.itertuples()
    assert (edge.caller, edge.callee, edge.calls, edge.child_bad) == ("front", "db", 1, 1)


def test_injected_latency_shows_in_evidence(incident):
    w = Windows.around(incident.event["timestamp"], Settings())
    ev, edges = build_evidence(incident.spans, w.baseline, w.slices)
    inc = ev[ev.window >= 0]
    carts = inc[inc.service == "carts"]
    assert (carts.state == 2).all() and (carts.own_state == 2).all()
    assert carts.self_slow_frac.min() >= 0.5  # every server span; its calls to carts-db are not slower
    base_p95 = ev[(ev.window == -1) & (ev.service == "carts")].p95_ms.iloc[0]
    assert carts.p95_ms.min() > 3 * base_p95
    calm = inc[inc.service.isin(["catalogue", "payment", "user-db"])]
    assert (calm.state == 0).all() and (calm.own_state == 0).all()
    front_carts = edges[(edges.caller == "front-end") & (edges.callee == "carts")].iloc[0]
    assert front_carts.both_bad / front_carts.child_bad > 0.5


def test_no_baseline_falls_back_to_first_slice(incident):
    w = Windows.around(incident.event["timestamp"], Settings())
    ev, _ = build_evidence(incident.spans, (0, 1), w.slices)
    assert set(ev.window) == {-1, 0, 1, 2} and ev.state.isin([0, 1, 2]).all()


def test_empty_input():
    ev, edges = build_evidence([], (0, 1), [(1, 2)])
    assert ev.empty and edges.empty and list(ev.columns) == EVIDENCE_COLUMNS + BAND_COLUMNS


def test_columnar_frame_gives_the_same_evidence(incident):
    from baynet.otlp import IdTable, frame_from_columns, new_columns, render_resource_spans, trace_columns

    w = Windows.around(incident.event["timestamp"], Settings())
    by_trace = {}
    for s in incident.spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    cols, ids = new_columns(), IdTable()
    for group in by_trace.values():
        trace_columns({"batches": render_resource_spans(group)}, cols, ids)
    coded = frame_from_columns(cols)
    plain = coded.drop(columns=["trace_code", "span_code", "parent_code"])
    a, ea = build_evidence(coded, w.baseline, w.slices)
    b, eb = build_evidence(plain, w.baseline, w.slices)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(ea, eb)
    # the hot path the client uses: bodies -> SpanBatch (categorical ids, codes) -> the same evidence
    from baynet.otlp_fast import SpanBatch

    batch = SpanBatch()
    for group in by_trace.values():
        batch.add(orjson.dumps({"batches": render_resource_spans(group)}))
    c, ec = build_evidence(batch.frame(), w.baseline, w.slices)
    pd.testing.assert_frame_equal(a, c)
    pd.testing.assert_frame_equal(ea, ec)


def test_the_baseline_band_is_the_range_over_slice_long_pieces_of_the_baseline():
    import time

    import numpy as np

    from baynet.lab.generator import generate

    inc = generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900, rate_per_s=2.0)
    windows = Windows.around(inc.event["timestamp"], Settings(_env_file=None))
    ev, _ = build_evidence(spans_frame(inc.spans), windows.baseline, windows.slices)
    piece = windows.slices[0][1] - windows.slices[0][0]
    entry = [s for s in inc.spans if s.service == "carts" and s.kind == "server"
             and windows.baseline[0] <= s.start_ns / 1e9 < windows.baseline[1]]
    t0 = max(windows.baseline[0], min(s.start_ns for s in inc.spans
                                      if windows.baseline[0] <= s.start_ns / 1e9 < windows.baseline[1]) / 1e9)
    by_piece: dict[int, list[float]] = {}
    for s in entry:
        by_piece.setdefault(int((s.start_ns / 1e9 - t0) // piece), []).append((s.end_ns - s.start_ns) / 1e6)
    last = max(by_piece)  # the last piece is cut short by the baseline's end or the data's: not counted
    p95 = [float(np.quantile(v, 0.95)) for k, v in by_piece.items() if k < last and len(v) >= 5]
    carts = ev[ev.service == "carts"]
    assert carts["p95_ms_lo"].nunique() == 1  # one band per service, on every row
    row = carts.iloc[0]
    assert row.p95_ms_lo == pytest.approx(min(p95)) and row.p95_ms_hi == pytest.approx(max(p95))
    assert row.p95_ms_lo <= carts.loc[carts.window == -1, "p95_ms"].iloc[0] <= row.p95_ms_hi
    assert row.rate_ratio_lo < 1 < row.rate_ratio_hi and row.error_ratio_hi == 0.0
    # the injected latency puts the last slice far above the band
    assert carts.loc[carts.window == carts.window.max(), "p95_ms"].iloc[0] > 2 * row.p95_ms_hi


def _calls(i: int, start_s: float, jitter_ms: list[int]) -> list[Span]:
    """front -> mid -> leaf and front -> db (each call a client span), a few ms of jitter on each call's network."""
    t, base, ms = f"{i:032x}", int(start_s * 1e9), 1_000_000
    j1, j2, j3 = jitter_ms

    def span(sid: str, parent: str, service: str, a: int, b: int) -> Span:
        return Span(t, sid.rjust(16, "0"), parent.rjust(16, "0") if parent else "", service, f"{service} op",
                    "server", base + a * ms, base + b * ms, "unset")

    return [span("1", "", "front", 0, 100 + j1 + j2), span("2", "1", "front", 10, 60 + j1 + j2),
            span("3", "2", "mid", 12, 58 + j2), span("4", "3", "leaf", 20, 40), span("5", "1", "front", 68, 92 + j3),
            span("6", "5", "db", 70, 90)]


@pytest.mark.parametrize("delayed", [False, True])
def test_a_network_delay_at_low_traffic_is_found_by_pooling_the_calls_of_every_edge_it_touches(delayed):
    from baynet.lab.datasets.semisynthetic import _netem

    rng = __import__("random").Random(7)
    jitter = lambda: [rng.randint(0, 3) for _ in range(3)]  # noqa: E731
    baseline = [s for i in range(8) for s in _calls(i, 5 + i * 6, jitter())]  # 8 calls per edge in 60 s
    incident = []
    for i in range(4):  # 4 calls per edge in the slice: fewer than min_calls, too few to judge one edge alone
        trace = _calls(100 + i, 65 + i * 12, jitter())
        if delayed:
            _netem(trace, "mid", 20 * 1_000_000)
        incident += trace
    ev, _ = build_evidence(baseline + incident, baseline=(0, 60), slices=[(60, 120)])
    inc = ev[ev.window == 0].set_index("service")
    if delayed:
        assert inc.loc["mid", "gap_edges"] == 2 and inc.loc["mid", "own_state"] >= 1  # both its edges, pooled
        assert inc.loc[["front", "leaf", "db"], "gap_edges"].eq(0).all()  # each touches one grown edge at most
    else:
        assert inc["gap_edges"].eq(0).all() and inc["own_state"].le(0).all()


def test_a_grown_gap_is_blamed_on_the_endpoint_whose_edges_all_grew_and_the_order_of_the_keys_matters():
    from baynet.evidence.network import blame

    # b's every edge grew (share 1.0, 2 edges); a is busy (4 edges, 1 grown); c is a leaf behind b.
    grown = [("a", "b"), ("b", "c")]
    share = {"a": 0.25, "b": 1.0, "c": 1.0}
    assert blame(grown, share) == {"b": [("a", "b"), ("b", "c")]}
    # Count first: a starved caller with three grown edges out of four takes them all, against a callee
    # whose single edge grew (share 1.0) -- the opposite of share first.
    starved = [("fe", "x"), ("fe", "y"), ("fe", "z")]
    share = {"fe": 0.75, "x": 1.0, "y": 1.0, "z": 1.0}
    assert blame(starved, share, first="count") == {"fe": starved}
    assert blame(starved, share) == {"x": [("fe", "x")], "y": [("fe", "y")], "z": [("fe", "z")]}
    # A full tie goes to the callee; an endpoint missing from the shares counts as 0.
    assert blame([("p", "q")], {"p": 1.0, "q": 1.0}) == {"q": [("p", "q")]}
    assert blame([("p", "q")], {"p": 0.5}) == {"p": [("p", "q")]}
    with pytest.raises(ValueError, match="'most'"):
        blame(grown, share, first="most")


def _requests(t0: int, seconds: int, callees: dict[str, int]) -> list[Span]:
    """One front-end request a second; every ``n``-th calls ``callee`` (``callees``: callee -> n)."""
    spans = []
    for i in range(seconds):
        t, start = f"{t0 + i:032x}", (t0 + i) * 1_000_000_000
        spans.append(Span(t, f"{1:016x}", "", "front", "GET /", "server", start, start + 50_000_000, "unset"))
        for k, (callee, every) in enumerate(callees.items()):
            if i % every == 0:
                client, server = f"{2 + 2 * k:016x}", f"{3 + 2 * k:016x}"
                spans.append(Span(t, client, f"{1:016x}", "front", f"call {callee}", "client", start + 1_000_000,
                                  start + 21_000_000, "unset"))
                spans.append(Span(t, server, client, callee, "handle", "server", start + 2_000_000,
                                  start + 20_000_000, "unset"))
    return spans


def test_a_rate_drop_counts_only_where_chance_cannot_explain_it():
    """Silence of a service called twice a minute is what a quiet minute looks like; silence of one called
    every second is an outage."""
    t0 = 1_700_000_000
    spans = _requests(t0, 600, {"busy": 1, "rare": 30}) + _requests(t0 + 600, 60, {"other": 1})
    ev, _ = build_evidence(spans, baseline=(t0, t0 + 600), slices=[(t0 + 600, t0 + 660)])
    inc = ev[ev.window == 0].set_index("service")
    assert inc.loc["busy", "requests"] == 0 and inc.loc["busy", "rate_ratio"] == 0 and inc.loc["busy", "state"] == 2
    assert inc.loc["rare", "requests"] == 0 and inc.loc["rare", "rate_ratio"] == 1.0
    assert inc.loc["rare", "state"] == 0
    # a sample that read one in five traces: the busy service's drop to half rests on 6 requests read
    base = spans_frame(_requests(t0, 600, {"busy": 1}))
    half = spans_frame(_requests(t0 + 600, 60, {"busy": 2}))
    sample = pd.concat([base, half], ignore_index=True)
    sample = sample[sample["trace_id"].map(lambda t: int(t, 16) % 5 == 0)].assign(w=5.0)
    ev, _ = build_evidence(sample.reset_index(drop=True), baseline=(t0, t0 + 600), slices=[(t0 + 600, t0 + 660)])
    busy = ev[(ev.window == 0) & (ev.service == "busy")].iloc[0]
    assert busy.requests == pytest.approx(30.0) and busy.rate_ratio == 1.0  # z = (6 - 12) / sqrt(12) = -1.7


def test_a_samples_call_gaps_are_weighed_by_its_traces_weights():
    """A stratum the sample over-reads (a rare service's top-up, the error search) must not set an edge's
    median gap: twenty calls of weight 1 whose gap grew beside six of weight 10 whose gap did not."""
    t0 = 1_700_000_000

    def call(i: int, at: float, gap_ms: int, w: float) -> list[tuple[Span, float]]:
        t, start = f"{i + 1:032x}", int(at * 1e9)
        return [(Span(t, f"{1:016x}", "", "front", "GET /", "server", start, start + 100_000_000, "unset"), w),
                (Span(t, f"{2:016x}", f"{1:016x}", "front", "call mid", "client", start + 1_000_000,
                      start + 21_000_000 + gap_ms * 1_000_000, "unset"), w),
                (Span(t, f"{3:016x}", f"{2:016x}", "mid", "handle", "server", start + 2_000_000, start + 20_000_000,
                      "unset"), w)]

    rows = [r for i in range(20) for r in call(i, t0 + i * 3, 0, 1.0)]
    rows += [r for i in range(20) for r in call(100 + i, t0 + 61 + i * 2.5, 40, 1.0)]
    rows += [r for i in range(6) for r in call(200 + i, t0 + 63 + i * 9, 0, 10.0)]
    frame = spans_frame([s for s, _ in rows]).assign(w=[w for _, w in rows])
    slices = [(t0 + 60, t0 + 120)]
    weighed, _ = build_evidence(frame, baseline=(t0, t0 + 60), slices=slices)
    as_read, _ = build_evidence(frame.assign(w=1.0), baseline=(t0, t0 + 60), slices=slices)
    mid = lambda ev: ev[(ev.window == 0) & (ev.service == "mid")].iloc[0]  # noqa: E731
    assert mid(as_read).net_frac == 1.0  # read as they come, the grown gaps are the median
    assert mid(weighed).net_frac == 0.0 and mid(weighed).gap_edges == 0


def _gap_traces(t0: float, plan: list[tuple[int, int]]) -> pd.DataFrame:
    """Traces of ``front`` calling ``mid``: per trace (number of calls, gap past the usual in ms), each call a
    client span around the callee's server span (the gap is the client's time outside it)."""
    spans, k = [], 0
    for i, (calls, extra_ms) in enumerate(plan):
        t, start = f"{i + 1:032x}", int((t0 + i * 0.5) * 1e9)
        spans.append(Span(t, f"{1:016x}", "", "front", "GET /", "server", start, start + 400_000_000, "unset"))
        for c in range(calls):
            k += 1
            at = start + 1_000_000 + c * 30_000_000
            spans += [Span(t, f"{10 + 2 * c:016x}", f"{1:016x}", "front", "call mid", "client", at,
                           at + 20_000_000 + extra_ms * 1_000_000, "unset"),
                      Span(t, f"{11 + 2 * c:016x}", f"{10 + 2 * c:016x}", "mid", "handle", "server", at + 1_000_000,
                           at + 19_000_000, "unset")]
    return spans_frame(spans)


def test_a_samples_gap_grown_in_a_few_traces_calls_is_not_the_edges():
    """Calls of one trace move together: in a sample (each trace standing for four), four traces of ten calls
    each whose gap grew make most calls read, but of twelve traces only four -- not a grown edge; the same
    delay in every trace read is one. Every trace read, the median of all calls is the edge's."""
    t0 = 1_700_000_000
    base = _gap_traces(t0, [(1, 0)] * 40)
    few = _gap_traces(t0 + 60, [(10, 40)] * 4 + [(1, 0)] * 8)
    every = _gap_traces(t0 + 60, [(10, 40)] * 4 + [(1, 40)] * 8)
    mid = lambda ev: ev[(ev.window == 0) & (ev.service == "mid")].iloc[0]  # noqa: E731
    for inc, w, grown in ((few, 4.0, False), (every, 4.0, True), (few, 1.0, True)):
        frame = pd.concat([base, inc.assign(trace_id="f" + inc["trace_id"].str[1:])], ignore_index=True)
        ev, _ = build_evidence(frame.assign(w=w), baseline=(t0, t0 + 60), slices=[(t0 + 60, t0 + 120)])
        assert bool(mid(ev).net_frac == 1.0) is grown


def test_a_mode_of_trivial_answers_the_baseline_has_is_not_an_early_return():
    """An operation that answers some requests trivially (0.2 ms beside ~100 ms) has those answers beyond
    its mean - 3 sd every day: they are not "far shorter than usual" when their share grows (one in sixteen
    in the baseline, one in eight in the slice: a sample reading more of them, or more such requests).
    Answers shorter than any the baseline holds (an early return) still are."""
    import numpy as np

    t0, rng = 1_700_000_000, np.random.default_rng(7)

    def spans(start: float, n: int, every: int, trivial_ms: float, first: int) -> list[Span]:
        out = []
        for i in range(n):
            ms = trivial_ms if i % every == 0 else float(np.exp(rng.normal(np.log(100.0), 0.3)))
            at = int((start + i * 0.5) * 1e9)
            out.append(Span(f"{first + i:032x}", f"{1:016x}", "", "front", "GET /", "server", at,
                            at + int(ms * 1e6), "unset"))
        return out

    base = spans(t0, 112, 16, 0.2, 1)
    for trivial_ms, fast in ((0.2, False), (0.01, True)):
        frame = spans_frame(base + spans(t0 + 60, 112, 8, trivial_ms, 1000))
        ev, _ = build_evidence(frame, baseline=(t0, t0 + 60), slices=[(t0 + 60, t0 + 120)])
        row = ev[(ev.window == 0) & (ev.service == "front")].iloc[0]
        assert bool(row.fast_frac >= 0.1 and row.own_state >= 1) is fast, (trivial_ms, row.fast_frac)
