"""Semi-synthetic incidents made from a mesh's own normal traces, many more than the public faults give.

The normal traces are split in time: the later half's last whole analysis windows are the incident, what
comes before is the baseline. In the incident one service gets a fault, applied the way a real one would show in its traces:

* ``delay`` -- each affected visit of the service works ``size`` times its usual entry latency longer:
  its entry span and every ancestor span end later, and whatever the trace did after it starts later;
* ``errors`` -- affected visits fail (error status) and the failure travels up the caller chain to the
  trace's root, as an HTTP 500 does;
* ``missing_calls`` -- affected visits skip their last call to another service (an early return or an
  exception): that call's subtree is gone, and the visit and its ancestors end that much sooner;
* ``network_delay`` -- a delay on the service's network (``tc netem``, a Chaos Mesh NetworkChaos): every
  call into and out of it takes ``d`` longer each way. The callee's server span (and its subtree) starts
  ``d`` later, the caller's span that made the call ends ``2d`` later, and so do the caller's ancestors;
  what the trace did after the call starts ``2d`` later. A callee's own work keeps its duration: the
  signature is a grown gap between caller and callee on every edge that touches the service, both ways;
* ``network_delay_in`` -- the same on the calls *into* the service only, the signature the Online Boutique
  recordings show (Chaos Mesh network delays, both days): the gaps of the pod's callers grow by the whole
  delay (cartservice +214 ms on both of its edges, checkoutservice +229 ms from frontend) while its own
  calls out keep theirs (checkoutservice's five: -1.5 to +1.5 ms; recommendationservice's one: +0.65 ms),
  and its server spans keep their durations (x0.83 to x1.06). ``network_delay`` is what ``tc netem`` on
  both directions of a pod's interface would give; which one a mesh's tooling makes is its own business,
  so the rule is measured on both.

``size`` is the share of the service's visits affected for ``errors`` and ``missing_calls``, the delay in
multiples of the service's median entry latency for ``delay``, and ``d`` in multiples of the median
latency of the calls on the service's edges (the caller's side) for ``network_delay``. Each case records
its truth; only the scorer reads it.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from baynet.otlp import Span

KINDS = ("delay", "errors", "missing_calls", "network_delay", "network_delay_in")
SIZES = {"delay": (0.5, 1.0, 4.0), "errors": (0.1, 0.3, 1.0), "missing_calls": (0.25, 0.5, 1.0),
         "network_delay": (1.0, 2.0, 4.0), "network_delay_in": (1.0, 2.0, 4.0)}
MIN_VISITS = 3  # a service visited fewer times in the incident half cannot show a fault


@dataclass
class SyntheticCase:
    name: str
    fault_type: str
    truth: str
    baseline: list[Span] = field(repr=False)   # shared by the cases of one mesh: do not change it
    incident: list[Span] = field(repr=False)
    incident_start: float = 0.0                # unix seconds
    incident_s: float = 0.0                    # a whole number of analysis windows


def _by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        out[s.trace_id].append(s)
    return out


def split_in_time(spans: list[Span], window_s: float) -> tuple[list[Span], list[Span], float, float]:
    """Whole traces by their first span: the baseline (earlier) and the incident (the last whole analysis
    windows of the later half, so that no slice holds only a ragged end). Returns both, the incident's
    start (unix seconds) and its length (a whole number of ``window_s``, or half the data where that is less
    than one window)."""
    starts = {tid: min(s.start_ns for s in t) / 1e9 for tid, t in _by_trace(spans).items()}
    lo, hi = min(starts.values()), max(starts.values())
    half = (hi - lo) / 2
    length = window_s * (half // window_s) if half >= window_s else half  # less than a window: half the data
    begin = hi - length + 1e-3  # the last trace starts just inside the incident's end
    return ([s for s in spans if starts[s.trace_id] < begin], [s for s in spans if starts[s.trace_id] >= begin],
            begin, length)


def _visits(trace: list[Span], service: str) -> list[Span]:
    """The entry spans of ``service`` in a trace: its spans whose parent is another service's (or none)."""
    by_id = {s.span_id: s for s in trace}
    return [s for s in trace if s.service == service
            and (s.parent_span_id not in by_id or by_id[s.parent_span_id].service != service)]


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    out, seen = [], set()
    while span.parent_span_id in by_id and span.parent_span_id not in seen:
        seen.add(span.parent_span_id)
        span = by_id[span.parent_span_id]
        out.append(span)
    return out


