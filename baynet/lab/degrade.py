"""Data shapes: a bundle transformed into the shape another mesh's data would have, before the analysis.

``baynet eval bundles DIR... --degrade SHAPE`` analyses every bundle in that shape, ``--matrix`` in every
shape. A user's mesh has its own step, its own missing fields and its own clock; these are the ones
measured:

==================  =====================================================================================
shape               what changes
==================  =====================================================================================
``as_is``           nothing
``resample_1m``     metric rows aggregated into 60 s windows (requests summed, error ratios and latencies
``resample_5m``     weighted by requests where counted, else averaged; resources averaged per pod) -- 300 s
``no_counts``       request counts dropped (error ratios and latencies stay)
``no_percentiles``  latency percentiles dropped; the average stays (where a bundle has none, its p50 stands
                    in for it)
``no_traces``       the traces dropped
``no_call_graph``   ``topology.csv`` and the callers of signal rows dropped (what traces show stays)
``alert_earlier``   the anomaly event one step earlier (the metric step, 60 s without metrics)
``alert_later``     one step later
``foreign_nodes``   three nodes that are not mesh workloads (a load balancer, a managed database, a queue)
                    added beside the entry, each with its own noisy series and calls; never the cause
``latency_only``    each service's mean latency as its own proxies report it, and nothing else: no traces,
                    logs, resources, changes, versions, counts, errors, percentiles or call graph (the
                    shape of a mesh that exports only Istio's mean latency per service)
==================  =====================================================================================

A shape that makes no sense for a bundle raises :class:`NotApplicable` with the reason (e.g. resampling
to 5 minutes a bundle whose metrics cover less than 12 of them; dropping traces a bundle does not have).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Callable

import numpy as np
import pandas as pd

from baynet.bundles.read import Bundle
from baynet.evidence.steps import data_step

SHAPES = ("as_is", "resample_1m", "resample_5m", "no_counts", "no_percentiles", "no_traces", "no_call_graph",
          "alert_earlier", "alert_later", "foreign_nodes", "latency_only")
PERCENTILES = ["latency_ms_p50", "latency_ms_p90", "latency_ms_p99"]
MIN_WINDOWS = 12  # a resampled bundle needs at least this many windows of metrics to mean anything


class NotApplicable(ValueError):
    """The shape makes no sense for this bundle; the message says why."""


def _metric_span(bundle: Bundle) -> float:
    times = [f["time"] for f in (bundle.signals, bundle.resources) if f is not None and len(f)]
    if not times:
        return 0.0
    t = pd.concat(times)
    return float(t.max() - t.min())


def _resample(bundle: Bundle, step: float) -> Bundle:
    if bundle.signals is None and bundle.resources is None:
        raise NotApplicable("no metric rows to resample")
    own = data_step(bundle.signals, bundle.resources) or 0.0
    if own >= step:
        raise NotApplicable(f"its metrics already come every {own:.0f} s")
    if _metric_span(bundle) < MIN_WINDOWS * step:
        raise NotApplicable(f"its metrics cover {_metric_span(bundle):.0f} s, less than {MIN_WINDOWS} windows of "
                            f"{step:.0f} s")

    def bucket(t: pd.Series) -> pd.Series:
        return np.ceil(t / step) * step  # a row stamps the end of the window it measured

    signals = None
    if bundle.signals is not None and len(bundle.signals):
        s = bundle.signals.assign(time=bucket(bundle.signals["time"]))
        value_cols = ["error_ratio", "latency_ms_avg"] + PERCENTILES
        agg = _weighted_means(s, ["time", "source", "destination", "reporter", "destination_version"], value_cols)
        signals = agg[["requests"] + value_cols].reset_index().assign(window_s=float(step))
    resources = None
    if bundle.resources is not None and len(bundle.resources):
        r = bundle.resources.copy()
        r["time"] = bucket(r["time"])
        # one series per pod where pods are named (averaging a leaking pod with its neighbours would hide it)
        keys = ["time", "service", "metric"] + (["pod"] if "pod" in r and (r["pod"].fillna("") != "").any() else [])
        resources = r.groupby(keys, as_index=False)["value"].mean()
    return dataclasses.replace(bundle, signals=signals, resources=resources)


def _weighted_means(s: pd.DataFrame, keys: list[str], value_cols: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: requests summed (NaN where none counted) and each of ``value_cols`` the mean
    of its rows weighted by their requests where counted (else each row alike); NaN where no row holds it."""
    s = s.copy()
    weight = s["requests"].where(s["requests"].notna(), 1.0).clip(lower=1e-9)
    for col in value_cols:
        s[f"w_{col}"] = s[col] * weight
        s[f"n_{col}"] = weight.where(s[col].notna(), 0.0)
    agg = s.groupby(keys, dropna=False).agg(
        requests=("requests", lambda r: r.sum(min_count=1)),
        **{f"w_{c}": (f"w_{c}", "sum") for c in value_cols}, **{f"n_{c}": (f"n_{c}", "sum") for c in value_cols})
    for col in value_cols:
        agg[col] = (agg[f"w_{col}"] / agg[f"n_{col}"]).where(agg[f"n_{col}"] > 0)
    return agg


