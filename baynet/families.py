"""Metric families: what a mesh's metrics measure, whatever they are called there, read from Prometheus.

A *family* is a kind of measurement Baynet knows how to read: ``cpu``, ``mem``, ``net_rx``, ``net_tx``,
``load`` (requests/s), ``lat_p50``/``lat_p90``/``lat_p99`` (latency percentiles), ``errors`` (share of failed
requests) and ``net_lat`` (time added between the callers and the service on calls into it: the median
latency the callers measure minus the one the service measures -- a network delay on the service's side
shows here and nowhere else). A metric map says, per family, which PromQL query returns one series per
service; families a mesh does not have are simply absent. The detector and the incident analysis read the
same families through :func:`fetch_series`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from baynet.prometheus import PrometheusClient

FAMILIES = ("cpu", "mem", "net_rx", "net_tx", "load", "lat_p50", "lat_p90", "lat_p99", "errors", "net_lat")


_ISTIO_SVC = 'label_replace({expr}, "service", "$1", "destination_canonical_service", "(.*)")'
_CONTAINER_SVC = 'label_replace({expr}, "service", "$1", "container", "(.*)")'
# pod-level series (network) have no container label: the pod name without its ReplicaSet and pod hashes
_POD_SVC = r'label_replace({expr}, "service", "$1", "pod", "^(.+?)(-[a-z0-9]{{5,10}})?-[a-z0-9]{{5}}$")'


def _reporter_quantile(reporter: str) -> str:
    return ('histogram_quantile(0.5, sum by (destination_canonical_service, le) (rate('
            f'istio_request_duration_milliseconds_bucket{{reporter="{reporter}",'
            'destination_workload_namespace="$namespace"}[$window])))')


def _istio_quantile(q: float) -> str:
    inner = ('sum by (destination_canonical_service, le) (rate(istio_request_duration_milliseconds_bucket'
             '{reporter="destination",destination_workload_namespace="$namespace"}[$window]))')
    return _ISTIO_SVC.format(expr=f"histogram_quantile({q}, {inner})")


PRESETS: dict[str, dict[str, str]] = {
    # cAdvisor (kubelet) container metrics + Istio sidecar request metrics.
    "istio-cadvisor": {
        "cpu": "sum by (service) (" + _CONTAINER_SVC.format(
            expr='rate(container_cpu_usage_seconds_total{namespace="$namespace",container!="",container!="POD",'
                 'container!="istio-proxy"}[$window])') + ")",
        "mem": "sum by (service) (" + _CONTAINER_SVC.format(
            expr='container_memory_working_set_bytes{namespace="$namespace",container!="",container!="POD",'
                 'container!="istio-proxy"}') + ")",
        "net_rx": "sum by (service) (" + _POD_SVC.format(
            expr='rate(container_network_receive_bytes_total{namespace="$namespace"}[$window])') + ")",
        "net_tx": "sum by (service) (" + _POD_SVC.format(
            expr='rate(container_network_transmit_bytes_total{namespace="$namespace"}[$window])') + ")",
        "load": _ISTIO_SVC.format(expr='sum by (destination_canonical_service) (rate(istio_requests_total'
                                       '{reporter="destination",destination_workload_namespace="$namespace"}'
                                       '[$window]))'),
        "lat_p50": _istio_quantile(0.5),
        "lat_p90": _istio_quantile(0.9),
        "lat_p99": _istio_quantile(0.99),
        "net_lat": _ISTIO_SVC.format(expr=f"({_reporter_quantile('source')} - {_reporter_quantile('destination')})"),
        "errors": _ISTIO_SVC.format(
            expr='(sum by (destination_canonical_service) (rate(istio_requests_total{reporter="destination",'
                 'destination_workload_namespace="$namespace",response_code=~"5.."}[$window])) / '
                 'sum by (destination_canonical_service) (rate(istio_requests_total{reporter="destination",'
                 'destination_workload_namespace="$namespace"}[$window])))'),
    },
    # gala-gopher's container and L7 probes (the PetClinic thesis set-up). Names as that exporter
    # publishes them; a deployment that renames them passes its own map (a JSON file).
    "gala-gopher": {
        "cpu": 'sum by (service) (label_replace(rate(gala_gopher_container_cpu_usage_seconds_total[$window]), '
               '"service", "$1", "container_name", "(.*)"))',
        "mem": 'sum by (service) (label_replace(gala_gopher_container_memory_usage_bytes, '
               '"service", "$1", "container_name", "(.*)"))',
        "net_rx": 'sum by (service) (label_replace(rate(gala_gopher_container_network_receive_bytes_total'
                  '[$window]), "service", "$1", "container_name", "(.*)"))',
        "net_tx": 'sum by (service) (label_replace(rate(gala_gopher_container_network_transmit_bytes_total'
                  '[$window]), "service", "$1", "container_name", "(.*)"))',
        "load": 'sum by (service) (label_replace(gala_gopher_l7_throughput_req, "service", "$1", '
                '"container_name", "(.*)"))',
        "lat_p50": 'max by (service) (label_replace(gala_gopher_l7_latency_avg, "service", "$1", '
                   '"container_name", "(.*)"))',
        "lat_p99": 'max by (service) (label_replace(gala_gopher_l7_latency_p99, "service", "$1", '
                   '"container_name", "(.*)"))',
        "errors": 'sum by (service) (label_replace(gala_gopher_l7_err_ratio, "service", "$1", '
                  '"container_name", "(.*)"))',
    },
}


class MetricMapError(ValueError):
    pass


def load_metric_map(spec: str) -> dict[str, str]:
    """A preset name (``istio-cadvisor``, ``gala-gopher``) or a JSON file ``{"family": "PromQL", ...}``.

    Queries may use ``$namespace`` and ``$window``; each must return series with a ``service`` label."""
    if spec in PRESETS:
        return dict(PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise MetricMapError(f"metric map {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetricMapError(f"metric map {spec!r} is not JSON: {exc}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise MetricMapError(f"metric map {spec!r} must be a non-empty object of family -> PromQL")
    for fam, query in mapping.items():
        if fam not in FAMILIES:
            raise MetricMapError(f"metric map {spec!r}: unknown family {fam!r} (known: {', '.join(FAMILIES)})")
        if not isinstance(query, str) or not query.strip():
            raise MetricMapError(f"metric map {spec!r}: query for {fam!r} must be a non-empty string")
    return mapping


def fetch_series(prometheus: PrometheusClient, metric_map: dict[str, str], start: float, end: float, step_s: float,
                 *, namespace: str = "default", window: str | None = None) -> dict[str, pd.DataFrame]:
    """One frame per service: index = the ``step_s`` grid from ``start`` to ``end``, one column per family.

    Missing points stay NaN (the detector fills them forward); a family no series answered is absent."""
    window = window or f"{max(int(step_s * 2), 30)}s"
    grid = np.arange(math.floor(start / step_s) * step_s, end + 1e-9, step_s)
    columns: dict[str, dict[str, pd.Series]] = {}
    for fam, template in metric_map.items():
        query = template.replace("$namespace", namespace).replace("$window", window)
        for item in prometheus.query_range(query, grid[0], grid[-1], step_s):
            service = (item.get("metric") or {}).get("service")
            if not service:
                continue
            values = item.get("values") or []
            ts = np.array([float(v[0]) for v in values])
            vals = pd.to_numeric(pd.Series([v[1] for v in values]), errors="coerce").to_numpy(float)
            series = pd.Series(vals, index=ts).reindex(grid)
            series[~np.isfinite(series)] = np.nan
            columns.setdefault(service, {})[fam] = series
    return {svc: pd.DataFrame(cols, index=grid) for svc, cols in sorted(columns.items())}


# Families -> the bundle's neutral rows (signals, resources), as the metric evidence reads them.
_RESOURCE_FAMILIES = {"cpu": "cpu", "mem": "memory", "net_rx": "net_rx", "net_tx": "net_tx"}
RESOURCE_FAMILIES = tuple(_RESOURCE_FAMILIES)  # what a container uses, not what its requests see
_LATENCY_FAMILIES = {"lat_p50": "latency_ms_p50", "lat_p90": "latency_ms_p90", "lat_p99": "latency_ms_p99"}


def family_rows(frames: dict[str, pd.DataFrame], step_s: float) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Per-service family frames (index unix seconds; columns ``cpu``, ``mem``, ``load`` (requests/s),
    ``lat_p50``..., ``errors`` (ratio)), as read from Prometheus with a metric map, -> ``(signals,
    resources)`` rows: one signals row per service and step (destination reporter, no source), one
    resources row per service, series and step. Missing points are left out."""
    sig_parts, res_parts = [], []
    for service, frame in frames.items():
        t = frame.index.to_numpy(dtype=float)
        for fam, name in _RESOURCE_FAMILIES.items():
            if fam in frame:
                v = frame[fam].to_numpy(dtype=float)
                ok = np.isfinite(v)
                res_parts.append(pd.DataFrame({"time": t[ok], "service": service, "metric": name, "value": v[ok]}))
        cols = {}
        if "load" in frame:
            cols["requests"] = frame["load"].to_numpy(dtype=float) * step_s
        if "errors" in frame:
            cols["error_ratio"] = frame["errors"].to_numpy(dtype=float)
        for fam, name in _LATENCY_FAMILIES.items():
            if fam in frame:
                cols[name] = frame[fam].to_numpy(dtype=float)
        if cols:
            sig = pd.DataFrame({"time": t, "source": "", "destination": service, "window_s": float(step_s), **cols,
                                "reporter": "destination"})
            measured = sig[list(cols)].notna().any(axis=1)
            sig_parts.append(sig[measured])
    signals = pd.concat(sig_parts, ignore_index=True) if sig_parts else None
    resources = pd.concat(res_parts, ignore_index=True) if res_parts else None
    return signals, resources
