"""Metrics and versions from Prometheus: the mesh's golden signals (Istio), resources (cAdvisor, through the
metric map) and which workload version serves the calls.

:class:`PrometheusMetrics` (kind ``metrics``) reads the request rates, errors and latencies from Tempo's
metrics-generator series where Prometheus holds them (:mod:`baynet.sources.tempo_metrics`), else the metric
map's per-service families and each call edge's median latency from both reporters (the network gap), and
the resources from the metric map; :class:`IstioVersions` (kind ``changes``)
reads requests and errors per ``destination_version`` (a new version serving calls is a change, and the
canary comparison of versions). Both answer in the bundle's ``signals``/``resources`` rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from baynet.bundles.format import SIGNAL_COLUMNS
from baynet.events import AnomalyEvent
from baynet.evidence.steps import read_from
from baynet.families import RESOURCE_FAMILIES, family_rows, fetch_series, load_metric_map
from baynet.prometheus import PrometheusClient, PrometheusError, series_by
from baynet.settings import Settings
from baynet.sources.base import Observed
from baynet.sources.tempo_metrics import generator_signals
from baynet.windows import Windows

# Prometheus down or refusing: the other sources carry the analysis (and the run says so).
UNAVAILABLE = (PrometheusError, httpx.HTTPError, OSError)


class PrometheusMetrics:
    """The live metric source: the metric map's families per service and the per-edge latencies."""

    name: ClassVar[str] = "prometheus"
    kind: ClassVar[str] = "metrics"
    unavailable: ClassVar[tuple[type[BaseException], ...]] = UNAVAILABLE

    def __init__(self, settings: Settings):
        self.settings = settings

    def fetch(self, event: AnomalyEvent, windows: Windows) -> Observed:
        signals, resources, stats = fetch_metrics(windows, self.settings)
        return Observed("metrics", {"signals": signals, "resources": resources}, stats,
                        origin=str(self.settings.prometheus_url))


class IstioVersions:
    """The live change source: requests and errors per workload version (Istio ``destination_version``)."""

    name: ClassVar[str] = "istio-versions"
    kind: ClassVar[str] = "changes"
    unavailable: ClassVar[tuple[type[BaseException], ...]] = UNAVAILABLE

    def __init__(self, settings: Settings):
        self.settings = settings

    def fetch(self, event: AnomalyEvent, windows: Windows) -> Observed:
        return Observed("changes", {"versions": fetch_versions(windows, self.settings)},
                        origin=str(self.settings.prometheus_url))


def fetch_metrics(windows: Windows, settings: Settings) -> tuple[pd.DataFrame | None, pd.DataFrame | None,
                                                                  dict[str, Any]]:
    """Signals and resource rows (:mod:`baynet.evidence.metrics`) over the baseline and incident windows,
    from Prometheus; ``(None, None, stats)`` when metrics are not configured. Aggregates first: the
    request rates, errors and latencies come from Tempo's metrics-generator series where Prometheus has
    them (:mod:`baynet.sources.tempo_metrics`; ``BAYNET_AGGREGATES=istio`` skips them), else from the
    metric map's families and Istio's per-edge series; resources always from the metric map. The stats say
    which answered (``aggregates``)."""
    if not (settings.prometheus_url and settings.metrics_evidence):
        return None, None, {"metrics": "not configured (BAYNET_PROMETHEUS_URL unset or metrics evidence off)"}
    generated, found = None, {"services": 0, "edges": 0}
    if settings.aggregates == "auto":
        with PrometheusClient.from_settings(settings) as prometheus:
            generated, found = generator_signals(prometheus, read_from(windows.baseline, windows.slices,
                                                                       settings.metrics_step_s),
                                                 windows.incident[1], settings.metrics_step_s)
    if generated is not None:
        frames, _, resources = fetch_families(windows, settings, only=RESOURCE_FAMILIES)
        signals, edges = generated, generated[generated["source"] != ""]
        aggregates = (f"Tempo metrics-generator: {found['services']} services (span metrics), "
                      f"{found['edges']} edges (service graph)")
        if not found["edges"]:  # span metrics without the service graph: the edges from Istio, if any
            signals, edges = _with_istio_edges(signals, windows, settings)
            aggregates += "; per-edge latencies from Istio" if edges is not None and len(edges) else ""
    else:
        frames, signals, resources = fetch_families(windows, settings)
        signals, edges = _with_istio_edges(signals, windows, settings)
        aggregates = ("Istio and the metric map" + (" (no Tempo metrics-generator series in Prometheus)"
                                                    if settings.aggregates == "auto" else " (BAYNET_AGGREGATES=istio)"))
    n_services = len(frames) if generated is None else found["services"]
    stats = {"metrics": f"{n_services} services from {settings.prometheus_url}", "aggregates": aggregates,
             "metric_rows": {"signals": 0 if signals is None else len(signals),
                             "resources": 0 if resources is None else len(resources),
                             "edges": 0 if edges is None else int(edges[["source", "destination"]]
                                                                  .drop_duplicates().shape[0])}}
    return signals, resources, stats


