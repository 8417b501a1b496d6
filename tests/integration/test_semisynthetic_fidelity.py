"""The generated network delay against a recorded one: Online Boutique's Chaos Mesh delays on a pod that
itself calls other services grow the gaps of the calls *into* it and leave its own calls out alone. The
``network_delay_in`` kind must show that signature; ``network_delay`` (netem on both directions) grows
both, and the test says so, so a change to either generator that breaks the comparison fails here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SHARED, require

pytestmark = pytest.mark.integration

OB = SHARED / "datasets" / "nezha" / "onlineboutique"


def _gaps(spans) -> dict[tuple[str, str], float]:
    """Median gap (caller span minus callee span, ms) per call edge."""
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    gaps: dict[tuple[str, str], list[float]] = {}
    for s in spans:
        parent = by_id.get((s.trace_id, s.parent_span_id))
        if parent is not None and parent.service != s.service:
            gap = ((parent.end_ns - parent.start_ns) - (s.end_ns - s.start_ns)) / 1e6
            gaps.setdefault((parent.service, s.service), []).append(gap)
    return {e: float(np.median(g)) for e, g in gaps.items() if len(g) >= 3}


def _gap_growth(before, after) -> dict[tuple[str, str], float]:
    """How much each edge's median gap grew from ``before`` to ``after`` (ms)."""
    base, now = _gaps(before), _gaps(after)
    return {e: now[e] - base[e] for e in now.keys() & base.keys()}


def _signature(growth: dict[tuple[str, str], float], service: str) -> tuple[bool, bool, bool]:
    """(every call into it grew, a call out of it grew, an edge not touching it grew), grown = +10 ms."""
    into = [g for (a, b), g in growth.items() if b == service]
    out = [g for (a, b), g in growth.items() if a == service]
    other = [g for (a, b), g in growth.items() if service not in (a, b)]
    assert into and out, f"{service}: no calls into or out of it to compare ({sorted(growth)})"
    return all(g > 10 for g in into), any(g > 10 for g in out), any(g > 10 for g in other)


def test_the_generated_network_delay_on_the_calls_into_a_pod_looks_like_the_recorded_one():
    from baynet.lab.datasets.nezha import list_cases, normal_trace_files, read_spans
    from baynet.lab.datasets.semisynthetic import make_cases

    require(OB.is_dir(), f"the Online Boutique dataset at {OB}")
    normal = [s for f in normal_trace_files(OB) for s in read_spans(f)]
    recorded = {}
    for case in list_cases(OB):
        if case.fault_type != "network_delay" or not case.trace_files or case.truth in recorded:
            continue
        spans = [s for f in case.trace_files for s in read_spans(f)
                 if case.inject_ts * 10**9 <= s.start_ns < (case.inject_ts + 120) * 10**9]
        growth = _gap_growth(normal, spans)  # the normal phase is the recording's baseline
        if any(a == case.truth for a, _ in growth):  # a pod that calls others: both directions to look at
            recorded[case.truth] = _signature(growth, case.truth)
    assert len(recorded) >= 2, f"recorded delays on pods that make calls: {sorted(recorded)}"
    assert set(recorded.values()) == {(True, False, False)}, recorded  # into it only, as the docstring says

    cases = {c.name: c for c in make_cases(normal, 60, services=set(recorded),
                                           kinds=("network_delay", "network_delay_in"))}
    for service in recorded:
        for kind, want in (("network_delay_in", (True, False, False)), ("network_delay", (True, True, False))):
            case = cases[f"{service} {kind} x4"]
            growth = _gap_growth(case.baseline, case.incident)
            assert _signature(growth, service) == want, (service, kind, growth)
