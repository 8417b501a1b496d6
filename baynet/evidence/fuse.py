"""Traces, metrics and logs are observations of the same service states: one evidence frame for the DBN.

The propagating state ``O`` (what callers experience) is one quantity measured twice -- the same
requests, seen in spans or counted by the sidecars -- so it is observed once: from the traces where they
judge the service in that window, from the metrics where they do not. (Taking the worse of the two
counted coarse, lagging metric aggregates against exact spans: on Online Boutique it cost 2 of 41 faults.) The own-work state is observed twice, as two children of the root-cause node: ``own_state``
from the traces (``S``) and ``m_own_state`` from the metrics (``Sm``), so two sources that both see a
service's own fault multiply their evidence. A source that is silent about a service leaves its
observation out (level -1), so the other carries the analysis. The logs' own-work view is a third child of the root-cause node (``l_own_state``, ``Sl``). The frame keeps
every column of each (trace columns first, :data:`EVIDENCE_COLUMNS`), and a ``sources`` column naming
what spoke about each row (``traces``, ``metrics``, ``traces+metrics``, ``...+logs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from baynet.evidence.logs import LOG_EVIDENCE_COLUMNS
from baynet.evidence.metrics import METRIC_COLUMNS
from baynet.evidence.traces import EVIDENCE_COLUMNS

TRACE_DEFAULTS = {"requests": 0, "errors": 0, "error_ratio": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "self_p95_ms": 0.0,
                  "slow_frac": 0.0, "self_slow_frac": 0.0, "fast_frac": 0.0, "shape_frac": 0.0, "rate_ratio": 1.0,
                  "own_error_frac": 0.0, "net_frac": 0.0, "gap_edges": 0, "state": 0, "own_state": 0}


def fuse(traces: pd.DataFrame | None, metrics: pd.DataFrame | None, logs: pd.DataFrame | None = None
         ) -> pd.DataFrame:
    """One frame with ``EVIDENCE_COLUMNS`` (+ ``m_*`` metric and ``l_*`` log columns, ``score`` and
    ``sources``)."""
    out = _fuse_traces_metrics(traces, metrics)
    if logs is None or logs.empty:
        return out
    ll = logs.rename(columns={c: f"l_{c}" for c in LOG_EVIDENCE_COLUMNS if c not in ("service", "window")})
    if out.empty:
        out = ll.copy()
        for col, fill in TRACE_DEFAULTS.items():
            out[col] = fill
        out["own_state"], out["score"], out["sources"] = -1, 0.0, "logs"
    else:
        out = out.merge(ll, on=["service", "window"], how="outer", indicator=True)
        for col, fill in TRACE_DEFAULTS.items():
            out[col] = out[col].fillna(fill)
        only_logs = out["_merge"] == "right_only"
        out.loc[only_logs, "own_state"] = -1
        if "m_own_state" in out:
            out["m_own_state"] = out["m_own_state"].fillna(-1)
        out["sources"] = np.where(only_logs, "logs", np.where(out["_merge"] == "both", out["sources"] + "+logs",
                                                               out["sources"]))
        out["score"] = out["score"].fillna(0.0)
        out = out.drop(columns=["_merge"])
    out["l_own_state"] = out["l_own_state"].fillna(-1)
    # The largest deviation any source saw orders services the DBN cannot tell apart.
    out["score"] = np.maximum(out["score"].to_numpy(dtype=float), out["l_score"].fillna(0.0).to_numpy(dtype=float))
    for col in ("requests", "errors", "gap_edges", "state", "own_state", "l_own_state"):
        out[col] = out[col].astype(np.int64)
    rest = [c for c in out.columns if c not in EVIDENCE_COLUMNS]
    return out[EVIDENCE_COLUMNS + rest].sort_values(["service", "window"]).reset_index(drop=True)


def _fuse_traces_metrics(traces: pd.DataFrame | None, metrics: pd.DataFrame | None) -> pd.DataFrame:
    t = traces if traces is not None and not traces.empty else None
    m = metrics if metrics is not None and not metrics.empty else None
    if t is None and m is None:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS + ["score", "sources"])
    if m is None:
        return t.assign(score=0.0, sources="traces")
    mm = m.rename(columns={c: f"m_{c}" for c in METRIC_COLUMNS if c not in ("service", "window")})
    if t is None:
        out = mm.copy()
        for col, fill in TRACE_DEFAULTS.items():
            out[col] = fill
        out["state"], out["own_state"] = out["m_state"], -1
        out["sources"] = "metrics"
    else:
        out = t.merge(mm, on=["service", "window"], how="outer", indicator=True)
        for col, fill in TRACE_DEFAULTS.items():
            out[col] = out[col].fillna(fill)
        both = out["_merge"] == "both"
        out["sources"] = np.where(both, "traces+metrics", np.where(out["_merge"] == "left_only", "traces", "metrics"))
        out.loc[out["_merge"] == "right_only", "own_state"] = -1
        out["state"] = np.where(out["_merge"] == "right_only", out["m_state"].fillna(0), out["state"])
        out["m_own_state"] = out["m_own_state"].fillna(-1)
        out = out.drop(columns=["_merge"])
    out["score"] = out["m_score"].fillna(0.0)
    for col in ("requests", "errors", "gap_edges", "state", "own_state"):
        out[col] = out[col].astype(np.int64)
    rest = [c for c in out.columns if c not in EVIDENCE_COLUMNS]
    return out[EVIDENCE_COLUMNS + rest].sort_values(["service", "window"]).reset_index(drop=True)


@dataclass
class Levels:
    """The DBN's observations per service and slice: O (``states``), S (``own``, traces), Sm (``metrics``,
    None without metric evidence) and Sl (``logs``, None without log evidence); -1: not observed."""

    states: dict[str, list[int]]
    own: dict[str, list[int]]
    metrics: dict[str, list[int]] | None
    logs: dict[str, list[int]] | None


def states_from_evidence(evidence: pd.DataFrame, services: list[str], n_slices: int | None = None) -> Levels:
    """The DBN's observations in an evidence frame (this module's, or ``evidence.csv`` read back); -1 marks
    an own-work state its source did not observe. ``n_slices`` defaults to the frame's (at least one); a
    frame with only the propagating states (``state``) gives own-work levels of 0."""
    if n_slices is None:
        n_slices = max(int(evidence["window"].max()) + 1 if len(evidence) else 0, 1)
    inc = evidence[evidence["window"] >= 0]
    states = {s: [0] * n_slices for s in services}
    own = {s: [0] * n_slices for s in services}
    own_m = {s: [-1] * n_slices for s in services} if "m_own_state" in inc else None
    own_l = {s: [-1] * n_slices for s in services} if "l_own_state" in inc else None
    for row in inc.itertuples():
        if row.service in states:
            states[row.service][row.window] = int(row.state)
            own[row.service][row.window] = int(getattr(row, "own_state", 0))
            if own_m is not None and not pd.isna(row.m_own_state):
                own_m[row.service][row.window] = int(row.m_own_state)
            if own_l is not None and not pd.isna(row.l_own_state):
                own_l[row.service][row.window] = int(row.l_own_state)
    return Levels(states, own, own_m, own_l)