def _no_counts(bundle: Bundle) -> Bundle:
    if bundle.signals is None or bundle.signals["requests"].isna().all():
        raise NotApplicable("no request counts to drop")
    return dataclasses.replace(bundle, signals=bundle.signals.assign(requests=np.nan))


def _no_percentiles(bundle: Bundle) -> Bundle:
    s = bundle.signals
    if s is None or s[PERCENTILES].isna().all().all():
        raise NotApplicable("no latency percentiles to drop")
    avg = s["latency_ms_avg"].fillna(s["latency_ms_p50"])
    return dataclasses.replace(bundle, signals=s.assign(latency_ms_avg=avg, **{c: np.nan for c in PERCENTILES}))


def _no_traces(bundle: Bundle) -> Bundle:
    if bundle.spans is None or not len(bundle.spans):
        raise NotApplicable("no traces to drop")
    if bundle.signals is None and bundle.resources is None and bundle.logs is None:
        raise NotApplicable("traces are all it has")
    return dataclasses.replace(bundle, spans=None)


def _no_call_graph(bundle: Bundle) -> Bundle:
    s = bundle.signals
    callers = s is not None and (s["source"] != "").any()
    if not bundle.topology and not callers:
        raise NotApplicable("no call graph besides what traces show")
    if s is not None:
        s = s[s["reporter"] != "source"].assign(source="")
        s = s.groupby(["time", "source", "destination", "reporter", "destination_version"], as_index=False,
                      dropna=False).agg(window_s=("window_s", "first"), requests=("requests", lambda r: r.sum(min_count=1)),
                                        **{c: (c, "mean") for c in ["error_ratio", "latency_ms_avg"] + PERCENTILES})
    return dataclasses.replace(bundle, topology=[], signals=s)


def _alert_shift(sign: int) -> Callable[[Bundle], Bundle]:
    def shift(bundle: Bundle) -> Bundle:
        step = data_step(bundle.signals, bundle.resources) or 60.0
        event = bundle.event.model_copy(update={"timestamp": bundle.event.timestamp + timedelta(seconds=sign * step)})
        return dataclasses.replace(bundle, event=event)
    return shift


FOREIGN = ("ingress-lb", "managed-db", "queue-broker")


