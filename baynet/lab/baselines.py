"""Published trace-based RCA methods, written from their papers, as baselines for ``baynet eval``.

* :func:`baro_rank` — in the manner of BARO (Pham, Ha, Zhang: "BARO: Robust Root Cause Analysis for
  Microservices via Multivariate Bayesian Online Change Point Detection", FSE 2024): each service's
  metric is scaled robustly against the normal period (median and inter-quartile range, its
  ``RobustScaler``) and services are ranked by their largest scaled value in the anomalous period. The
  metric here is span self time per operation (RCAEval's trace variant of BARO).
* :func:`microrank_rank` — in the manner of MicroRank (Yu et al.: "MicroRank: End-to-End Latency Issue
  Localization with Extended Spectrum Analysis in Cloud Native Systems", WWW 2021): traces are split
  into anomalous (root latency above the normal 95th percentile of its operation) and normal; a
  personalised PageRank over each set's service call graph weights the services; an Ochiai spectrum
  over the two weights ranks them.
* error rise, latency rise — the crudest rules on metrics: the service whose error ratio (latency) rose
  most, in its own baseline spreads, over the incident slices (services where it did not rise are not
  ranked: a baseline without the signal must not score by alphabetical luck).
* latest change — the service that changed last before the alert ("the latest change did it").
* log errors rise — the service whose WARN/ERROR log lines rose most over what its baseline rate predicts.
* random — the floor; its expected AC@k over ``n`` candidates is ``min(k, n) / n``.

:data:`RANKERS` is the registry ``baynet eval bundles`` runs beside Baynet: each ranker takes the
incident's observations and windows and returns a ranking, or None when the incident lacks its data.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from baynet.evidence.logs import BAD_LEVELS, Templates, keyed
from baynet.evidence.metrics import MetricThresholds, build_metric_evidence
from baynet.evidence.steps import baseline_for_step, data_step, slices_for_step
from baynet.evidence.traces import _annotate, _window_index
from baynet.sources.base import Observations
from baynet.windows import Windows


def _windows(df: pd.DataFrame, baseline: tuple[float, float], slices: list[tuple[float, float]]) -> pd.DataFrame:
    df = _annotate(df)
    df["window"] = _window_index(df["start_ns"], baseline, slices)
    return df[df["window"] >= -1]


def baro_rank(spans: pd.DataFrame, baseline: tuple[float, float], slices: list[tuple[float, float]]) -> list[str]:
    df = _windows(spans, baseline, slices)
    base, inc = df[df["window"] == -1], df[df["window"] >= 0]
    stats = base.groupby(["service", "name"])["self_ns"].agg(
        median="median", iqr=lambda x: x.quantile(0.75) - x.quantile(0.25))
    inc = inc.join(stats, on=["service", "name"])
    inc = inc[inc["median"].notna()]
    # BARO scans the anomalous period for the largest deviation; a high quantile resists single outliers.
    scale = inc["iqr"].where(inc["iqr"] > 0, inc["median"].abs() * 0.1 + 1.0)
    inc = inc.assign(score=(inc["self_ns"] - inc["median"]) / scale)
    scores = inc.groupby("service")["score"].quantile(0.95)
    services = set(df["service"])
    ranked = scores.sort_values(ascending=False).index.tolist()
    return ranked + sorted(services - set(ranked))


def _pagerank(nodes: list[str], edges: dict[tuple[str, str], float], preference: dict[str, float],
              damping: float = 0.85, iterations: int = 100) -> dict[str, float]:
    index = {n: i for i, n in enumerate(nodes)}
    n = len(nodes)
    if n == 0:
        return {}
    m = np.zeros((n, n))
    for (a, b), w in edges.items():
        m[index[b], index[a]] += w  # walk from caller to callee: blame flows downstream
    col = m.sum(axis=0)
    m = np.divide(m, col, out=np.zeros_like(m), where=col > 0)
    p = np.array([preference.get(x, 0.0) for x in nodes])
    p = p / p.sum() if p.sum() > 0 else np.full(n, 1 / n)
    r = np.full(n, 1 / n)
    for _ in range(iterations):
        dangling = r[col == 0].sum()
        r = damping * (m @ r + dangling * p) + (1 - damping) * p
    return dict(zip(nodes, r))


def microrank_rank(spans: pd.DataFrame, baseline: tuple[float, float], slices: list[tuple[float, float]]
                   ) -> list[str]:
    df = _windows(spans, baseline, slices)
    roots = df[df["parent_span_id"] == ""]
    base_roots = roots[roots["window"] == -1]
    p95 = base_roots.groupby("name")["dur_ns"].quantile(0.95)
    inc_roots = roots[roots["window"] >= 0]
    threshold = inc_roots["name"].map(p95).fillna(np.inf)
    anomalous = set(inc_roots.loc[inc_roots["dur_ns"] > threshold, "trace_id"])
    inc = df[df["window"] >= 0]
    services = sorted(set(df["service"]))
    weights = {}
    for label, traces in (("a", anomalous), ("n", set(inc["trace_id"]) - anomalous)):
        part = inc[inc["trace_id"].isin(traces)]
        calls = part[part["parent_service"] != ""]
        edges = calls.groupby(["parent_service", "service"]).size().to_dict()
        edges = {k: float(v) for k, v in edges.items() if k[0] != k[1]}
        cover = part.groupby("service")["trace_id"].nunique()
        pref = {s: float(cover.get(s, 0)) / max(1, len(traces)) for s in services}
        weights[label] = _pagerank(services, edges, pref)
    total_a = sum(weights["a"].values()) or 1.0
    score = {}
    for s in services:
        ef, nf = weights["a"].get(s, 0.0), weights["n"].get(s, 0.0)
        score[s] = ef / math.sqrt(total_a * (ef + nf)) if ef + nf > 0 else 0.0
    return sorted(services, key=lambda s: (-score[s], s))


def metric_rise_ranks(signals: pd.DataFrame | None, resources: pd.DataFrame | None, windows: Windows
                      ) -> dict[str, list[str]]:
    """``error_rise`` and ``latency_rise``: the services whose error ratio (latency) rose most over the
    incident slices, in baseline spreads; ties by name; services where it did not rise are left out."""
    step = data_step(signals, resources)
    slices, _ = slices_for_step(signals, resources, windows.slices, step)
    base = baseline_for_step(windows.baseline, slices[0][0], step)
    # the baseline Baynet's metrics judge against; latency as it was before Baynet judged rollouts' versions
    # apart (every version's calls, and the newest's alone) and in plain spreads (not read against the
    # baseline's number of points), so the crude rule stays as crude as it was
    ev = build_metric_evidence(signals, resources, base, slices, MetricThresholds(t_tails=False), rollouts=False)
    ev = ev[ev["window"] >= 0]
    out = {}
    for name, col in (("error_rise", "error_up"), ("latency_rise", "latency_z")):
        top = ev.groupby("service")[col].max()
        top = top[top > 0]
        out[name] = sorted(top.index, key=lambda s: (-top[s], s))
    return out


def trace_baselines(observations: Observations, windows: Windows) -> dict[str, list[str]]:
    """BARO- and MicroRank-style rankings of the incident's spans (none without spans)."""
    spans = observations.table("spans")
    if spans is None:
        return {}
    return {"baro": baro_rank(spans, windows.baseline, windows.slices),
            "microrank": microrank_rank(spans, windows.baseline, windows.slices)}