def _descendants(span: Span, trace: list[Span]) -> set[str]:
    children: dict[str, list[str]] = defaultdict(list)
    for s in trace:
        children[s.parent_span_id].append(s.span_id)
    out, stack = set(), [span.span_id]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def _delay(trace: list[Span], visit: Span, delay_ns: int) -> None:
    by_id = {s.span_id: s for s in trace}
    ended = visit.end_ns
    lineage = {a.span_id for a in _ancestors(visit, by_id)} | {visit.span_id}
    below = _descendants(visit, trace)
    for s in trace:
        if s.span_id in lineage:
            s.end_ns += delay_ns
        elif s.span_id not in below and s.start_ns >= ended:  # what the trace did after the slow call
            s.start_ns += delay_ns
            s.end_ns += delay_ns


def _calls_touching(trace: list[Span], service: str, *, outgoing: bool = True) -> list[tuple[str, str]]:
    """(caller span id, callee span id) of every call between ``service`` and another service in a trace
    (with ``outgoing=False``, only the calls into ``service``)."""
    by_id = {s.span_id: s for s in trace}
    out = []
    for s in trace:
        parent = by_id.get(s.parent_span_id)
        if parent is None or parent.service == s.service:
            continue
        if s.service == service or outgoing and parent.service == service:
            out.append((parent.span_id, s.span_id))
    return out


def _netem(trace: list[Span], service: str, d_ns: int, *, outgoing: bool = True) -> None:
    """Every call into and out of ``service`` (``outgoing=False``: into it only) takes ``d_ns`` longer each
    way (see the module docstring)."""
    pairs = _calls_touching(trace, service, outgoing=outgoing)
    by_id = {s.span_id: s for s in trace}
    for caller_id, callee_id in sorted(pairs, key=lambda p: by_id[p[1]].start_ns):
        caller, callee = by_id[caller_id], by_id[callee_id]
        for span_id in _descendants(callee, trace) | {callee.span_id}:  # the request arrives d later
            by_id[span_id].start_ns += d_ns
            by_id[span_id].end_ns += d_ns
        ended = caller.end_ns
        lineage = {a.span_id for a in _ancestors(caller, by_id)} | {caller.span_id}
        inside = _descendants(caller, trace)
        for s in trace:  # the response comes back d later still: the caller waits 2d more
            if s.span_id in lineage:
                s.end_ns += 2 * d_ns
            elif s.span_id not in inside and s.start_ns >= ended:
                s.start_ns += 2 * d_ns
                s.end_ns += 2 * d_ns


def _fail(trace: list[Span], visit: Span) -> None:
    by_id = {s.span_id: s for s in trace}
    for s in [visit, *_ancestors(visit, by_id)]:
        s.status, s.http_status = "error", 500


def _skip_last_call(trace: list[Span], visit: Span) -> list[Span]:
    """The trace without the visit's last call to another service; the visit and its callers end sooner."""
    by_id = {s.span_id: s for s in trace}
    inside = _descendants(visit, trace)
    calls = [s for s in trace if s.span_id in inside and s.service != visit.service
             and by_id.get(s.parent_span_id, visit).service == visit.service]
    if not calls:
        return trace
    last = max(calls, key=lambda s: s.start_ns)
    # the client span in the visit that made the call goes with it, when there is one
    top = by_id.get(last.parent_span_id)
    cut = top if top is not None and top.span_id != visit.span_id and top.service == visit.service else last
    gone = _descendants(cut, trace) | {cut.span_id}
    saved = max(0, cut.end_ns - cut.start_ns)
    for s in [visit, *_ancestors(visit, by_id)]:
        s.end_ns = max(s.start_ns, s.end_ns - saved)
    return [s for s in trace if s.span_id not in gone]


