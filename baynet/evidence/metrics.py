"""Golden signals and resource series -> per-service, per-window evidence for the DBN.

The inputs are the neutral frames of an incident bundle (``signals.csv``, ``resources.csv``; see
:mod:`baynet.bundles.format`) -- the same shapes the Prometheus reader produces from Istio and cAdvisor
series. Every series is judged against its own baseline: the baseline window's median and a spread
estimated from the same window (the larger of 1.4826 x MAD and the standard deviation, so a step-shaped
or noisy baseline is not read as quiet), floored at :attr:`MetricThresholds.rel_floor` of the median. A
window's value is the median of its points, and its deviation ``z`` is measured in baseline spreads,
widened by the uncertainty of a baseline of ``n`` points (``sqrt(1 + 1/n)``) and read in the tails of
Student's t with ``n - 1`` degrees of freedom (:func:`normal_equivalent`): so a baseline of a few points
decides less than one of many.

Evidence columns (one row per service and window; window -1 is the baseline):

==============  =============================================================================
resource_z      largest rise of a resource series (cpu, memory, ...) of the service
resource        the name of that series
latency_z       largest rise of a latency series of calls to the service (destination reporter); during
                a rollout, of the older versions' calls, or the new version's lasting slowdown against
                them in the same windows (``canary``), whichever is larger
error_up        rise of the error ratio of calls to the service over its baseline ratio
error_z         that rise as a normal deviation: the exact binomial tail of the slice's failed calls at the
                baseline ratio (:func:`binomial_z`: it grows with the requests behind it)
rate_ratio      request rate against the baseline rate (1.0 = unchanged, or not measured)
gap_edges       grown network gaps (source-reporter minus destination-reporter latency) blamed on it
canary_z        how much worse the newest of two versions serving calls does than the older one in the
                same windows: more errors, or slower answers (:func:`baynet.evidence.changes.canary`;
                anomalous own-work evidence from ``canary_z`` 3, severe from 6 as every deviation)
canary          that comparison in words, naming the versions and their figures
calls           calls that stopped: on a service whose requests fell because its one caller stopped calling
                it, and on that caller (below)
score           the largest of the above deviations: orders services the DBN cannot tell apart
state           propagating state: 0 ok, 1 degraded, 2 failing (latency, errors, rate)
own_state       own-work state: 0 ok, 1 anomalous, 2 severe (resources, network gaps, a failing new version)
points          data points behind the window (0: not measured in this window)
==============  =============================================================================

Own-work (saturation) evidence comes from the resource series that measure saturation: names starting
with ``cpu``, ``mem`` or ``restart`` (:data:`SATURATION`); other resource series (network bytes, disk
I/O) follow the load and are reported but not judged. A request-rate drop counts only when it is
significant for the requests behind it (a Poisson test against the baseline rate): on a service that
gets a handful of calls a minute, "none this minute" is not an outage. Nor is a drop its caller made: where
a service's requests fell while its one caller still received its own requests as before, without failing
more of them, and the caller's own reports of its calls to it (where it counts them) fell too, the caller
stopped calling (an exception or an early return before the call) and the drop's level is the caller's
state, not the callee's (:func:`_stopped_calls`).

Resource rows that name their ``pod``: a pod that first reports after the baseline began is judged
without its warm-up (:func:`without_warmup`, measured on the pod), and also against its own first points
(:func:`fresh_pod_trends`: a new version's leak grows within its pods before it stands out against the
service's baseline).

A window with no points of a series says nothing about it (never silence). When the data's step is
longer than a window, the slices widen to follow the data, and the baseline holds at least ten points of
the step (:mod:`baynet.evidence.steps`); services it cannot judge for want of points are named in a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special

from baynet.evidence.base import Judged
from baynet.evidence.changes import ChangeParams, canary, first_served, newest_version
from baynet.evidence.network import blame
from baynet.evidence.steps import BASELINE_POINTS, baseline_for_step, data_step, slices_for_step

if TYPE_CHECKING:
    from baynet.dbn import DBNModel
    from baynet.settings import Settings
    from baynet.sources.base import Observations
    from baynet.windows import Windows

METRIC_COLUMNS = ["service", "window", "resource_z", "resource", "latency_z", "error_up", "error_z", "rate_ratio",
                  "gap_edges", "canary_z", "canary", "calls", "score", "state", "own_state", "points"]
TEXT_COLUMNS = ("resource", "canary", "calls")
SATURATION = ("cpu", "mem", "restart")
LATENCY_COLUMNS = ["latency_ms_p99", "latency_ms_p90", "latency_ms_p50", "latency_ms_avg"]
Z_CAP = 37.5  # the normal deviation of the smallest tail probability a double holds


@dataclass(frozen=True)
class MetricThresholds:
    """Discretisation of metric deviations into DBN states. Generic, in units of baseline spread."""

    z_anomalous: float = 3.0      # a deviation this many baseline spreads is anomalous / degraded
    z_severe: float = 6.0         # ... severe / failing
    rel_floor: float = 0.05       # spread floor, as a share of the baseline median (constant series)
    degraded_rate: float = 0.5    # request rate below this share of baseline: degraded
    failing_rate: float = 0.2     # ... failing
    degraded_error: float = 0.02  # error-ratio rise that is degraded (when also z_anomalous spreads)
    failing_error: float = 0.20   # ... failing
    saturation_order: float = 0.1  # saturation below this share of the slice's largest is not severe
    ratio_floor: float = 0.005    # spread floor of an error ratio judged without counts (half a point)
    baseline_points: int = BASELINE_POINTS  # the metric baseline holds at least this many points of the step
    t_tails: bool = True          # deviations read against their baseline's points (normal_equivalent); False:
                                  # in plain spreads (the simple baselines' crude rule)


def _window_of(t: np.ndarray, baseline: tuple[float, float], slices: list[tuple[float, float]]) -> np.ndarray:
    out = np.full(len(t), -2, dtype=np.int64)
    out[(t >= baseline[0]) & (t < baseline[1])] = -1
    for i, (lo, hi) in enumerate(slices):
        out[(t > lo) & (t <= hi)] = i  # a metric point stamps the end of the window it measured
    return out


def _deviation(base: np.ndarray, values: np.ndarray, th: MetricThresholds, floor: float = 0.0) -> float:
    """How far the median of ``values`` lies above the baseline, in baseline spreads (negative: below);
    :func:`normal_equivalent` reads it against the number of baseline points."""
    base = base[np.isfinite(base)]
    values = values[np.isfinite(values)]
    if len(base) < 2 or not len(values):
        return 0.0
    center = float(np.median(base))
    spread = max(1.4826 * float(np.median(np.abs(base - center))), float(np.std(base, ddof=1)),
                 th.rel_floor * abs(center), floor, 1e-9)
    spread *= math.sqrt(1.0 + 1.0 / len(base))
    return (float(np.median(values)) - center) / spread


def normal_equivalent(t: float, n: int) -> float:
    """A deviation ``t`` measured against a baseline of ``n`` points, as the normal deviation with the same
    tail probability. The baseline's centre and spread are estimated from those points, so a new point
    deviates from them as Student's t with ``n - 1`` degrees of freedom, whose tails are heavier the fewer
    the points: 4 spreads against ten points are as likely as 2.96 of the normal, against forty 3.64. The
    thresholds (:class:`MetricThresholds`) then mean the same tail probability whatever the data's step and
    baseline length."""
    if not t or n < 2:
        return t
    p = max(float(special.stdtr(n - 1, -abs(t))), 1e-300)
    return math.copysign(-float(special.ndtri(p)), t)


def binomial_z(k: float, n: float, p: float) -> float:
    """How surprising ``k`` or more failed calls of ``n`` are at the ratio ``p``, as the normal deviation with
    that upper tail probability (``k`` may be fractional: counts rebuilt from ratios). The normal approximation
    ``(k - n p) / sqrt(n p (1 - p))`` holds only where ``n p`` is several: against a baseline of no errors
    (``p`` about 0.002) it read one failed call of 29 as 4.3 spreads, "degraded", though it happens by chance
    one time in twenty -- and a mesh of a dozen services over three slices gives chance 36 tries. Below the
    expected count the (negative) approximation stands: only rises are read in the tail."""
    if n <= 0:
        return 0.0
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    expected = n * p
    if k <= expected:
        return (k - expected) / math.sqrt(max(expected * (1.0 - p), 1e-9))
    k = min(k, n)
    return tail_z(float(special.betainc(k, n - k + 1.0, p)))  # P(X >= k), X ~ Binomial(n, p), continuous in k


def tail_z(tail: float) -> float:
    """An upper tail probability as the normal deviation with that tail (at most :data:`Z_CAP`)."""
    return min(-float(special.ndtri(tail)), Z_CAP) if tail > 0 else Z_CAP


def _series_z(frame: pd.DataFrame, key: list[str], value: str, n_slices: int, th: MetricThresholds,
              floor: float = 0.0) -> pd.DataFrame:
    """Per series (``key``) and incident window: the deviation of ``value`` from its baseline, in baseline
    spreads (``t``) and as the normal deviation as likely for a baseline of its points (``z``)."""
    rows = []
    for k, g in frame.groupby(key, sort=False, observed=True):
        w = g["window"].to_numpy()
        v = g[value].to_numpy(dtype=float)
        base = v[w == -1]
        n_base = int(np.isfinite(base).sum())
        for i in range(n_slices):
            here = v[w == i]
            here = here[np.isfinite(here)]
            if len(here):
                t = _deviation(base, here, th, floor)
                z = normal_equivalent(t, n_base) if th.t_tails else t
                rows.append((*((k,) if len(key) == 1 else k), i, z, t, len(here)))
    return pd.DataFrame(rows, columns=[*key, "window", "z", "t", "points"])


def _fresh_pods(resources: pd.DataFrame, baseline_start: float) -> pd.Series:
    """Rows of pods that first report after the baseline began (named pods only): more than one step of the
    data after the baseline's start, or after the frame's first point when the data begin later. A pod
    already running reports from the first point of the data on, which is never exactly the baseline's
    start."""
    pods = resources["pod"].fillna("").astype(str)
    t = resources["time"].to_numpy(dtype=float)
    step = data_step(None, resources) or 0.0
    begins = max(float(baseline_start), float(np.min(t)) if len(t) else float(baseline_start))
    return (pods != "") & (resources.groupby(pods)["time"].transform("min") > begins + step)


def _step_noise(v: np.ndarray) -> float:
    """A series' own point-to-point spread: 1.4826 x MAD of its successive differences / sqrt 2 (robust
    to a trend, which shifts the differences but not their spread)."""
    d = np.diff(v)
    return max(1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2), 1e-9)


def settled_noise(resources: pd.DataFrame, baseline_start: float) -> dict[tuple[str, str], float]:
    """Per service and metric, the point-to-point spread (:func:`_step_noise`) of the pods already running
    when the baseline began: the median over those pods of at least three points. A fresh pod has too few
    points of its own to know its spread at a coarse step (three at one minute), its service's settled
    pods have many, at the same step."""
    settled = resources[(resources["pod"].fillna("").astype(str) != "") & ~_fresh_pods(resources, baseline_start)]
    out: dict[tuple[str, str], list[float]] = {}
    for (svc, metric, _), g in settled.groupby(["service", "metric", "pod"], sort=False):
        v = g.sort_values("time")["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v) >= 3:
            out.setdefault((str(svc), str(metric)), []).append(_step_noise(v))
    return {k: float(np.median(v)) for k, v in out.items()}


def _settled(g: pd.DataFrame, pooled: dict[tuple[str, str], float] | None) -> float | None:
    """The settled pods' spread (:func:`settled_noise`) of a pod's rows ``g``, None where unknown."""
    return (pooled or {}).get((str(g["service"].iloc[0]), str(g["metric"].iloc[0])))


def without_warmup(resources: pd.DataFrame, baseline_start: float,
                   pooled: dict[tuple[str, str], float] | None = None, keep_short: bool = False) -> pd.DataFrame:
    """Resource rows without each fresh pod's warm-up. A pod is fresh when its first point comes after the
    baseline began (a rollout step, a restart). A fresh JVM or cache burns CPU at first and settles, which
    is not the service's fault; a leak grows instead. The warm-up is measured on the pod itself: its
    leading points while each lies above the median of the points after it by more than three
    point-to-point spreads: the pod's own (1.4826 x MAD of its successive differences / sqrt 2, robust to
    a trend) or its service's settled pods' (``pooled``, :func:`settled_noise`), whichever is smaller -- a
    warm-up decays smoothly, and a fault's excess does not decay, so dropping more costs it nothing. A
    leak's first point is below its later ones, so nothing of it is dropped. A fresh pod of fewer
    than three points cannot be told from a warm-up yet and is left out whole -- unless it has two and its
    settled pods' spread is known: then it is kept where its second point is not below its first by more
    than three spreads (a warm-up decays; a fault's excess does not). With ``keep_short`` (for
    :func:`fresh_pod_trends`) a short pod keeps its points, less a first one that lies above its second by
    more than three spreads. Rows without a pod name, and pods already running when the baseline began,
    are kept as they are."""
    fresh = _fresh_pods(resources, baseline_start)
    if not fresh.any():
        return resources
    drop: list = []
    for _, g in resources[fresh].groupby(["pod", "metric"], sort=False):
        g = g.sort_values("time")
        v = g["value"].to_numpy(dtype=float)
        settled = _settled(g, pooled)
        own = _step_noise(v) if len(v) >= 3 else np.inf
        # the smaller spread: a warm-up decays smoothly, and dropping it costs a fault nothing
        noise = own if settled is None else min(own, settled)
        if len(v) < 3 and not keep_short:  # two points are kept only where they do not decay at all
            if settled is None or len(v) < 2 or v[0] > v[1] + 3 * noise:
                drop.extend(g.index)
            continue
        j = 0
        while j < len(v) - 1 and v[j] > float(np.median(v[j + 1:])) + 3 * noise:
            j += 1
        drop.extend(g.index[:j])
    return resources.drop(index=drop)


def fresh_pod_trends(resources: pd.DataFrame, baseline_start: float, n: int,
                     pooled: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """How far each fresh pod (first point after the baseline began, warm-up already removed) has grown
    since its first points, per incident window, in units of a point-to-point spread (its service's settled
    pods' where ``pooled`` knows them, else its own): a leak in a new version grows within the pod long
    before it stands out against the service's baseline (whose spread is floored at a share of its level).
    The largest of a service's fresh pods' growth is read as the largest of that many (:func:`largest_of`).
    Columns ``service, metric, window, z, points``."""
    cols = ["service", "metric", "window", "z", "points"]
    fresh = resources[_fresh_pods(resources, baseline_start)]
    rows = []
    for (_, metric), g in fresh.groupby(["pod", "metric"], sort=False):
        g = g.sort_values("time")
        v, w = g["value"].to_numpy(dtype=float), g["window"].to_numpy()
        # its first points are the reference: two where its own spread is measured on it (four points at
        # least), the first alone where its settled pods' spread is known (two points at least)
        settled = _settled(g, pooled)
        ref = 2 if settled is None else 1
        if len(v) < 2 * ref:
            continue
        noise = _step_noise(v) if settled is None else settled
        start = float(np.median(v[:ref]))
        for i in range(n):
            here = v[(w == i)]
            here = here[np.isfinite(here)]
            if len(here) and np.flatnonzero(w == i)[0] >= ref:
                z = (float(np.median(here)) - start) / (noise * math.sqrt(1.0 / len(here) + 1.0 / ref))
                rows.append((str(g["service"].iloc[0]), str(metric), i, z, len(here)))
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows, columns=cols)
    top = out.loc[out.groupby(["service", "metric", "window"])["z"].idxmax()]
    pods = out.groupby(["service", "metric", "window"])["z"].transform("size").loc[top.index].to_numpy()
    return top.assign(z=[largest_of(z, k) for z, k in zip(top["z"], pods)])


def largest_of(z: float, k: int) -> float:
    """The largest of ``k`` deviations, ``z``, as the single normal deviation as likely (Sidak): the
    largest of five fresh pods' trends reaches 2.0 spreads by chance one time in ten."""
    if k <= 1 or z <= 0:
        return z
    return tail_z(-math.expm1(k * math.log1p(-float(special.ndtr(-z)))))  # 1 - (1 - tail)^k


def _level(z: np.ndarray, th: MetricThresholds) -> np.ndarray:
    return np.where(z >= th.z_severe, 2, np.where(z >= th.z_anomalous, 1, 0))


def build_metric_evidence(signals: pd.DataFrame | None, resources: pd.DataFrame | None,
                          baseline: tuple[float, float], slices: list[tuple[float, float]],
                          thresholds: MetricThresholds = MetricThresholds(),
                          versions: pd.DataFrame | None = None, rollouts: bool = True) -> pd.DataFrame:
    """Per-service, per-window evidence from signal and resource rows (see the module docstring).
    ``versions``: rows per destination version (signals' columns) for the canary test, when the signal
    rows themselves do not carry versions. ``rollouts=False`` judges latency as the simple baselines do
    (:mod:`baynet.lab.baselines`: every version's calls, and the newest version's alone against the service
    before it), not the older versions' apart from the new one's."""
    th, n = thresholds, len(slices)
    parts: list[pd.DataFrame] = []
    if resources is not None and not resources.empty:
        r = resources.assign(window=_window_of(resources["time"].to_numpy(dtype=float), baseline, slices))
        r = r[r["window"] >= -1]
        trends = pd.DataFrame(columns=["service", "metric", "window", "z", "points"])
        if "pod" in r and (r["pod"].fillna("") != "").any():
            pooled = settled_noise(r, baseline[0])
            sat = r[r["metric"].str.lower().str.startswith(SATURATION)]
            trends = fresh_pod_trends(without_warmup(sat, baseline[0], pooled, keep_short=True), baseline[0], n,
                                      pooled)
            r = without_warmup(r, baseline[0], pooled)
        # Several pods of one service: the worst pod decides (a fault is often in one pod).
        r = r.groupby(["service", "metric", "window", "time"], sort=False)["value"].max().reset_index()
        r = r[r["metric"].str.lower().str.startswith(SATURATION)]
        z = _series_z(r, ["service", "metric"], "value", n, th)
        if not trends.empty:
            z = pd.concat([z, trends.assign(t=trends["z"])], ignore_index=True)
            z = z.loc[z.groupby(["service", "metric", "window"])["z"].idxmax()]
        if not z.empty:
            top = z.loc[z.groupby(["service", "window"])["z"].idxmax()]
            parts.append(top.rename(columns={"z": "resource_z", "t": "resource_t", "metric": "resource"}))
    gap_blame = pd.DataFrame(columns=["service", "window", "gap_edges"])
    if signals is not None and not signals.empty:
        s = signals.assign(window=_window_of(signals["time"].to_numpy(dtype=float), baseline, slices))
        s = s[s["window"] >= -1]
        dest = s[s["reporter"] != "source"]
        lat = []
        # During a rollout the older versions' calls give the service's latency: a fresh pod's warm-up is
        # the new version's alone and does not reach them, while a slower callee slows every version. What
        # the new version itself adds, and keeps adding, is the canary's comparison in the same windows
        # (below), which is latency evidence too.
        newest = _newest_version_rows(dest)
        judged = [_without_newest_beside_older(dest)] if rollouts else [dest, newest]
        for frame in (f for f in judged if f is not None):
            for col in LATENCY_COLUMNS:
                if col in frame and frame[col].notna().any():
                    lat.append(_series_z(frame[frame[col].notna()], ["destination", "source"], col, n, th))
        if lat:
            z = pd.concat(lat)
            top = z.groupby(["destination", "window"], as_index=False).agg(latency_z=("z", "max"),
                                                                          points=("points", "max"))
            parts.append(top.rename(columns={"destination": "service"}))
        if "requests" in dest and dest["requests"].notna().any():
            parts.append(_rates_and_errors(dest, n, th))
        counted = set(dest.loc[dest["requests"].notna(), "destination"]) if "requests" in dest else set()
        uncounted = dest[~dest["destination"].isin(counted) & dest["error_ratio"].notna()] \
            if "error_ratio" in dest else dest.iloc[0:0]
        if len(uncounted):
            parts.append(_ratios_without_counts(uncounted, n, th))
        if newest is not None and "error_ratio" in newest:
            parts.append(_newest_errors(newest, n, th))
        gap_blame = _gap_blame(s, n, th)
    canaries = canary(versions if versions is not None else signals, slices)
    if not canaries.empty:
        parts.append(canaries[["service", "window", "canary_z", "canary"]])
        if rollouts:
            parts.append(canaries[["service", "window", "slower_z"]].rename(columns={"slower_z": "latency_z"}))
    if not parts:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    ev = parts[0]
    for p in parts[1:]:
        ev = ev.merge(p, on=["service", "window"], how="outer", suffixes=("", "_2"))
        for twin in [c for c in ev.columns if c.endswith("_2")]:
            col = twin[:-2]  # two parts judged the same column: the worse reading of the two stands
            if col in TEXT_COLUMNS:  # words: the first part's, else the second's
                ev[col] = ev[col].where(ev[col].notna() & (ev[col] != ""), ev[twin])
            else:
                worse = np.fmin if col == "rate_ratio" else np.fmax
                ev[col] = worse(pd.to_numeric(ev[col], errors="coerce"), pd.to_numeric(ev[twin], errors="coerce"))
            ev = ev.drop(columns=[twin])
    ev = ev.merge(gap_blame, on=["service", "window"], how="left")
    services = sorted(set(ev["service"]))
    full = pd.MultiIndex.from_product([services, range(n)], names=["service", "window"])
    ev = ev.set_index(["service", "window"]).reindex(full).reset_index()
    for col, fill in (("resource_z", 0.0), ("resource_t", 0.0), ("latency_z", 0.0), ("error_up", 0.0),
                      ("error_z", 0.0), ("rate_ratio", 1.0), ("gap_edges", 0), ("canary_z", 0.0), ("points", 0)):
        if col not in ev:
            ev[col] = fill
        ev[col] = ev[col].fillna(fill)
    for text in TEXT_COLUMNS:
        if text not in ev:
            ev[text] = ""
        ev[text] = ev[text].fillna("")
    err_level = np.where((ev["error_z"] >= th.z_anomalous) & (ev["error_up"] >= th.failing_error), 2,
                         np.where((ev["error_z"] >= th.z_anomalous) & (ev["error_up"] >= th.degraded_error), 1, 0))
    rate = ev["rate_ratio"].to_numpy()
    rate_level = np.where(rate <= th.failing_rate, 2, np.where(rate <= th.degraded_rate, 1, 0))
    latency_level = _level(ev["latency_z"].to_numpy(), th)
    ev["state"] = np.maximum.reduce([latency_level, err_level, rate_level])
    # a newer version worse than the older in the same windows: anomalous own work from canary_z spreads,
    # severe from z_severe, as every other deviation (a cold start at 3 spreads is not a failing version)
    cz = ev["canary_z"].to_numpy()
    canary_level = np.where(cz >= max(th.z_severe, ChangeParams().canary_z), 2,
                            np.where(cz >= ChangeParams().canary_z, 1, 0))
    ev["own_state"] = np.maximum.reduce([_saturation_level(ev, th), np.minimum(ev["gap_edges"], 2), canary_level])
    if signals is not None and not signals.empty:
        ev = _stopped_calls(ev, s, latency_level, rate_level, err_level, n, th)
    ev["score"] = ev[["resource_z", "latency_z", "error_z", "canary_z"]].clip(lower=0).max(axis=1) + ev["gap_edges"]
    base = pd.DataFrame({"service": services, "window": -1})
    ev = pd.concat([base, ev], ignore_index=True)
    for col in METRIC_COLUMNS:
        if col not in ev:
            ev[col] = 0
    ev[["state", "own_state", "gap_edges", "points"]] = ev[["state", "own_state", "gap_edges", "points"]].fillna(0)
    ev = ev.fillna({"resource": "", "canary": "", "calls": "", "resource_z": 0.0, "latency_z": 0.0, "error_up": 0.0,
                    "error_z": 0.0, "rate_ratio": 1.0, "canary_z": 0.0, "score": 0.0})
    for col in ("state", "own_state", "gap_edges", "points"):
        ev[col] = ev[col].astype(np.int64)
    return ev[METRIC_COLUMNS].sort_values(["service", "window"]).reset_index(drop=True)


def _stopped_calls(ev: pd.DataFrame, s: pd.DataFrame, latency_level: np.ndarray, rate_level: np.ndarray,
                   err_level: np.ndarray, n: int, th: MetricThresholds) -> pd.DataFrame:
    """Requests that fell because the one caller stopped calling: the drop's level moves to the caller.

    A service's request rate fell (``rate_level``) without its errors rising (``err_level``) in a window
    where its only caller (from the rows that name a ``source``) received its own requests as before (no
    drop to the degraded rate), failed no more of them, and -- where the caller reports its calls to the
    service with counts -- sent fewer too. The callee did not fail (its latency, ``latency_level``, still
    counts); the caller did something other than usual before calling (an exception, an early return),
    which its own state now says. A callee that went down while its caller kept calling shows in the
    caller's own reports (calls sent, not received), and keeps its drop."""
    edges = s[(s["source"].fillna("") != "") & (s["source"] != s["destination"])]
    if edges.empty or not rate_level.any() or "requests" not in edges:
        return ev
    callers = edges.groupby("destination")["source"].agg(lambda x: sorted(set(x))).to_dict()
    sent = edges[(edges["reporter"] == "source") & edges["requests"].notna()]
    sent_ratio = {}
    for caller, g in sent.groupby("source"):
        for r in _rates_and_errors(g, n, th).itertuples():
            sent_ratio[(caller, r.service, r.window)] = r.rate_ratio
    row = {(a, int(w)): i for i, (a, w) in enumerate(zip(ev["service"], ev["window"]))}
    state = ev["state"].to_numpy().copy()
    rate = ev["rate_ratio"].to_numpy()
    calls = ev["calls"].to_numpy(dtype=object).copy()
    for i, (svc, w) in enumerate(zip(ev["service"], ev["window"])):
        who = callers.get(svc, [])
        if rate_level[i] == 0 or len(who) != 1:
            continue
        j = row.get((who[0], int(w)))
        if err_level[i] > 0 or j is None or err_level[j] > 0 or rate[j] <= th.degraded_rate or \
                sent_ratio.get((who[0], svc, int(w)), 0.0) > th.degraded_rate:
            continue
        state[i] = latency_level[i]  # the callee keeps its latency
        state[j] = max(state[j], rate_level[i])
        calls[i] = f"requests x{rate[i]:.2f} of the baseline: {who[0]} stopped calling it while its own held"
        calls[j] = (calls[j] + "; " if calls[j] else "") + \
            f"its calls to {svc} stopped (x{rate[i]:.2f}) while its own requests held"
    return ev.assign(state=state, calls=calls)


def _without_newest_beside_older(dest: pd.DataFrame) -> pd.DataFrame:
    """Signal rows without the newest version's in the incident slices where an older version of the same
    service also serves calls (the older versions' latency is the service's during a rollout)."""
    if "destination_version" not in dest:
        return dest
    versioned = dest[dest["destination_version"].fillna("").astype(str) != ""]
    if versioned.empty:
        return dest
    first = first_served(versioned)
    drop = []
    for (svc, _), g in versioned[versioned["window"] >= 0].groupby(["destination", "window"]):
        versions = g["destination_version"].unique()
        if len(versions) > 1:
            drop.extend(g.index[g["destination_version"] == newest_version(svc, versions, first)])
    return dest.drop(index=drop) if drop else dest


def _newest_version_rows(dest: pd.DataFrame) -> pd.DataFrame | None:
    """For each service whose newest version serves calls in the incident beside an older one: its
    baseline rows (every version) and the newest version's incident rows -- the new version's errors
    against the service before it. A canary that serves a fifth of the calls dilutes its own failures in
    the service's figures; judged alone, it is as degraded as it is. (Its latency is judged against the
    older versions' in the same windows instead, :func:`baynet.evidence.changes.version_latency`: judged
    against the service before it, every fresh pod's warm-up read as a slowdown; on the hard rollouts,
    memory leaks 0.57 -> 0.86 with the change in :func:`baynet.analysis.infer.infer`.) None without such
    a service."""
    if "destination_version" not in dest:
        return None
    dest = dest.assign(destination_version=dest["destination_version"].fillna("").astype(str))
    v = dest[(dest["destination_version"] != "") & (dest["window"] >= 0)]
    if v.empty:
        return None
    first = first_served(dest[dest["destination_version"] != ""])
    keep = []
    for svc, g in v.groupby("destination"):
        versions = g["destination_version"].unique()
        if len(versions) < 2:
            continue
        newest = newest_version(svc, versions, first)
        keep.append(dest[(dest["destination"] == svc) & ((dest["window"] == -1)
                                                         | (dest["destination_version"] == newest))])
    return pd.concat(keep) if keep else None


def _newest_errors(newest: pd.DataFrame, n: int, th: MetricThresholds) -> pd.DataFrame:
    """Error evidence of the newest versions alone (:func:`_newest_version_rows`); their rate is a share
    of the service's and says nothing, so it is left at 1."""
    counted = newest[newest["requests"].notna()] if "requests" in newest else newest.iloc[0:0]
    parts = []
    if len(counted):
        parts.append(_rates_and_errors(counted, n, th))
    rest = newest[~newest["destination"].isin(set(counted["destination"])) & newest["error_ratio"].notna()]
    if len(rest):
        parts.append(_ratios_without_counts(rest, n, th))
    if not parts:
        return pd.DataFrame(columns=["service", "window", "error_up", "error_z"])
    return pd.concat(parts)[["service", "window", "error_up", "error_z"]]


def _saturation_level(ev: pd.DataFrame, th: MetricThresholds) -> np.ndarray:
    """Own-work level from saturation: :func:`_level` of ``resource_z``, except that a service whose
    deviation is an order of magnitude (``saturation_order``) below the slice's largest is anomalous, not
    severe. A stressed pod's CPU moves thousands of spreads while its neighbours' move a few (a shared
    node, more traffic); both clearing the severe bar made them equal before. Measured with
    ``baynet eval bundles --sources metrics``: RCD 0.82 -> 1.00 at shares 0.1 and 0.5 (0.96 at 0.02);
    Online Boutique and Train-Ticket the same case by case at all three."""
    level = _level(ev["resource_z"].to_numpy(dtype=float), th)
    # the order of magnitude in baseline spreads: the tail probabilities of thousands of spreads and of tens
    # are both beyond any threshold, their ratio says nothing
    t = ev["resource_t"].to_numpy(dtype=float)
    top = ev.groupby("window")["resource_t"].transform("max").to_numpy(dtype=float)
    return np.where((level == 2) & (t < th.saturation_order * top), 1, level)


def _rates_and_errors(dest: pd.DataFrame, n: int, th: MetricThresholds) -> pd.DataFrame:
    """Request rate (per second of window) and error ratio of the calls to each service."""
    d = dest[dest["requests"].notna()].copy()
    width = d["window_s"].where(d["window_s"] > 0)
    d["rate"] = d["requests"] / width.fillna(1.0)
    d["errors"] = d["requests"] * d["error_ratio"].fillna(0.0) if "error_ratio" in d else 0.0
    d["seconds"] = width.fillna(1.0)
    per = d.groupby(["destination", "window", "time"]).agg(rate=("rate", "sum"), requests=("requests", "sum"),
                                                          errors=("errors", "sum"), seconds=("seconds", "max")
                                                          ).reset_index()
    rows = []
    for svc, g in per.groupby("destination"):
        base = g[g["window"] == -1]
        base_rate = float(base["rate"].median()) if len(base) else float("nan")
        b_req, b_err = float(base["requests"].sum()), float(base["errors"].sum())
        b_ratio = (b_err + 0.5) / (b_req + 1.0)  # a Jeffreys-style estimate: no baseline errors is not 0
        for i in range(n):
            h = g[g["window"] == i]
            if not len(h):
                continue
            ratio = float(h["rate"].median()) / base_rate if base_rate > 0 and len(base) >= 2 else 1.0
            req, err = float(h["requests"].sum()), float(h["errors"].sum())
            expected = base_rate * float(h["seconds"].sum())
            if ratio < 1 and not (expected > 0 and (req - expected) / math.sqrt(expected) <= -th.z_anomalous):
                ratio = 1.0  # a drop the counts cannot tell from chance
            up = err / req - b_err / b_req if req > 0 and b_req > 0 else (err / req if req > 0 else 0.0)
            err_z = binomial_z(err, req, b_ratio)  # evidence grows with the requests behind it
            rows.append((svc, i, ratio, up, err_z))
    return pd.DataFrame(rows, columns=["service", "window", "rate_ratio", "error_up", "error_z"])


def _ratios_without_counts(dest: pd.DataFrame, n: int, th: MetricThresholds) -> pd.DataFrame:
    """Error ratios of services whose calls are not counted: each series (per caller) judged against its own
    baseline spread, floored at :attr:`MetricThresholds.ratio_floor` (a ratio series that never moved in
    the baseline has no spread of its own); the largest rise per service and slice. Without counts the
    binomial test cannot be made, and a request rate cannot be judged at all."""
    z = _series_z(dest, ["destination", "source"], "error_ratio", n, th, floor=th.ratio_floor)
    rise = []
    for (svc, src), g in dest.groupby(["destination", "source"]):
        base = g.loc[g["window"] == -1, "error_ratio"].to_numpy(dtype=float)
        center = float(np.median(base)) if len(base) else 0.0
        for i in range(n):
            here = g.loc[g["window"] == i, "error_ratio"].to_numpy(dtype=float)
            if len(here):
                rise.append((svc, src, i, float(np.median(here)) - center))
    up = pd.DataFrame(rise, columns=["destination", "source", "window", "error_up"])
    both = z.merge(up, on=["destination", "source", "window"])
    top = both.groupby(["destination", "window"], as_index=False).agg(error_z=("z", "max"), error_up=("error_up", "max"))
    return top.rename(columns={"destination": "service"}).assign(rate_ratio=1.0)[
        ["service", "window", "rate_ratio", "error_up", "error_z"]]


def _gap_blame(s: pd.DataFrame, n: int, th: MetricThresholds) -> pd.DataFrame:
    """Grown network gaps per edge (the caller's view of the call minus the callee's), each blamed by
    :func:`baynet.evidence.network.blame` on the endpoint with the larger share of its measured edges grown:
    a delay on one service's network shows on all of its edges, while its busy caller also has edges that
    did not grow. (Blaming the endpoint with more grown edges first put Online Boutique's delays on the
    caller: metrics alone found 6 of its 16 network delays, 9 by share; no other fault changed.)"""
    src = s[(s["reporter"] == "source") & (s["source"] != "")]
    dst = s[(s["reporter"] != "source") & (s["source"] != "")]
    if src.empty or dst.empty:
        return pd.DataFrame(columns=["service", "window", "gap_edges"])
    col = next((c for c in LATENCY_COLUMNS if c in src and src[c].notna().any() and dst[c].notna().any()), None)
    if col is None:
        return pd.DataFrame(columns=["service", "window", "gap_edges"])
    both = src[["source", "destination", "time", "window", col]].merge(
        dst[["source", "destination", "time", col]], on=["source", "destination", "time"], suffixes=("_s", "_d"))
    both["gap"] = both[f"{col}_s"] - both[f"{col}_d"]
    z = _series_z(both, ["source", "destination"], "gap", n, th)
    rows = []
    for w, g in z.groupby("window"):
        grown = g[g["z"] >= th.z_anomalous]
        grown_n = pd.concat([grown["source"], grown["destination"]]).value_counts()
        measured = pd.concat([g["source"], g["destination"]]).value_counts()
        touched = grown_n / measured.reindex(grown_n.index)
        blamed = blame(zip(grown["source"], grown["destination"]), touched.to_dict())
        rows += [(svc, w, len(edges)) for svc, edges in blamed.items()]
    return pd.DataFrame(rows, columns=["service", "window", "gap_edges"])


def aligned_metric_evidence(signals: pd.DataFrame | None, resources: pd.DataFrame | None,
                            baseline: tuple[float, float], slices: list[tuple[float, float]],
                            span_starts: np.ndarray | None = None,
                            thresholds: MetricThresholds = MetricThresholds(),
                            versions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """:func:`build_metric_evidence` on slices that mean the same time as the trace evidence's: the trace
    evidence drops slices without any span (``span_starts``, unix seconds), so the same slices are
    dropped here -- unless no span falls in any of them, when the traces judge no slice and every slice is
    kept; slices widen to follow data coarser than a slice. Returns the evidence and notes."""
    notes = []
    step = data_step(signals, resources)
    wide, why = slices_for_step(signals, resources, slices, step)
    if why:
        notes.append(why)
    if span_starts is not None and len(span_starts):
        # where no span falls in any slice the traces judge none (they say nothing of the incident, as the
        # log evidence reads it too): the metrics then judge every slice rather than none
        wide = [m for m, (lo, hi) in zip(wide, slices) if ((span_starts >= lo) & (span_starts < hi)).any()] or wide
    if not wide:
        return pd.DataFrame(columns=METRIC_COLUMNS), notes
    base = baseline_for_step(baseline, wide[0][0], step, thresholds.baseline_points)
    if base[0] < baseline[0] - 1e-6:
        notes.append(f"metric baseline {base[1] - base[0]:.0f} s ({thresholds.baseline_points} points of the data's "
                     f"step), from {baseline[1] - baseline[0]:.0f} s")
    short = _short_baselines(signals, resources, base)
    if short:
        notes.append(f"metric baseline too short to judge (fewer than 2 points in {base[1] - base[0]:.0f} s): "
                     f"{', '.join(short[:8])}{' …' if len(short) > 8 else ''} -- their deviations read 0, unjudged")
    ev = build_metric_evidence(signals, resources, base, wide, thresholds, versions)
    return ev, notes


def _short_baselines(signals: pd.DataFrame | None, resources: pd.DataFrame | None,
                     base: tuple[float, float]) -> list[str]:
    """Services with rows but fewer than two points in the baseline window (a deviation needs two)."""
    counts: dict[str, int] = {}
    for frame, key in ((signals, "destination"), (resources, "service")):
        if frame is None or frame.empty:
            continue
        t = frame["time"].to_numpy(dtype=float)
        inside = frame.loc[(t >= base[0]) & (t < base[1])].groupby(key)["time"].nunique()
        for svc in frame[key].astype(str).unique():
            counts[svc] = max(counts.get(svc, 0), int(inside.get(svc, 0)))
    return sorted(s for s, c in counts.items() if c < 2 and s)


def judge(observations: "Observations", windows: "Windows", settings: "Settings", model: "DBNModel | None" = None
          ) -> Judged | None:
    """The metric evidence of an incident (None without signal or resource rows), on the slices the trace
    evidence keeps; with version rows (``versions``, else the signals'), the canary test of each
    service's newest version against the older. Call edges: the signal rows that name a source."""
    signals, resources = observations.table("signals"), observations.table("resources")
    if signals is None and resources is None:
        return None
    spans = observations.table("spans")
    starts = spans["start_ns"].to_numpy() / 1e9 if spans is not None else None
    evidence, notes = aligned_metric_evidence(signals, resources, windows.baseline, windows.slices, starts,
                                              versions=observations.table("versions"))
    pairs: set[tuple[str, str]] = set()
    if signals is not None and (signals["source"] != "").any():
        s = signals[signals["source"] != ""]
        pairs = set(zip(s["source"], s["destination"]))
    return Judged("metrics", evidence if not evidence.empty else None, notes, call_edges=pairs)
