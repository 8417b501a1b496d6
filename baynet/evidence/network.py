"""Network gaps, whichever source measured them: a grown gap on a call edge is blamed on one endpoint.

A delay on a pod's network (``tc netem``, a Chaos Mesh NetworkChaos) adds time to every call into and out
of it, so every edge that touches it grows; a neighbour has one grown edge among its others. Each grown edge
is therefore blamed on the endpoint with the larger *share* of what it measured grown, then on the one with
more grown edges (a leaf behind the delayed pod has one edge, all grown), and on a tie on the callee (a
delayed ingress slows the response its caller waits for). The traces (span gaps per edge and, at low
traffic, per call: :mod:`baynet.evidence.traces`) and the metrics (source- minus destination-reported
latency per edge: :mod:`baynet.evidence.metrics`) blame through this one function.

One difference is measured, not chosen: a span's gap per edge (the client span minus the server span)
includes the caller's own time around the call, so a CPU-starved caller grows all its edges and is the
cause -- those edges are compared by count first (``first="count"``). Share first there put two of Online
Boutique's ten CPU-consumed frontends second, behind a callee with one edge; count first for the metrics'
sidecar-measured gaps cost Online Boutique's metrics-alone network delays 9 -> 6 of 16
(``baynet eval bundles --sources metrics``, 2026-12-04).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

Edge = tuple[str, str]  # (caller, callee)


def blame(grown: Iterable[Edge], share: Mapping[str, float], *, first: str = "share") -> dict[str, list[Edge]]:
    """The grown edges per blamed service. ``share`` is each endpoint's share of what it measured grown
    (edges or calls); an endpoint missing from it counts as 0. ``first="count"`` compares the number of
    grown edges before the shares: where a gap includes the caller's own time (a span's, below), a starved
    caller grows every edge it has, and it is the cause."""
    if first not in ("share", "count"):
        raise ValueError(f"first must be 'share' or 'count', not {first!r}")
    grown = list(grown)
    count = Counter(s for edge in grown for s in edge)

    def key(svc: str) -> tuple[float, float]:
        return (share.get(svc, 0.0), count[svc]) if first == "share" else (count[svc], share.get(svc, 0.0))

    out: dict[str, list[Edge]] = {}
    for caller, callee in grown:
        out.setdefault(caller if key(caller) > key(callee) else callee, []).append((caller, callee))
    return out