def _with_istio_edges(signals: pd.DataFrame | None, windows: Windows, settings: Settings
                      ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``signals`` with Istio's per-edge medians added (the network gap per call edge: the caller's view
    minus the callee's), and those edge rows (None when Istio has none)."""
    edges = edge_signals(windows, settings, quantiles=(50,), counts=False)
    if edges is None:
        return signals, None
    edges = edges[edges["source"] != ""]
    return (edges if signals is None else pd.concat([signals, edges], ignore_index=True)), edges


def fetch_families(windows: Windows, settings: Settings, only: tuple[str, ...] | None = None
                   ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None, pd.DataFrame | None]:
    """The metric map's per-service series over the baseline and incident windows (``only`` these
    families, when given), and the signal and resource rows made of them
    (:func:`baynet.families.family_rows`), without the per-edge ones."""
    step = settings.metrics_step_s
    metric_map = load_metric_map(settings.detector_metric_map)
    if only is not None:
        metric_map = {fam: q for fam, q in metric_map.items() if fam in only}
    with PrometheusClient.from_settings(settings) as prometheus:
        frames = fetch_series(prometheus, metric_map, read_from(windows.baseline, windows.slices, step),
                              windows.incident[1], step,
                              namespace=settings.namespace)
    signals, resources = family_rows(frames, step)
    return frames, signals, resources


_EDGE_KEYS = "source_canonical_service, destination_canonical_service, reporter, destination_version"


def edge_queries(namespace: str, window: str, quantiles: tuple[int, ...] = (50, 90, 99),
                 counts: bool = True) -> dict[str, str]:
    """PromQL for Istio's golden signals per call edge, reporter and destination version."""
    sel = f'destination_workload_namespace="{namespace}"'
    out = {}
    if counts:
        out["rate"] = f"sum by ({_EDGE_KEYS}) (rate(istio_requests_total{{{sel}}}[{window}]))"
        out["errors"] = f'sum by ({_EDGE_KEYS}) (rate(istio_requests_total{{{sel},response_code=~"5.."}}[{window}]))'
    for q in quantiles:
        out[f"p{q}"] = (f"histogram_quantile({q / 100}, sum by ({_EDGE_KEYS}, le) "
                        f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))")
    return out


def edge_signals(windows: Windows, settings: Settings, *, quantiles: tuple[int, ...] = (50, 90, 99),
                 counts: bool = True) -> pd.DataFrame | None:
    """Signal rows (:mod:`baynet.bundles.format`) per call edge, reporter and destination version, from
    Istio's series over the baseline and incident windows at the metric step: request counts and error
    ratios (``counts``) and latency quantiles. A source Istio labels ``unknown`` (outside the mesh) is
    blank. None when Prometheus is not configured or no series answers."""
    if not (settings.prometheus_url and settings.metrics_evidence):
        return None
    step = settings.metrics_step_s
    window = f"{max(step * 2, 30)}s"
    with PrometheusClient.from_settings(settings) as prometheus:
        series = series_by(prometheus, edge_queries(settings.namespace, window, quantiles, counts),
                           ("source_canonical_service", "destination_canonical_service", "reporter",
                            "destination_version"), read_from(windows.baseline, windows.slices, step),
                           windows.incident[1], step,
                           required=("destination_canonical_service",))
    rows = []
    for (src, dst, reporter, version), cols in sorted(series.items()):
        times = sorted(cols.get("rate", {}) if counts else set().union(*cols.values()))
        for t in times:
            row = {"time": t, "source": "" if src in ("", "unknown") else src, "destination": dst,
                   "window_s": float(step), "requests": np.nan, "error_ratio": np.nan,
                   "destination_version": "" if version in ("", "unknown") else version, "reporter": reporter}
            if counts:
                r = cols["rate"][t]
                err = cols.get("errors", {}).get(t, 0.0)
                row.update(requests=r * step, error_ratio=(err / r) if r > 0 else np.nan)
            for q in (50, 90, 99):
                v = cols.get(f"p{q}", {}).get(t)
                row[f"latency_ms_p{q}"] = v if v is not None and np.isfinite(v) else np.nan
            rows.append(row)
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=SIGNAL_COLUMNS)
    if counts:
        frame = frame[np.isfinite(frame["requests"])]
    else:
        frame = frame[frame[[f"latency_ms_p{q}" for q in quantiles]].notna().any(axis=1)]
    return frame.reset_index(drop=True) if len(frame) else None


def fetch_versions(windows: Windows, settings: Settings) -> pd.DataFrame | None:
    """Requests, error ratio and median latency per service and ``destination_version`` (Istio's label for
    the workload version serving the calls), at the metric step: the rows the change evidence reads
    (:mod:`baynet.evidence.changes`), summed over callers from :func:`edge_signals`. None when no series
    carries a version."""
    edges = edge_signals(windows, settings, quantiles=(50,))
    if edges is None:
        return None
    edges = edges[(edges["reporter"] == "destination") & (edges["destination_version"] != "")]
    if edges.empty:
        return None
    lat = edges["latency_ms_p50"].where(edges["latency_ms_p50"] > 0)
    weight = edges["requests"].where(lat.notna(), 0.0)
    rows = edges.assign(errors=edges["requests"] * edges["error_ratio"].fillna(0.0), w=weight,
                        wlog=np.log(lat.fillna(1.0)) * weight).groupby(
        ["time", "destination", "destination_version"], as_index=False)[["requests", "errors", "w", "wlog"]].sum()
    ratio = (rows["errors"] / rows["requests"]).where(rows["requests"] > 0, 0.0)
    # the callers' medians combined by the requests behind them (a geometric mean: what the version
    # comparison reads, baynet.evidence.changes.version_latency)
    p50 = np.exp(rows["wlog"] / rows["w"]).where(rows["w"] > 0)
    return rows.assign(source="", window_s=float(settings.metrics_step_s), error_ratio=ratio, latency_ms_p50=p50,
                       reporter="destination").drop(columns=["errors", "w", "wlog"])
