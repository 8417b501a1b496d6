"""What Tempo's metrics-generator would remote-write to Prometheus for a set of spans, in OpenMetrics text
for ``promtool tsdb create-blocks-from openmetrics`` (the stand-in's aggregates: the demo, the tests and
``benchmarks/retrieval.py``).

Counted as Tempo's processors count (``modules/generator/processor/spanmetrics`` and ``…/servicegraphs``):

* **span metrics**, every span: ``traces_spanmetrics_calls_total`` and the histogram
  ``traces_spanmetrics_latency`` (seconds), labelled ``service``, ``span_name``, ``span_kind``
  (``SPAN_KIND_SERVER``…) and ``status_code`` (``STATUS_CODE_ERROR``…: the OTLP status only, not HTTP codes);
* **the service graph**, every client (or producer) span paired with the server (or consumer) span whose
  parent it is, in another service: ``traces_service_graph_request_total``, ``…_request_failed_total``
  (either side's status an error) and the histograms ``…_request_client_seconds`` (the client span's
  duration) and ``…_request_server_seconds`` (the server span's), labelled ``client`` and ``server``. A
  client span with ``db.name`` (or ``db.system``) and no server span is an edge to a database node named
  after it (``connection_type="database"``); other unpaired client spans are not counted (Tempo expires them).

A span counts at its end time, at the ``step_s`` grid (Prometheus' scrape of the generator's registry).
Latency buckets are Tempo's default ``ExponentialBuckets(0.002, 2, 14)`` (2 ms … 16.4 s).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from baynet.local.openmetrics import escape
from baynet.otlp import Span

BUCKETS_S = tuple(0.002 * 2 ** i for i in range(14))
_CLIENT_KINDS = ("client", "producer")
_SERVER_KINDS = ("server", "consumer")


def _kind(kind: str) -> str:
    return f"SPAN_KIND_{(kind or 'unspecified').upper()}"


def _status(status: str) -> str:
    return f"STATUS_CODE_{(status or 'unset').upper()}"


def span_metric_keys(spans: Iterable[Span]) -> list[tuple[dict[str, str], float, float]]:
    """Per span: its span-metrics labels, end time (s) and duration (s)."""
    return [({"service": s.service, "span_name": s.name, "span_kind": _kind(s.kind), "status_code": _status(s.status)},
             s.end_ns / 1e9, max(s.end_ns - s.start_ns, 0) / 1e9) for s in spans]


def service_graph_edges(spans: list[Span]) -> list[tuple[dict[str, str], float, float, float, bool]]:
    """Per counted request: its service-graph labels, time (s), client and server duration (s), failed."""
    by_parent: dict[tuple[str, str], Span] = {}
    for s in spans:
        if s.kind in _SERVER_KINDS and s.parent_span_id:
            by_parent[(s.trace_id, s.parent_span_id)] = s
    out = []
    for c in spans:
        if c.kind not in _CLIENT_KINDS:
            continue
        server = by_parent.get((c.trace_id, c.span_id))
        client_s = max(c.end_ns - c.start_ns, 0) / 1e9
        if server is not None and server.service != c.service:
            failed = c.status == "error" or server.status == "error"
            out.append(({"client": c.service, "server": server.service}, max(c.end_ns, server.end_ns) / 1e9,
                        client_s, max(server.end_ns - server.start_ns, 0) / 1e9, failed))
        elif server is None:
            db = c.attributes.get("db.name") or c.attributes.get("db.system")
            if db:
                out.append(({"client": c.service, "server": str(db), "connection_type": "database"},
                            c.end_ns / 1e9, client_s, client_s, c.status == "error"))
    return out


def _labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{escape(str(v))}"' for k, v in sorted(pairs.items()))


class _Series:
    """Counters and histograms keyed by label sets, each sampled on a step grid as cumulative values."""

    def __init__(self, grid: np.ndarray):
        self.grid = grid
        self.lines: dict[str, list[str]] = {}

    def counter(self, name: str, labels: dict[str, str], times: np.ndarray, weights: np.ndarray | None = None) -> None:
        order = np.argsort(times)
        t = times[order]
        w = np.ones(len(t)) if weights is None else weights[order]
        cum = np.concatenate([[0.0], np.cumsum(w)])
        values = cum[np.searchsorted(t, self.grid, side="right")]
        text = _labels(labels)
        self.lines.setdefault(name, []).extend(f"{name}{{{text}}} {v:.6g} {ts:.3f}" for ts, v in zip(self.grid, values))

    def histogram(self, name: str, labels: dict[str, str], times: np.ndarray, values: np.ndarray) -> None:
        for le in [*BUCKETS_S, float("inf")]:
            self.counter(f"{name}_bucket", {**labels, "le": "+Inf" if le == float("inf") else f"{le:g}"},
                         times[values <= le])
        self.counter(f"{name}_count", labels, times)
        self.counter(f"{name}_sum", labels, times, values)


def generator_openmetrics(spans: list[Span], step_s: int = 15, *, eof: bool = True) -> str:
    """The span metrics and service graph series of ``spans`` (see the module's doc), OpenMetrics text."""
    if not spans:
        return "# EOF\n" if eof else ""
    ends = np.array([s.end_ns for s in spans], dtype=np.int64) / 1e9
    t0 = np.floor(ends.min() / step_s) * step_s - step_s
    grid = np.arange(t0, np.ceil(ends.max() / step_s) * step_s + step_s + 1e-9, step_s)
    out = _Series(grid)
    groups: dict[str, tuple[dict[str, str], list[float], list[float]]] = {}
    for labels, t, d in span_metric_keys(spans):
        key = _labels(labels)
        g = groups.setdefault(key, (labels, [], []))
        g[1].append(t)
        g[2].append(d)
    for labels, times, durations in groups.values():
        t, d = np.array(times), np.array(durations)
        out.counter("traces_spanmetrics_calls_total", labels, t)
        out.histogram("traces_spanmetrics_latency", labels, t, d)
    edges: dict[str, tuple[dict[str, str], list[tuple[float, float, float, bool]]]] = {}
    for labels, t, client_s, server_s, failed in service_graph_edges(spans):
        edges.setdefault(_labels(labels), (labels, []))[1].append((t, client_s, server_s, failed))
    for labels, rows in edges.values():
        arr = np.array([(t, c, s, f) for t, c, s, f in rows], dtype=float)
        t = arr[:, 0]
        out.counter("traces_service_graph_request_total", labels, t)
        out.counter("traces_service_graph_request_failed_total", labels, t[arr[:, 3] > 0])
        out.histogram("traces_service_graph_request_client_seconds", labels, t, arr[:, 1])
        out.histogram("traces_service_graph_request_server_seconds", labels, t, arr[:, 2])
    lines: list[str] = []
    families = {"traces_spanmetrics_calls_total": ("traces_spanmetrics_calls", "counter"),
                "traces_service_graph_request_total": ("traces_service_graph_request", "counter"),
                "traces_service_graph_request_failed_total": ("traces_service_graph_request_failed", "counter")}
    for name, rows in out.lines.items():
        family, kind = families.get(name, (name, "unknown"))
        lines += [f"# TYPE {family} {kind}", *rows]
    if eof:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"