def _foreign_nodes(bundle: Bundle, seed: int = 7) -> Bundle:
    """Three non-workload nodes beside the entry service: the entry calls each (where the bundle knows
    calls); each has its own noisy latency (and, where the bundle counts requests, request) series over the
    whole bundle, at the bundle's step, hiccups included; no fault in any of them."""
    if bundle.signals is None and bundle.resources is None and bundle.spans is None:
        raise NotApplicable("no data to add nodes beside")
    rng = np.random.default_rng(seed)
    step = data_step(bundle.signals, bundle.resources) or 60.0
    times = []
    for frame, col in ((bundle.signals, "time"), (bundle.resources, "time")):
        if frame is not None and len(frame):
            times.append(frame[col])
    if bundle.spans is not None and len(bundle.spans):
        times.append(bundle.spans["start_ns"] / 1e9)
    t = pd.concat(times)
    grid = np.arange(np.floor(t.min() / step) * step + step, t.max() + step, step)
    entry = bundle.event.service
    counted = bundle.signals is not None and bundle.signals["requests"].notna().any()
    # Where the bundle knows calls, the entry calls the new nodes; where it knows none, they come alone too
    # (adding nodes must not hand a graph to a mesh that has none).
    graph = bool(bundle.topology) or (bundle.signals is not None and (bundle.signals["source"] != "").any()) or (
        bundle.spans is not None and len(bundle.spans) > 0)
    rows = []
    for i, node in enumerate(FOREIGN):
        level = 5.0 * (i + 1)
        noise = rng.lognormal(0, 0.35, len(grid)) * level
        spikes = rng.random(len(grid)) < 0.05  # a managed component has hiccups of its own
        latency = np.where(spikes, noise * rng.uniform(2, 5, len(grid)), noise)
        for reporter in (("source", "destination") if graph else ("destination",)):
            rows.append(pd.DataFrame({
                "time": grid, "source": entry if graph else "", "destination": node, "window_s": float(step),
                "requests": rng.poisson(50 * step / 60, len(grid)).astype(float) if counted else np.nan,
                "error_ratio": np.where(rng.random(len(grid)) < 0.03, rng.uniform(0, 0.05, len(grid)), 0.0),
                "latency_ms_avg": latency, "latency_ms_p50": latency, "latency_ms_p90": latency * 1.8,
                "latency_ms_p99": latency * 3, "destination_version": "", "reporter": reporter}))
    extra = pd.concat(rows, ignore_index=True)
    signals = extra if bundle.signals is None else pd.concat([bundle.signals, extra], ignore_index=True)
    topology = list(bundle.topology) + [(entry, node) for node in FOREIGN] if bundle.topology else []
    return dataclasses.replace(bundle, signals=signals, topology=topology)


def _latency_only(bundle: Bundle) -> Bundle:
    s = bundle.signals
    if s is None or s["latency_ms_avg"].fillna(s["latency_ms_p50"]).isna().all():
        raise NotApplicable("no latency series")
    s = s[s["reporter"] != "source"]
    s = s.assign(latency_ms_avg=s["latency_ms_avg"].fillna(s["latency_ms_p50"]))
    # one mean per service and step, over its versions and callers, weighted by requests where counted
    per_service = _weighted_means(s, ["time", "destination", "window_s"], ["latency_ms_avg"]).dropna(
        subset=["latency_ms_avg"]).reset_index()
    signals = per_service.assign(source="", requests=np.nan, error_ratio=np.nan, destination_version="",
                                 reporter="destination", **{c: np.nan for c in PERCENTILES})
    return dataclasses.replace(bundle, spans=None, resources=None, logs=None, changes=None, topology=[],
                               signals=signals[list(bundle.signals.columns)])


TRANSFORMS: dict[str, Callable[[Bundle], Bundle]] = {
    "as_is": lambda b: b,
    "resample_1m": lambda b: _resample(b, 60.0),
    "resample_5m": lambda b: _resample(b, 300.0),
    "no_counts": _no_counts,
    "no_percentiles": _no_percentiles,
    "no_traces": _no_traces,
    "no_call_graph": _no_call_graph,
    "alert_earlier": _alert_shift(-1),
    "alert_later": _alert_shift(+1),
    "foreign_nodes": _foreign_nodes,
    "latency_only": _latency_only,
}


def degrade(bundle: Bundle, shape: str) -> Bundle:
    """``bundle`` in ``shape`` (:data:`SHAPES`); raises :class:`NotApplicable` with the reason."""
    if shape not in TRANSFORMS:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return TRANSFORMS[shape](bundle)
