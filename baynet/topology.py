"""The Istio service graph: read it (Prometheus ``istio_requests_total`` or a Kiali graph body),
store snapshots, and diff two of them.

A service is its Istio canonical service (the ``app`` label). An edge ``caller -> callee`` carries the
request rate (req/s) and the error rate (share of 5xx / no-response / gRPC server errors).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baynet.prometheus import PrometheusClient, PrometheusError

log = logging.getLogger(__name__)

# One reporter only (the destination proxy), or every request would count twice (source + destination).
PROM_EDGE_QUERY = (
    'sum by (source_canonical_service, source_workload_namespace, destination_canonical_service, '
    'destination_service_namespace, response_code, grpc_response_status, response_flags) '
    '(rate(istio_requests_total{{reporter="destination", destination_service_namespace="{ns}"}}[{window}s]))'
)
GRPC_SERVER_ERRORS = {"2", "4", "8", "10", "13", "14", "15"}


class TopologyError(Exception):
    """The topology source could not be read."""


class TopologyMissing(TopologyError):
    """The source answered but holds no graph for that namespace and time (e.g. past its retention)."""


@dataclass
class Edge:
    caller: str
    callee: str
    rate: float = 0.0         # requests per second
    error_rate: float = 0.0   # share of requests that failed


@dataclass
class Topology:
    namespace: str
    source: str
    taken_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    services: set[str] = field(default_factory=set)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)

    def callees(self, service: str) -> list[str]:
        return sorted(c for (s, c) in self.edges if s == service)

    def callers(self, service: str) -> list[str]:
        return sorted(s for (s, c) in self.edges if c == service)

    def add_edge(self, caller: str, callee: str, rate: float = 0.0, error_rate: float = 0.0) -> None:
        if caller == callee:
            return
        self.services.update((caller, callee))
        edge = self.edges.get((caller, callee))
        if edge is None:
            self.edges[(caller, callee)] = Edge(caller, callee, rate, error_rate)
        else:  # merge: rate-weighted error rate
            total = edge.rate + rate
            edge.error_rate = (edge.error_rate * edge.rate + error_rate * rate) / total if total else 0.0
            edge.rate = total

    def merged(self, other: "Topology") -> "Topology":
        """Union of two graphs (e.g. Istio topology plus call edges seen in traces)."""
        out = Topology(self.namespace, f"{self.source}+{other.source}", self.taken_at, set(self.services))
        for e in self.edges.values():
            out.add_edge(e.caller, e.callee, e.rate, e.error_rate)
        out.services |= other.services
        for e in other.edges.values():
            if (e.caller, e.callee) not in out.edges:
                out.add_edge(e.caller, e.callee, e.rate, e.error_rate)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "source": self.source, "taken_at": self.taken_at,
            "services": sorted(self.services),
            "edges": [vars(e) for e in sorted(self.edges.values(), key=lambda e: (e.caller, e.callee))],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Topology":
        topo = cls(data["namespace"], data.get("source", "snapshot"), data.get("taken_at", ""),
                   set(data.get("services", [])))
        for e in data.get("edges", []):
            topo.add_edge(e["caller"], e["callee"], float(e.get("rate", 0)), float(e.get("error_rate", 0)))
        return topo

    def downstream(self, service: str, hops: int) -> set[str]:
        """``service`` and everything it calls within ``hops`` calls."""
        seen, frontier = {service}, {service}
        for _ in range(hops):
            frontier = {c for s in frontier for c in self.callees(s)} - seen
            if not frontier:
                break
            seen |= frontier
        return seen


def _is_error(code: str, grpc: str, flags: str) -> bool:
    if code in ("0", "-", "") and flags not in ("", "-"):
        return True
    if code.isdigit() and int(code) >= 500:
        return True
    return grpc in GRPC_SERVER_ERRORS


def topology_from_prometheus_result(result: list[dict[str, Any]], namespace: str, source: str = "prometheus"
                                    ) -> Topology:
    """Build the graph from the vector result of :data:`PROM_EDGE_QUERY`."""
    totals: dict[tuple[str, str], list[float]] = {}
    for series in result:
        m = series.get("metric", {})
        caller = m.get("source_canonical_service", "")
        callee = m.get("destination_canonical_service", "")
        # Kiali drops series whose source is unknown (traffic from outside the mesh) or unnamed.
        if not caller or not callee or caller == "unknown" or callee == "unknown":
            continue
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise TopologyError(f"unreadable Prometheus sample {series!r}") from None
        acc = totals.setdefault((caller, callee), [0.0, 0.0])
        acc[0] += value
        if _is_error(m.get("response_code", ""), m.get("grpc_response_status", ""), m.get("response_flags", "")):
            acc[1] += value
    topo = Topology(namespace, source)
    for (caller, callee), (rate, errors) in totals.items():
        topo.add_edge(caller, callee, rate, errors / rate if rate else 0.0)
    return topo


def _kiali_name(node: dict[str, Any]) -> str | None:
    kind = node.get("nodeType")
    if kind in ("box", "unknown", "aggregate") or node.get("isBox"):
        return None
    if kind == "service":
        return node.get("service")
    return node.get("app") if node.get("app") not in (None, "", "unknown") else node.get("workload")


def _f(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def topology_from_kiali(body: dict[str, Any], namespace: str | None = None) -> Topology:
    """Build the graph from a Kiali ``/api/namespaces/graph`` body (all numbers are strings there)."""
    try:
        nodes = body["elements"]["nodes"]
        edges = body["elements"].get("edges") or []
    except (KeyError, TypeError):
        raise TopologyError("not a Kiali graph body: expected elements.nodes") from None
    names: dict[str, str] = {}
    ns_seen = None
    for n in nodes:
        data = n.get("data", {})
        name = _kiali_name(data)
        if name:
            names[data["id"]] = name
            ns_seen = ns_seen or data.get("namespace")
    topo = Topology(namespace or ns_seen or "default", "kiali")
    topo.services.update(names.values())
    for e in edges:
        data = e.get("data", {})
        caller, callee = names.get(data.get("source")), names.get(data.get("target"))
        if not caller or not callee:
            continue
        traffic = data.get("traffic") or {}
        rates = traffic.get("rates") or {}
        rate = _f(rates.get("http")) + _f(rates.get("grpc"))
        errors = _f(rates.get("http5xx")) + _f(rates.get("httpNoResponse")) + _f(rates.get("grpcErr")) \
            + _f(rates.get("grpcNoResponse"))
        topo.add_edge(caller, callee, rate, min(1.0, errors / rate) if rate else 0.0)
    return topo


def topology_from_edges(edges: list[tuple[str, str, float, float]], namespace: str, source: str) -> Topology:
    topo = Topology(namespace, source)
    for caller, callee, rate, err in edges:
        topo.add_edge(caller, callee, rate, err)
    return topo


def topology_from_prometheus(prometheus: PrometheusClient, namespace: str, window_s: int, at: float | None = None
                             ) -> Topology:
    """The graph from Istio's ``istio_requests_total`` over the ``window_s`` before ``at`` (default now).
    Raises :class:`TopologyMissing` when Prometheus holds no requests for the namespace then, and
    :class:`TopologyError` when it cannot answer ("rejected" in the message for a 4xx)."""
    try:
        result = prometheus.query(PROM_EDGE_QUERY.format(ns=namespace, window=window_s), at)
    except PrometheusError as exc:
        raise TopologyError(str(exc)) from exc
    if not result:
        when = "now" if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        raise TopologyMissing(f"Prometheus at {prometheus.base_url} has no Istio requests in namespace "
                              f"{namespace!r} in the {window_s}s before {when} (outside its retention, or no "
                              f"traffic)")
    return topology_from_prometheus_result(result, namespace)


# ---------------------------------------------------------------------------------------------
# Diff and snapshots

@dataclass
class TopologyDiff:
    services_added: list[str]
    services_removed: list[str]
    edges_added: list[tuple[str, str]]
    edges_removed: list[tuple[str, str]]
    rate_changed: list[dict[str, Any]]
    error_changed: list[dict[str, Any]]
    first: bool = False    # no earlier snapshot: everything is "added"; say so in one line instead

    @property
    def structural(self) -> bool:
        return bool(self.services_added or self.services_removed or self.edges_added or self.edges_removed)

    @property
    def empty(self) -> bool:
        return not (self.structural or self.rate_changed or self.error_changed)

    def to_json(self) -> dict[str, Any]:
        return {"services_added": self.services_added, "services_removed": self.services_removed,
                "edges_added": [list(e) for e in self.edges_added],
                "edges_removed": [list(e) for e in self.edges_removed],
                "rate_changed": self.rate_changed, "error_changed": self.error_changed, "first": self.first}

    def to_markdown(self) -> str:
        if self.first:
            return (f"First view of this mesh: {len(self.services_added)} services, {len(self.edges_added)} "
                    "calls (no earlier snapshot to compare with).")
        if self.empty:
            return "No change in the service graph."
        lines = ["| change | what |", "|---|---|"]
        lines += [f"| service added | `{s}` |" for s in self.services_added]
        lines += [f"| service removed | `{s}` |" for s in self.services_removed]
        lines += [f"| edge added | `{a}` → `{b}` |" for a, b in self.edges_added]
        lines += [f"| edge removed | `{a}` → `{b}` |" for a, b in self.edges_removed]
        lines += [f"| rate | `{c['caller']}` → `{c['callee']}`: {c['before']:.3g} → {c['after']:.3g} req/s |"
                  for c in self.rate_changed]
        lines += [f"| errors | `{c['caller']}` → `{c['callee']}`: {c['before']:.1%} → {c['after']:.1%} |"
                  for c in self.error_changed]
        return "\n".join(lines)


def diff_topology(old: Topology | None, new: Topology, rate_rel: float = 0.2, error_abs: float = 0.01
                  ) -> TopologyDiff:
    """What changed from ``old`` to ``new``: services/edges added or removed; request rates that moved by
    more than ``rate_rel`` (relative) and error rates by more than ``error_abs`` (absolute)."""
    first = old is None
    old = old or Topology(new.namespace, "empty")
    rate_changed, error_changed = [], []
    for key in sorted(set(old.edges) & set(new.edges)):
        a, b = old.edges[key], new.edges[key]
        if abs(b.rate - a.rate) > rate_rel * max(a.rate, 1e-9):
            rate_changed.append({"caller": key[0], "callee": key[1], "before": a.rate, "after": b.rate})
        if abs(b.error_rate - a.error_rate) > error_abs:
            error_changed.append({"caller": key[0], "callee": key[1], "before": a.error_rate, "after": b.error_rate})
    return TopologyDiff(
        services_added=sorted(new.services - old.services),
        services_removed=sorted(old.services - new.services),
        edges_added=sorted(set(new.edges) - set(old.edges)),
        edges_removed=sorted(set(old.edges) - set(new.edges)),
        rate_changed=rate_changed, error_changed=error_changed, first=first,
    )


def atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
