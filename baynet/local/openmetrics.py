"""A bundle's ``signals.csv`` and ``resources.csv`` as the series a mesh really exposes, in OpenMetrics
text for ``promtool tsdb create-blocks-from openmetrics`` (``baynet bundle replay``).

* ``istio_requests_total`` (counter) per call edge, reporter, destination version and response code
  (``200`` for the requests that succeeded, ``500`` for ``requests x error_ratio``), with Istio's labels
  (``source_workload``, ``source_canonical_service``, ``destination_workload``,
  ``destination_canonical_service``, ``destination_version``, ``reporter``, ``response_code``, namespaces);
  a blank source becomes ``unknown``, as Istio labels traffic from outside the mesh.
* ``istio_request_duration_milliseconds_bucket`` (histogram buckets, Istio's default bounds) whose counts
  follow the row's quantiles: the requests of a window are spread along the piecewise-linear distribution
  through (0, 0), (p50, 0.5), (p90, 0.9), (p99, 0.99) and (2 x p99, 1) -- so ``histogram_quantile`` over
  them gives the quantiles back to within a bucket's linear interpolation; with only an average, a
  distribution with that median.
* cAdvisor's ``container_cpu_usage_seconds_total`` (counter, from ``cpu``: the value is a rate),
  ``container_memory_working_set_bytes`` (gauge, from ``memory``/``mem``), and
  ``container_network_{receive,transmit}_bytes_total`` (counters, from ``net_rx``/``net_tx``), labelled
  ``namespace``, ``container`` (the service) and ``pod`` (``<service>-00000``). Other resource names have no
  cAdvisor counterpart and are listed as not replayed.

* ``changes.csv`` rows as kube-state-metrics reports a Deployment's rollout: per changed service a
  Deployment of its name whose ``kube_deployment_metadata_generation`` rises by one at each change, and a
  ReplicaSet per change (``kube_replicaset_created``: the change time; ``kube_replicaset_owner`` naming the
  Deployment) beside the one it replaced (created a day before the data), every 15 s over the data's span
  (:mod:`baynet.sources.kube_state` reads them back).

Service names are label values, so any text survives (escaped as OpenMetrics requires). Counters start
at 0 one window before a series' first row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ISTIO_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                    600000, 1800000, 3600000)
RESOURCE_NAMES = {"cpu": ("container_cpu_usage_seconds", "counter"),
                  "memory": ("container_memory_working_set_bytes", "gauge"),
                  "mem": ("container_memory_working_set_bytes", "gauge"),
                  "net_rx": ("container_network_receive_bytes", "counter"),
                  "net_tx": ("container_network_transmit_bytes", "counter")}


def escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items())


@dataclass
class Rendered:
    text: str
    series: int = 0
    skipped: list[str] = field(default_factory=list)


def _cdf(points: list[tuple[float, float]], x: float) -> float:
    xs, ys = zip(*points)
    return float(np.interp(x, xs, ys))


def _quantile_points(row: pd.Series) -> list[tuple[float, float]] | None:
    known = [(q, row.get(f"latency_ms_p{int(q * 100)}")) for q in (0.5, 0.9, 0.99)]
    known = [(q, float(v)) for q, v in known if v is not None and not pd.isna(v)]
    if not known and not pd.isna(row.get("latency_ms_avg", float("nan"))):
        known = [(0.5, float(row["latency_ms_avg"]))]
    if not known:
        return None
    points, last = [(0.0, 0.0)], 0.0
    for q, v in known:
        v = max(v, last)  # quantiles never decrease
        points.append((v + 1e-9 * len(points), q))
        last = v
    top = max(2 * last, last + 1e-6)
    points.append((top, 1.0))
    return [(x, y) for x, y in points]


def render(signals: pd.DataFrame | None, resources: pd.DataFrame | None, namespace: str,
           changes: pd.DataFrame | None = None) -> Rendered:
    lines: list[str] = []
    out = Rendered("")
    if signals is not None and not signals.empty:
        s = signals.copy()
        s["source"] = s["source"].replace("", "unknown")
        s["reporter"] = s["reporter"].replace("", "destination")
        s["destination_version"] = s["destination_version"].replace("", "unknown")
        keys = ["source", "destination", "reporter", "destination_version"]
        req_lines, bucket_lines = [], []
        for key, g in s.sort_values("time").groupby(keys, sort=True):
            src, dst, reporter, version = key
            base = {"reporter": reporter, "source_workload": src, "source_canonical_service": src,
                    "source_workload_namespace": namespace, "destination_workload": dst,
                    "destination_canonical_service": dst, "destination_service_name": dst,
                    "destination_workload_namespace": namespace, "destination_service_namespace": namespace,
                    "destination_version": version}
            t = g["time"].to_numpy(dtype=float)
            width = g["window_s"].fillna(pd.Series(np.diff(t, prepend=t[0] - 60.0), index=g.index)).to_numpy()
            start = t[0] - (width[0] if width[0] > 0 else 60.0)
            req = g["requests"].to_numpy(dtype=float) if "requests" in g else np.full(len(g), np.nan)
            if np.isfinite(req).any():
                err = np.nan_to_num(g["error_ratio"].to_numpy(dtype=float), nan=0.0)
                r = np.nan_to_num(req, nan=0.0)
                for code, part in (("200", r * (1 - err)), ("500", r * err)):
                    labels = _labels({**base, "response_code": code})
                    total = 0.0
                    req_lines.append(f"istio_requests_total{{{labels}}} 0 {start:.3f}")
                    for ts, v in zip(t, part):
                        total += v
                        req_lines.append(f"istio_requests_total{{{labels}}} {total:.6g} {ts:.3f}")
                    out.series += 1
                cumulative = np.zeros(len(ISTIO_BUCKETS_MS) + 1)
                per_bucket: list[list[str]] = [[] for _ in cumulative]
                les = [*map(str, ISTIO_BUCKETS_MS), "+Inf"]
                has_latency = False
                for i, (_, row) in enumerate(g.iterrows()):
                    points = _quantile_points(row)
                    n = r[i]
                    if points is not None and n > 0:
                        has_latency = True
                        cdf = [_cdf(points, le) for le in ISTIO_BUCKETS_MS] + [1.0]
                        cumulative += n * np.asarray(cdf)
                    for b in range(len(cumulative)):
                        per_bucket[b].append(f"{cumulative[b]:.6g} {t[i]:.3f}")
                if has_latency:
                    for b, le in enumerate(les):
                        labels = _labels({**base, "le": le})
                        bucket_lines.append(f"istio_request_duration_milliseconds_bucket{{{labels}}} 0 {start:.3f}")
                        bucket_lines.extend(f"istio_request_duration_milliseconds_bucket{{{labels}}} {v}"
                                            for v in per_bucket[b])
                    out.series += len(les)
            elif g[[c for c in g.columns if c.startswith("latency_ms_")]].notna().any().any():
                out.skipped.append(f"latency of {src}->{dst} ({reporter}) without a request count: not replayed")
        if req_lines:
            lines += ["# TYPE istio_requests counter", *req_lines]
        if bucket_lines:
            lines += ["# TYPE istio_request_duration_milliseconds_bucket unknown", *bucket_lines]
    if resources is not None and not resources.empty:
        r = resources.groupby(["service", "metric", "time"], sort=True)["value"].max().reset_index()
        by_family: dict[str, tuple[str, list[str]]] = {}
        for (svc, metric), g in r.groupby(["service", "metric"], sort=True):
            name = RESOURCE_NAMES.get(str(metric).lower())
            if name is None:
                out.skipped.append(f"resource {metric!r} of {svc}: no cAdvisor series for it, not replayed")
                continue
            family, kind = name
            labels = {"namespace": namespace, "container": svc, "pod": f"{svc}-00000"}
            if family.startswith("container_network"):
                labels = {"namespace": namespace, "pod": f"{svc}-00000", "interface": "eth0"}
            text = _labels(labels)
            t = g["time"].to_numpy(dtype=float)
            v = g["value"].to_numpy(dtype=float)
            rows = by_family.setdefault(family, (kind, []))[1]
            if kind == "counter":
                step = np.diff(t, prepend=t[0] - (np.median(np.diff(t)) if len(t) > 1 else 60.0))
                total = np.cumsum(np.clip(v, 0, None) * step)
                rows.append(f"{family}_total{{{text}}} 0 {t[0] - step[0]:.3f}")
                rows.extend(f"{family}_total{{{text}}} {x:.9g} {ts:.3f}" for ts, x in zip(t, total))
            else:
                rows.extend(f"{family}{{{text}}} {x:.9g} {ts:.3f}" for ts, x in zip(t, v) if math.isfinite(x))
            out.series += 1
        for family, (kind, rows) in by_family.items():
            lines += [f"# TYPE {family} {kind}", *rows]
    if changes is not None and not changes.empty:
        times = [f["time"] for f in (signals, resources) if f is not None and not f.empty]
        span = (min(float(t.min()) for t in times), max(float(t.max()) for t in times)) if times else \
            (float(changes["time"].min()) - 600.0, float(changes["time"].max()) + 600.0)
        lines += _kube_state(changes, namespace, span, out)
    lines.append("# EOF")
    out.text = "\n".join(lines) + "\n"
    return out


def _kube_state(changes: pd.DataFrame, namespace: str, span: tuple[float, float], out: Rendered,
                every: float = 15.0) -> list[str]:
    grid = np.arange(math.floor(span[0] / every) * every, span[1] + every, every)
    created, owner, generation = [], [], []
    for svc, g in changes.sort_values("time").groupby("service", sort=True):
        at = g["time"].to_numpy(dtype=float)
        sets = [(f"{svc}-{int(span[0]) % 100000:05d}", span[0] - 86400.0)]
        sets += [(f"{svc}-{int(t) % 100000:05d}{k}", float(t)) for k, t in enumerate(at)]
        for rs, when in sets:
            ts = grid[grid >= when]
            if not len(ts):
                continue
            labels = _labels({"namespace": namespace, "replicaset": rs})
            created.extend(f"kube_replicaset_created{{{labels}}} {when:.3f} {t:.3f}" for t in ts)
            own = _labels({"namespace": namespace, "replicaset": rs, "owner_kind": "Deployment", "owner_name": svc,
                           "owner_is_controller": "true"})
            owner.extend(f"kube_replicaset_owner{{{own}}} 1 {t:.3f}" for t in ts)
            out.series += 2
        dep = _labels({"namespace": namespace, "deployment": svc})
        generation.extend(f"kube_deployment_metadata_generation{{{dep}}} {1 + int((at <= t).sum())} {t:.3f}"
                          for t in grid)
        out.series += 1
    return ["# TYPE kube_replicaset_created gauge", *created, "# TYPE kube_replicaset_owner gauge", *owner,
            "# TYPE kube_deployment_metadata_generation gauge", *generation]
