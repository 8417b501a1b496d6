"""Metric series for the detector: the data model, the metric-name map and Prometheus ``query_range``.

A *family* is a kind of measurement the detector knows how to read, whatever the metric is called in a
given mesh: ``cpu``, ``mem``, ``net_rx``, ``net_tx``, ``load`` (requests/s), ``lat_p50``/``lat_p90``/
``lat_p99`` (latency percentiles), ``errors`` (share of failed requests) and ``net_lat`` (time added between
the callers and the service on calls into it: the median latency the callers measure minus the one the
service measures — a network delay on the service's side shows here and nowhere else). A metric map says, per family,
which PromQL query returns one series per service; families a mesh does not have are simply absent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

FAMILIES = ("cpu", "mem", "net_rx", "net_tx", "load", "lat_p50", "lat_p90", "lat_p99", "errors", "net_lat")


@dataclass
class ServiceSeries:
    """One service's series: ``reference`` is known-normal history (calibration), ``observed`` is scored.

    Both are frames indexed by unix seconds with one column per family present. ``labels`` (evaluation
    only) holds one value per observed row: 1 anomalous, 0 normal, -1 unknown (not scored)."""

    service: str
    reference: pd.DataFrame
    observed: pd.DataFrame
    labels: np.ndarray | None = None


@dataclass
class Fault:
    service: str
    start: int  # index into the observed rows of that service
    end: int    # exclusive
    kind: str = ""


@dataclass
class Case:
    """A unit of evaluation: one experiment run (RCD) or one day of experiments (Nezha)."""

    name: str
    group: str  # what is held out together (never in training and test at once)
    step_s: float
    services: list[ServiceSeries]
    faults: list[Fault] = field(default_factory=list)


# --- metric maps -------------------------------------------------------------------------------------

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


class PrometheusError(RuntimeError):
    pass


def query_range(client: httpx.Client, base_url: str, query: str, start: float, end: float, step_s: float
                ) -> list[dict[str, Any]]:
    """``/api/v1/query_range``; the ``result`` list of a matrix answer. Errors name the query."""
    resp = client.get(f"{base_url.rstrip('/')}/api/v1/query_range",
                      params={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}s"})
    try:
        body = resp.json()
    except ValueError:
        raise PrometheusError(f"Prometheus answered {resp.status_code} with a non-JSON body to {query!r}") from None
    if resp.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {query!r}: {resp.status_code} {body.get('errorType', '')} "
                              f"{body.get('error', '')}".strip())
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"expected a matrix from {query!r}, got {data.get('resultType')!r}")
    return data.get("result") or []


def fetch_series(base_url: str, metric_map: dict[str, str], start: float, end: float, step_s: float, *,
                 namespace: str = "default", window: str | None = None, client: httpx.Client | None = None
                 ) -> dict[str, pd.DataFrame]:
    """One frame per service: index = the ``step_s`` grid from ``start`` to ``end``, one column per family.

    Missing points stay NaN (the detector fills them forward); a family no series answered is absent."""
    window = window or f"{max(int(step_s * 2), 30)}s"
    grid = np.arange(math.floor(start / step_s) * step_s, end + 1e-9, step_s)
    columns: dict[str, dict[str, pd.Series]] = {}
    own = client is None
    client = client or httpx.Client(timeout=30.0)
    try:
        for fam, template in metric_map.items():
            query = template.replace("$namespace", namespace).replace("$window", window)
            for item in query_range(client, base_url, query, grid[0], grid[-1], step_s):
                service = (item.get("metric") or {}).get("service")
                if not service:
                    continue
                values = item.get("values") or []
                ts = np.array([float(v[0]) for v in values])
                vals = pd.to_numeric(pd.Series([v[1] for v in values]), errors="coerce").to_numpy(float)
                series = pd.Series(vals, index=ts).reindex(grid)
                series[~np.isfinite(series)] = np.nan
                columns.setdefault(service, {})[fam] = series
    finally:
        if own:
            client.close()
    return {svc: pd.DataFrame(cols, index=grid) for svc, cols in sorted(columns.items())}


def coarsen(case: Case, step_s: float) -> Case:
    """``case`` at a step of ``step_s`` (no change when its own step is that long or longer): each window
    the mean of the rows in it, as a scrape at that interval would average them; a window is anomalous
    when any row in it is, unknown when any is unknown and none anomalous. Faults follow the new windows."""
    if step_s <= case.step_s:
        return case
    services, faults = [], []
    kinds = {f.service: f.kind for f in case.faults}
    for s in case.services:
        def agg(frame: pd.DataFrame) -> pd.DataFrame:
            if frame.empty:
                return frame
            keys = np.floor(frame.index.to_numpy(float) / step_s) * step_s
            return frame.groupby(keys).mean()

        obs = agg(s.observed)
        labels = None
        if s.labels is not None and len(s.observed):
            keys = np.floor(s.observed.index.to_numpy(float) / step_s) * step_s
            lab = pd.Series(np.asarray(s.labels), index=keys).groupby(level=0)
            labels = np.where(lab.max().to_numpy() == 1, 1, np.where(lab.min().to_numpy() == -1, -1, 0))
        services.append(ServiceSeries(s.service, agg(s.reference), obs, labels))
        if labels is not None and s.service in kinds:
            runs = np.flatnonzero(np.diff(np.r_[0, (labels == 1).astype(int), 0]))
            faults += [Fault(s.service, int(a), int(b), kinds[s.service]) for a, b in zip(runs[::2], runs[1::2])]
    return Case(case.name, case.group, float(step_s), services, faults)