def metric_baselines(observations: Observations, windows: Windows) -> dict[str, list[str]]:
    """Error rise and latency rise (none without signal or resource rows)."""
    signals, resources = observations.table("signals"), observations.table("resources")
    if signals is None and resources is None:
        return {}
    return metric_rise_ranks(signals, resources, windows)


def log_baselines(observations: Observations, windows: Windows) -> dict[str, list[str]]:
    """``log_errors_rise``: the services whose WARN/ERROR lines rose most over the incident slices (their
    count there minus what their baseline rate predicts); services where they did not rise are left out."""
    logs = observations.table("logs")
    if logs is None:
        return {}
    lines = keyed(logs, Templates())
    lines = lines[lines["level"].isin(BAD_LEVELS)]
    t = lines["time"].to_numpy(dtype=float)
    lo, hi = windows.incident
    b_lo, b_hi = windows.baseline
    base = lines[(t >= b_lo) & (t < b_hi)].groupby("service").size()
    inc = lines[(t >= lo) & (t < hi)].groupby("service").size()
    excess = inc.sub(base * (hi - lo) / max(b_hi - b_lo, 1.0), fill_value=0.0)
    excess = excess[excess > 0]
    return {"log_errors_rise": sorted(excess.index, key=lambda s: (-excess[s], s))}


def change_baselines(observations: Observations, windows: Windows) -> dict[str, list[str]]:
    """``latest_change``: the changed services, the most recent change (at or before the alert) first --
    "the latest change did it" (none without changes)."""
    from baynet.evidence.changes import change_events

    listed, versions = observations.table("changes"), observations.table("versions")
    if listed is None and versions is None:
        return {}
    events = change_events(listed, versions, windows.baseline)
    events = events[events["time"] <= windows.slices[-1][1]]
    if events.empty:
        return {}
    latest = events.groupby("service")["time"].max()
    return {"latest_change": sorted(latest.index, key=lambda s: (-latest[s], s))}


# Each entry ranks the incident's services by one simple rule per name it returns.
RANKERS: list[Callable[[Observations, Windows], dict[str, list[str]]]] = [trace_baselines, metric_baselines,
                                                                         log_baselines, change_baselines]


def ac_at_k(ranking: list[str], truth: str, k: int) -> float:
    return 1.0 if truth in ranking[:k] else 0.0


def random_ac_at_k(n_candidates: int, k: int) -> float:
    return min(k, n_candidates) / n_candidates if n_candidates else 0.0