def make_cases(normal: list[Span], window_s: float, *, limit: int | None = None, seed: int = 0,
               services: set[str] | None = None, kinds: tuple[str, ...] = KINDS) -> list[SyntheticCase]:
    """Up to ``limit`` cases (all by default): every service visited at least :data:`MIN_VISITS` times in
    the incident part (or only those of ``services``), every kind that applies to it (of ``kinds``), every
    size."""
    baseline, later, begin, length = split_in_time(normal, window_s)
    traces = _by_trace(later)
    base_visits: dict[str, list[int]] = defaultdict(list)
    for trace in _by_trace(baseline).values():
        by_id = {s.span_id: s for s in trace}
        for s in trace:
            if s.parent_span_id not in by_id or by_id[s.parent_span_id].service != s.service:
                base_visits[s.service].append(s.end_ns - s.start_ns)
    edge_ms: dict[str, list[int]] = defaultdict(list)  # the caller's side of every call on a service's edges
    for trace in _by_trace(baseline).values():
        by_id = {s.span_id: s for s in trace}
        for s in trace:
            parent = by_id.get(s.parent_span_id)
            if parent is not None and parent.service != s.service:
                for svc in (parent.service, s.service):
                    edge_ms[svc].append(parent.end_ns - parent.start_ns)
    called = {callee for t in traces.values() for _, callee in _edges(t)}
    plan: list[tuple[str, str, float]] = []
    for service in sorted({s.service for s in later} & (services or {s.service for s in later})):
        visited = sum(len(_visits(t, service)) for t in traces.values())
        if visited < MIN_VISITS or not base_visits.get(service):
            continue
        makes_calls = _makes_calls(traces, service)
        for kind in kinds:
            if kind == "missing_calls" and not makes_calls or kind.startswith("network") and not edge_ms.get(service):
                continue
            if kind == "network_delay_in" and service not in called:
                continue  # nothing calls it: no call into it to delay
            plan += [(service, kind, size) for size in SIZES[kind]]
    if limit is not None and limit < len(plan):
        # Only the cases asked for are built (each one copies the whole incident part): a sample of the
        # plan, in the plan's order.
        keep = set(random.Random(seed).sample(range(len(plan)), limit))
        plan = [item for i, item in enumerate(plan) if i in keep]
    rng = random.Random(seed)
    cases = []
    for service, kind, size in plan:
        incident = copy.deepcopy(later)
        by_trace = _by_trace(incident)
        if kind.startswith("network"):
            d_ns = int(size * float(np.median(edge_ms[service])))
            for trace in by_trace.values():
                _netem(trace, service, d_ns, outgoing=kind == "network_delay")
        else:
            visited_ids = [(tid, v.span_id) for tid, tr in traces.items() for v in _visits(tr, service)]
            chosen = visited_ids if kind == "delay" else rng.sample(visited_ids, max(1, round(size * len(visited_ids))))
            delay_ns = int(size * float(np.median(base_visits[service])))
            for tid, span_id in chosen:
                trace = by_trace[tid]
                visit = next(s for s in trace if s.span_id == span_id)
                if kind == "delay":
                    _delay(trace, visit, delay_ns)
                elif kind == "errors":
                    _fail(trace, visit)
                else:
                    by_trace[tid] = _skip_last_call(trace, visit)
        incident = [s for t in by_trace.values() for s in t]
        cases.append(SyntheticCase(f"{service} {kind} x{size:g}", f"synthetic_{kind}", service,
                                   baseline, incident, begin, length))
    rng.shuffle(cases)
    return cases


def _edges(trace: list[Span]) -> set[tuple[str, str]]:
    """(caller, callee) services of every call between two services in a trace."""
    owner = {s.span_id: s.service for s in trace}
    return {(owner[s.parent_span_id], s.service) for s in trace
            if s.parent_span_id in owner and owner[s.parent_span_id] != s.service}


def _makes_calls(traces: dict[str, list[Span]], service: str) -> bool:
    """Whether ``service`` calls another service anywhere in these traces."""
    for trace in traces.values():
        owner = {s.span_id: s.service for s in trace}
        if any(owner.get(s.parent_span_id) == service and s.service != service for s in trace):
            return True
    return False
