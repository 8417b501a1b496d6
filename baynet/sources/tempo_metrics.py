"""Aggregates a tracing backend already keeps: Tempo's metrics-generator series in Prometheus.

Tempo's metrics-generator counts every span it ingests and remote-writes the counts to Prometheus:

* span metrics -- ``traces_spanmetrics_calls_total`` and ``traces_spanmetrics_latency_bucket`` by
  ``service``, ``span_name``, ``span_kind``, ``status_code``. The server (and consumer) spans of a service
  are the requests it answered: their rate, the share with ``STATUS_CODE_ERROR`` and their latency
  quantiles are the service's golden signals, over *all* traffic, whatever share of traces is read;
* the service graph -- ``traces_service_graph_request_total``, ``…_request_failed_total``,
  ``…_request_client_seconds_bucket`` and ``…_request_server_seconds_bucket`` by ``client`` and ``server``:
  per call edge the requests, failures, and the median as the caller saw it (client span) and as the
  callee did (server span) -- the network gap, as Istio's two reporters give it.

:func:`generator_signals` turns them into the bundle's neutral ``signals`` rows: one per service and step
(``reporter`` ``destination``, blank source) and per edge, reporter and step. The metric source reads
them first (:func:`baynet.sources.prometheus.fetch_metrics`) and falls back to Istio's series where the
generator is not enabled; which one answered is in the run's stats (``aggregates``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.bundles.format import SIGNAL_COLUMNS
from baynet.prometheus import PrometheusClient, series_by

SERVER_KINDS = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'
ERROR = 'status_code="STATUS_CODE_ERROR"'


def service_queries(window: str, quantiles: tuple[int, ...] = (50, 90, 99)) -> dict[str, str]:
    """PromQL over span metrics: per service, requests/s, failed requests/s and latency quantiles (s)."""
    out = {"rate": f"sum by (service) (rate(traces_spanmetrics_calls_total{{{SERVER_KINDS}}}[{window}]))",
           "errors": f"sum by (service) (rate(traces_spanmetrics_calls_total{{{SERVER_KINDS},{ERROR}}}[{window}]))"}
    for q in quantiles:
        out[f"p{q}"] = (f"histogram_quantile({q / 100}, sum by (service, le) "
                        f"(rate(traces_spanmetrics_latency_bucket{{{SERVER_KINDS}}}[{window}])))")
    return out


def edge_queries(window: str) -> dict[str, str]:
    """PromQL over the service graph: per edge, requests/s, failed/s, the client's and server's median (s)."""
    q = ("histogram_quantile(0.5, sum by (client, server, le) "
         "(rate(traces_service_graph_request_{}_seconds_bucket[{}])))")
    return {"rate": f"sum by (client, server) (rate(traces_service_graph_request_total[{window}]))",
            "errors": f"sum by (client, server) (rate(traces_service_graph_request_failed_total[{window}]))",
            "client_p50": q.format("client", window), "server_p50": q.format("server", window)}


def _ms(value: float | None) -> float:
    return value * 1000.0 if value is not None and np.isfinite(value) else np.nan


def generator_signals(prometheus: PrometheusClient, start: float, end: float, step: float
                      ) -> tuple[pd.DataFrame | None, dict[str, int]]:
    """Signal rows from the metrics-generator's series between ``start`` and ``end`` at ``step`` seconds,
    and how many services and edges answered. ``(None, {...: 0})`` when Tempo writes none."""
    window = f"{max(int(step * 2), 30)}s"
    rows = []
    services = series_by(prometheus, service_queries(window), ("service",), start, end, step)
    for (service,), cols in sorted(services.items()):
        for t, r in sorted(cols.get("rate", {}).items()):
            err = cols.get("errors", {}).get(t, 0.0)
            rows.append({"time": t, "source": "", "destination": service, "window_s": float(step),
                         "requests": r * step, "error_ratio": err / r if r > 0 else np.nan,
                         "latency_ms_avg": np.nan, "destination_version": "", "reporter": "destination",
                         **{f"latency_ms_p{q}": _ms(cols.get(f"p{q}", {}).get(t)) for q in (50, 90, 99)}})
    edges = series_by(prometheus, edge_queries(window), ("client", "server"), start, end, step)
    for (client, server), cols in sorted(edges.items()):
        for t, r in sorted(cols.get("rate", {}).items()):
            err = cols.get("errors", {}).get(t, 0.0)
            for reporter, col in (("source", "client_p50"), ("destination", "server_p50")):
                rows.append({"time": t, "source": client, "destination": server, "window_s": float(step),
                             "requests": r * step, "error_ratio": err / r if r > 0 else np.nan,
                             "latency_ms_avg": np.nan, "latency_ms_p50": _ms(cols.get(col, {}).get(t)),
                             "latency_ms_p90": np.nan, "latency_ms_p99": np.nan, "destination_version": "",
                             "reporter": reporter})
    found = {"services": len(services), "edges": len(edges)}
    if not rows:
        return None, found
    frame = pd.DataFrame(rows, columns=SIGNAL_COLUMNS)
    return frame[np.isfinite(frame["requests"])].reset_index(drop=True), found
