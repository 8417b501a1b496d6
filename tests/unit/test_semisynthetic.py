"""Semi-synthetic incidents: a fault at one service, shown in its traces the way a real one would be."""

from baynet.lab.datasets.semisynthetic import _delay, _fail, _netem, _skip_last_call, make_cases, split_in_time
from baynet.otlp import Span

MS = 1_000_000


def _trace(i: int, start_s: float) -> list[Span]:
    """front (0-100 ms) -> client span (10-60) -> mid (12-58) -> leaf (20-40); front then calls db (70-90)."""
    t, base = f"{i:032x}", int(start_s * 1e9)

    def span(sid: str, parent: str, service: str, a: int, b: int) -> Span:
        return Span(t, sid.rjust(16, "0"), parent.rjust(16, "0") if parent else "", service, f"{service} op",
                    "server", base + a * MS, base + b * MS, "unset")

    return [span("1", "", "front", 0, 100), span("2", "1", "front", 10, 60), span("3", "2", "mid", 12, 58),
            span("4", "3", "leaf", 20, 40), span("5", "1", "db", 70, 90)]


def test_a_delay_lengthens_the_visit_and_its_callers_and_shifts_what_came_after():
    trace = _trace(1, 0)
    front, client, mid, leaf, db = trace
    _delay(trace, mid, 30 * MS)
    assert mid.end_ns - mid.start_ns == 76 * MS and client.end_ns - client.start_ns == 80 * MS
    assert front.end_ns - front.start_ns == 130 * MS
    assert leaf.end_ns - leaf.start_ns == 20 * MS  # inside the slow visit: unchanged
    assert db.start_ns == 100 * MS  # after the slow call returned


def test_a_network_delay_grows_every_gap_that_touches_the_service_and_no_other():
    trace = _trace(1, 0)
    front, client, mid, leaf, db = trace
    _netem(trace, "mid", 5 * MS)  # client -> mid and mid -> leaf each take 5 ms longer each way
    assert (mid.start_ns, leaf.start_ns) == (17 * MS, 30 * MS)  # requests arrive later
    assert leaf.end_ns - leaf.start_ns == 20 * MS  # a callee's own work is unchanged
    assert mid.end_ns - mid.start_ns == 56 * MS  # mid waits 2 x 5 ms more for leaf
    assert client.end_ns - client.start_ns == 70 * MS and front.end_ns - front.start_ns == 120 * MS
    assert db.end_ns - db.start_ns == 20 * MS and db.start_ns == 90 * MS  # untouched edge: shifted, not grown
    gap = lambda caller, callee: (caller.end_ns - caller.start_ns) - (callee.end_ns - callee.start_ns)  # noqa: E731
    assert gap(client, mid) == 14 * MS and gap(mid, leaf) == 36 * MS  # 4 and 26 before: + 2 x 5 ms each
    assert gap(front, db) == 100 * MS  # 80 before: it contains the delayed calls, as a trace's root does


def test_a_network_delay_on_the_calls_into_a_service_leaves_its_own_calls_out_alone():
    trace = _trace(1, 0)
    front, client, mid, leaf, db = trace
    _netem(trace, "mid", 5 * MS, outgoing=False)  # as recorded: only client -> mid takes longer
    gap = lambda caller, callee: (caller.end_ns - caller.start_ns) - (callee.end_ns - callee.start_ns)  # noqa: E731
    assert gap(client, mid) == 14 * MS and gap(mid, leaf) == 26 * MS  # 4 before: + 2 x 5 ms; 26 unchanged
    assert (mid.end_ns - mid.start_ns, leaf.end_ns - leaf.start_ns) == (46 * MS, 20 * MS)  # their own work
    assert front.end_ns - front.start_ns == 110 * MS and db.start_ns == 80 * MS


def test_errors_travel_up_to_the_root_and_a_skipped_call_takes_its_subtree():
    trace = _trace(1, 0)
    _fail(trace, trace[3])
    assert [s.failed for s in trace] == [True, True, True, True, False]
    trace = _trace(2, 0)
    kept = _skip_last_call(trace, trace[0])  # front's last call: to db
    assert [s.service for s in kept] == ["front", "front", "mid", "leaf"]
    assert kept[0].end_ns - kept[0].start_ns == 80 * MS


def test_cases_cover_each_service_kind_and_size_with_a_baseline_before_the_incident():
    normal = [s for i in range(60) for s in _trace(i, 1000 + i * 3)]  # three minutes, one trace every 3 s
    baseline, incident, begin, length = split_in_time(normal, 60)
    roots = lambda spans: [s.start_ns / 1e9 for s in spans if not s.parent_span_id]  # noqa: E731
    assert length == 60 and max(roots(baseline)) < begin <= min(roots(incident))
    assert max(roots(incident)) - begin < length
    cases = make_cases(normal, 60)
    kinds = {(c.truth, c.fault_type) for c in cases}
    assert ("mid", "synthetic_delay") in kinds and ("leaf", "synthetic_errors") in kinds
    assert ("front", "synthetic_missing_calls") in kinds and ("leaf", "synthetic_missing_calls") not in kinds
    assert ("leaf", "synthetic_network_delay") in kinds and ("mid", "synthetic_network_delay_in") in kinds
    assert ("front", "synthetic_network_delay_in") not in kinds  # nothing calls it
    # 4 services x (delay, errors, network delay) x 3 sizes; 2 callers x missing calls; 3 callees x delay in
    assert len(cases) == 4 * 3 * 3 + 2 * 3 + 3 * 3
    delayed = next(c for c in cases if c.name == "mid delay x4")
    assert sum(s.end_ns - s.start_ns for s in delayed.incident) > sum(s.end_ns - s.start_ns for s in incident)
    assert delayed.baseline is cases[0].baseline  # shared, never changed
    assert sum(s.end_ns - s.start_ns for s in baseline) == sum(s.end_ns - s.start_ns for s in delayed.baseline)
