"""Spans -> per-service, per-window evidence and per-edge propagation counts.

Columns of the evidence frame (one row per service and window; ``window`` -1 is the baseline,
0..n-1 are the incident slices, oldest first):

=================  ===========================================================================
requests           spans that enter the service (root spans, or whose parent is another service)
errors             entering spans that failed (status error, HTTP >= 500, gRPC server error)
error_ratio        errors / requests
p50_ms, p95_ms     latency of entering spans
self_p95_ms        95th percentile of span self time (duration minus child spans), client spans excluded
slow_frac          share of entering spans slower than baseline mean + 3 sd (log scale, per operation)
self_slow_frac     share of the service's spans whose self time is that far above its baseline
fast_frac          share of the service's own spans far shorter than their operation's baseline (log-duration
                   z < -3, and shorter than every baseline span of the operation: a mode of trivial answers the
                   baseline holds is not one): an early return or a wrong answer rarely shows as slowness
shape_frac         share of spans whose number of child calls differs from the operation's usual
                   count, minus the baseline share (an exception or early return drops children)
rate_ratio         request rate against the baseline rate (1.0 = unchanged, or a drop chance explains: the requests
                   read lie within ``z_rate`` Poisson sds of those the baseline rate leads to expect)
own_error_frac     share of failed spans none of whose children failed (the service's own fault)
net_frac           share of the service's call edges (in and out) whose network gap (caller span minus
                   callee span) grew against the baseline: a delayed service delays all its edges. An edge's
                   gap grew when its median passed ``gap_factor`` x the baseline's + ``gap_floor_ms``; in a
                   sample, only where more than half of its traces did so beyond the sample's chance (``gap_z``
                   standard errors; the calls of one trace move together, so a few traces' calls are not the
                   edge's traffic)
gap_edges          how many grown gaps are blamed on it (on the endpoint with more grown gaps, then
                   the larger share of grown gaps; on a tie, the callee)
state              propagating state for the DBN: 0 ok, 1 degraded, 2 failing (failing too when grown
                   network gaps are blamed on the service: its callers wait for them)
own_state          own-work state for the DBN: 0 ok, 1 anomalous, 2 severe; -1 unknown (no span of the
                   service's own work had ``min_baseline`` baseline spans of its operation to be judged by)
<signal>_lo, _hi   the baseline band of ``p95_ms``, ``self_p95_ms``, ``error_ratio`` and ``rate_ratio``: the
                   lowest and highest value the signal took over the baseline cut into slice-long pieces
                   (the same on every row of a service; empty when fewer than two pieces have data)
=================  ===========================================================================

A span frame with a column ``w`` is a weighted sample (bounded retrieval: ``w`` is one over the chance its
trace was read): ``requests``, ``errors`` and the shares are then weighted estimates for all traffic, while
the thresholds on how much data stands behind a judgement (``min_requests``, ``min_flagged``) count the
spans actually read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from baynet.evidence.base import Judged
from baynet.evidence.network import blame
from baynet.otlp import Span
from baynet.windows import baseline_into_gap

if TYPE_CHECKING:
    from baynet.dbn import DBNModel
    from baynet.settings import Settings
    from baynet.sources.base import Observations
    from baynet.windows import Windows

EVIDENCE_COLUMNS = [
    "service", "window", "requests", "errors", "error_ratio", "p50_ms", "p95_ms", "self_p95_ms",
    "slow_frac", "self_slow_frac", "fast_frac", "shape_frac", "rate_ratio", "own_error_frac", "net_frac", "gap_edges",
    "state", "own_state",
]
BAND_SIGNALS = ["p95_ms", "self_p95_ms", "error_ratio", "rate_ratio"]
BAND_COLUMNS = [f"{c}_{side}" for c in BAND_SIGNALS for side in ("lo", "hi")]
EDGE_COLUMNS = ["caller", "callee", "calls", "child_bad", "both_bad", "caller_bad_alone"]


@dataclass(frozen=True)
class Thresholds:
    """Discretisation of evidence into DBN states. Generic defaults, not fitted to any dataset."""

    z_slow: float = 3.0            # a span is slow when log-duration z-score exceeds this
    log_sd_floor: float = 0.1      # floor on the baseline log-duration spread (~10 %)
    degraded_frac: float = 0.10    # share of slow spans that makes a window degraded
    failing_frac: float = 0.50     # ... failing
    degraded_error: float = 0.02   # error-ratio increase over baseline: degraded
    failing_error: float = 0.20    # ... failing
    degraded_rate: float = 0.5     # request rate below this share of baseline: degraded
    failing_rate: float = 0.2      # ... failing
    shape_frac: float = 0.10       # excess share of spans with an unusual number of child calls
    min_requests: int = 5          # below this many baseline requests a rate drop is not judged
    z_rate: float = 3.0            # a rate drop counts when the requests read lie this many Poisson sds below
                                   # those the baseline rate leads to expect (fewer: chance, or a sample's luck)
    gap_factor: float = 2.0        # a call edge's network gap is anomalous when its median exceeds
    gap_floor_ms: float = 10.0     # baseline median x gap_factor + gap_floor_ms
    min_calls: int = 5             # calls an edge needs in a window before its gap is judged
    gap_z: float = 2.0             # ... and, in a sample, when the share of its traces past that bound exceeds
                                   # one half by this many standard errors (a sample's luck, or a few traces'
                                   # calls, is not a grown gap)
    min_flagged: int = 3           # fewer slow/odd spans than this in a window is noise, not a share
    min_baseline: int = 3          # baseline spans an operation needs before its spans are judged against it
    min_gap_baseline: int = 2      # baseline calls an edge needs before its gaps are pooled (_pooled_gaps)
    gap_min_growth_ms: float = 1.0  # a call's gap grew only by more than this past its edge's baseline largest
    gap_anomalous: float = 3.0     # -log10 p of the pooled gap test: anomalous own work (the network)
    gap_severe: float = 6.0        # ... severe


def spans_frame(spans: list[Span]) -> pd.DataFrame:
    """Columnar form of spans (one row per span)."""
    n = len(spans)
    return pd.DataFrame({
        "trace_id": [s.trace_id for s in spans],
        "span_id": [s.span_id for s in spans],
        "parent_span_id": [s.parent_span_id for s in spans],
        "service": [s.service for s in spans],
        "name": [s.name for s in spans],
        "start_ns": np.fromiter((s.start_ns for s in spans), dtype=np.int64, count=n),
        "end_ns": np.fromiter((s.end_ns for s in spans), dtype=np.int64, count=n),
        "failed": np.fromiter((s.failed for s in spans), dtype=bool, count=n),
    })


def trace_codes(df: pd.DataFrame) -> np.ndarray:
    """An integer per span naming its trace: the columnar parsers' ``trace_code`` where the frame has it, else
    factorised trace ids."""
    if "trace_code" in df:
        return df["trace_code"].to_numpy()
    return pd.factorize(df["trace_id"])[0].astype(np.int64)


def span_keys(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys (trace code x id code) of each span and of its parent, equal where a parent id names a
    span of the same trace: the codes of the columnar parsers (``baynet.otlp_fast.SpanBatch``,
    ``otlp.trace_columns``) where the frame has them, else factorised ids."""
    n, tcode = len(df), trace_codes(df)
    if "span_code" in df:
        scode, pcode = df["span_code"].to_numpy(), df["parent_code"].to_numpy()
        width = int(max(scode.max(initial=0), pcode.max(initial=0))) + 1
    else:
        icode, uniques = pd.factorize(pd.concat([df["span_id"], df["parent_span_id"]], ignore_index=True))
        scode, pcode, width = icode[:n], icode[n:], max(1, len(uniques))
    return tcode * width + scode, tcode * width + pcode


def _annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add duration, self time, child counts, the parent's row and service to each span.

    Spans are matched to their parents through integer keys (trace code x id code), not strings, and
    per-parent sums are bincounts over the parent's row (``prow``, -1 when the parent is not here):
    this is the hot path of evidence building."""
    n = len(df)
    key, pkey = span_keys(df)
    rows = np.argsort(key, kind="stable")  # keys[i] is the key of row rows[i]
    keys = key[rows]
    first = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, dtype=bool)
    if not first.all():  # a span reported twice counts once (its first report)
        keep = np.zeros(n, dtype=bool)
        keep[rows[first]] = True
        df = df[keep].reset_index(drop=True)
        key, pkey = key[keep], pkey[keep]
        rows = np.argsort(key, kind="stable")
        keys = key[rows]
    n = len(df)
    has_parent = (df["parent_span_id"] != "").to_numpy()
    dur = np.clip(df["end_ns"].to_numpy() - df["start_ns"].to_numpy(), 0, None)
    # Only what evidence (and the baselines: trace and parent ids) read from here on: every later row
    # selection copies every column.
    df = df[["trace_id", "parent_span_id", "service", "name", "start_ns", "failed"]
            + (["w"] if "w" in df else [])].copy()
    pos = np.minimum(np.searchsorted(keys, pkey), len(keys) - 1)
    found = has_parent & (keys[pos] == pkey)
    prow = np.where(found, rows[pos], -1)
    df["prow"] = prow
    service = df["service"].astype("category")  # grouped on again and again: factorise once
    df["service"] = service
    df["name"] = df["name"].astype("category")
    df["dur_ns"] = dur
    parents = prow[found]
    df["children"] = np.bincount(parents, minlength=n).astype(np.int64)
    df["child_failed"] = np.bincount(parents, weights=df["failed"].to_numpy()[found], minlength=n) > 0
    df["self_ns"] = np.clip(dur - np.bincount(parents, weights=dur[found], minlength=n), 0, None)
    svc = service.cat.codes.to_numpy()
    parent_svc = np.where(found, svc[np.maximum(prow, 0)], -1)
    names = np.asarray(service.cat.categories, dtype=object)
    df["parent_service"] = np.where(found, names[np.maximum(parent_svc, 0)], "")
    df["parent_svc"] = parent_svc  # the same as a code of the service categories (-1: none); joins use it
    entry = parent_svc != svc
    df["entry"] = entry
    # A client span: every child is another service's entry. Its self time is the network gap, which
    # is judged per call edge (_gap_evidence), not as the caller's own work.
    remote = np.bincount(prow[found & entry], minlength=n)
    df["client"] = (df["children"].to_numpy() > 0) & (remote == df["children"].to_numpy())
    return df


def _keep(df: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """Rows of ``df`` where ``mask``, with ``prow`` renumbered (a parent dropped reads -1)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return df
    new_row = np.cumsum(mask) - 1
    prow = df["prow"].to_numpy()
    kept_parent = (prow >= 0) & mask[np.maximum(prow, 0)]
    out = df[mask].copy()
    out["prow"] = np.where(kept_parent, new_row[np.maximum(prow, 0)], -1)[mask]
    return out.reset_index(drop=True)


def _window_index(start_ns: pd.Series, baseline: tuple[float, float], slices: list[tuple[float, float]]
                  ) -> np.ndarray:
    t = start_ns.to_numpy() / 1e9
    out = np.full(len(t), -2, dtype=np.int64)
    out[(t >= baseline[0]) & (t < baseline[1])] = -1
    for i, (lo, hi) in enumerate(slices):
        out[(t >= lo) & (t < hi)] = i
    return out


def build_evidence(spans: list[Span] | pd.DataFrame, baseline: tuple[float, float],
                   slices: list[tuple[float, float]], thresholds: Thresholds = Thresholds()
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(evidence, edges)``: per-service-window evidence and per-call-edge counts.

    ``baseline`` and each of ``slices`` are ``(start, end)`` in unix seconds.
    """
    df = spans if isinstance(spans, pd.DataFrame) else spans_frame(spans)
    covered = df.attrs.get("covered")  # a sample's sub-windows with data (bounded retrieval)
    if df.empty:
        return pd.DataFrame(columns=EVIDENCE_COLUMNS + BAND_COLUMNS), pd.DataFrame(columns=EDGE_COLUMNS)
    df = _annotate(df)
    baseline = baseline_into_gap(df["start_ns"].to_numpy() / 1e9, baseline, slices) or baseline
    df["window"] = _window_index(df["start_ns"], baseline, slices)
    df = _keep(df, df["window"].to_numpy() >= -1)
    # A slice with no spans at all is a gap in the data, not silence of every service: drop it.
    present = sorted(w for w in df["window"].unique() if w >= 0)
    if len(present) < len(slices):
        renumber = {old: new for new, old in enumerate(present)}
        slices = [slices[w] for w in present]
        df["window"] = df["window"].map(lambda w: renumber.get(w, w))
    th = thresholds

    # Baseline per operation: log-duration and log-self-time mean/sd, usual child count.
    log_dur = np.log(df["dur_ns"].to_numpy(dtype=float) + 1e3)
    log_self = np.log(df["self_ns"].to_numpy(dtype=float) + 1e3)
    window = df["window"].to_numpy()
    in_base = window == -1
    if not in_base.any():  # no baseline: judge the incident slices against the first slice
        in_base = window == 0
    n_names = len(df["name"].cat.categories)
    op = df["service"].cat.codes.to_numpy().astype(np.int64) * n_names + df["name"].cat.codes.to_numpy()
    children = df["children"].to_numpy()
    stats = pd.DataFrame({"op": op[in_base], "log_dur": log_dur[in_base], "log_self": log_self[in_base],
                          "children": children[in_base]}).groupby("op").agg(
        mu=("log_dur", "mean"), sd=("log_dur", "std"), mu_self=("log_self", "mean"), sd_self=("log_self", "std"),
        usual_children=("children", lambda c: int(c.mode().iloc[0])), n=("log_dur", "size"),
        least=("log_dur", "min"))

    def per_span(column: str, fill: float) -> np.ndarray:
        dense = np.full(int(op.max(initial=0)) + 1, fill, dtype=float)
        dense[stats.index.to_numpy()] = stats[column].to_numpy(dtype=float)
        return dense[op]

    mu, mu_self = per_span("mu", np.nan), per_span("mu_self", np.nan)
    # An operation judged against fewer baseline spans than min_baseline has no usual duration to speak of.
    known = ~np.isnan(mu) & (per_span("n", 0.0) >= th.min_baseline)
    sd = np.maximum(np.nan_to_num(per_span("sd", 0.0)), th.log_sd_floor)
    sd_self = np.maximum(np.nan_to_num(per_span("sd_self", 0.0)), th.log_sd_floor)
    client, failed = df["client"].to_numpy(), df["failed"].to_numpy()
    child_failed = df["child_failed"].to_numpy()
    with np.errstate(invalid="ignore"):
        z = (log_dur - mu) / sd
        z_self = (log_self - mu_self) / sd_self
    df["slow"] = known & (z > th.z_slow)
    # Far shorter than usual: an early return or a wrong answer (exceptions rarely show as slowness) -- and
    # shorter than any span of the operation in the baseline: an operation with a mode of trivial answers
    # (a cache hit, an empty page) has them below its mean - 3 sd every day, and whether that mode counted as
    # "fast" flipped with the sd a sample of the baseline gave.
    df["fast"] = known & ~client & (z < -th.z_slow) & (log_dur < per_span("least", -np.inf))
    df["self_slow"] = known & ~client & (z_self > th.z_slow)
    # A failed child explains an early return, so only spans whose children were fine count here.
    df["odd_shape"] = known & (children != per_span("usual_children", -1.0)) & ~child_failed
    df["bad"] = failed | df["slow"].to_numpy()
    df["own_error"] = failed & ~child_failed

    entry = df.loc[df["entry"].to_numpy(), ["service", "window", "failed", "dur_ns", "slow"]]
    g_entry = entry.groupby(["service", "window"], observed=True)
    g_all = df.groupby(["service", "window"], observed=True)
    ev = pd.DataFrame({
        "requests": g_entry.size(),
        "n_requests": g_entry.size(),
        "errors": g_entry["failed"].sum(),
        "p50_ms": g_entry["dur_ns"].quantile(0.5) / 1e6,
        "p95_ms": g_entry["dur_ns"].quantile(0.95) / 1e6,
        "slow_frac": g_entry["slow"].mean(),
        "slow_n": g_entry["slow"].sum(),
    })
    df["judged"] = known
    own_work = df.loc[~client, ["service", "window", "self_ns", "self_slow", "fast", "judged"]].groupby(
        ["service", "window"], observed=True)
    ev = ev.join(pd.DataFrame({
        "self_p95_ms": own_work["self_ns"].quantile(0.95) / 1e6,
        "self_slow_frac": own_work["self_slow"].mean(),
        "self_slow_n": own_work["self_slow"].sum(),
        "fast_frac": own_work["fast"].mean(),
        "fast_n": own_work["fast"].sum(),
        "judged_n": own_work["judged"].sum(),
        "odd_shape": g_all["odd_shape"].mean(),
        "odd_shape_n": g_all["odd_shape"].sum(),
        "own_errors": g_all["own_error"].sum(),
        "failed_spans": g_all["failed"].sum(),
    }), how="outer")
    sampled = "w" in df and not np.allclose(df["w"].to_numpy(), 1.0)
    if sampled:
        weighted = _weighted(df, client)
        ev[list(weighted.columns)] = ev[list(weighted.columns)].astype(float)
        ev.update(weighted)  # a sample (bounded retrieval): each trace stands for 1/rate of them
    # Every service seen anywhere gets a row in every window: silence is evidence too.
    services = sorted(map(str, df["service"].unique()))
    windows = [-1] + list(range(len(slices)))
    ev.index = ev.index.set_levels(ev.index.levels[0].astype(str), level=0)
    ev = ev.reindex(pd.MultiIndex.from_product([services, windows], names=["service", "window"]))
    ev[["requests", "n_requests", "errors", "own_errors", "failed_spans"]] = ev[
        ["requests", "n_requests", "errors", "own_errors", "failed_spans"]].fillna(0)
    ev["error_ratio"] = np.where(ev["requests"] > 0, ev["errors"] / ev["requests"].clip(lower=1), 0.0)
    ev["own_error_frac"] = np.where(ev["failed_spans"] > 0, ev["own_errors"] / ev["failed_spans"].clip(lower=1),
                                    0.0)
    ev = ev.reset_index()

    base_ev = ev[ev["window"] == -1].set_index("service")
    # Rates per second of data actually present (the span extent of the window, over all services), so
    # partly covered windows compare fairly; a service's own drop still shows against the others.
    # A sample (bounded retrieval) covers the sub-windows in which its searches found data, however late
    # in a sub-window its newest traces start; without that record, the whole windows.
    by_window = df.groupby("window")["start_ns"]
    extent = (by_window.max() - by_window.min()) / 1e9
    if sampled:
        def cover(lo: float, hi: float) -> float:
            return hi - lo if covered is None else sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in covered)

        extent = pd.Series({-1: cover(*baseline), **{i: cover(lo, hi) for i, (lo, hi) in enumerate(slices)}})
    base_len = max(1.0, min(baseline[1] - baseline[0], float(extent.get(-1, 0.0))))
    base_rate = base_ev["requests"] / base_len
    ev["rate_ratio"] = 1.0
    ev["shape_frac"] = 0.0
    for i, (lo, hi) in enumerate(slices):
        rows = ev["window"] == i
        seconds = max(1.0, min(hi - lo, float(extent.get(i, 0.0))))
        requests, read = ev.loc[rows, "requests"].to_numpy(), ev.loc[rows, "n_requests"].to_numpy()
        b = ev.loc[rows, "service"].map(base_rate).to_numpy()
        # judged on the requests read, not the estimate: evidence strength is the data behind it
        judged = ev.loc[rows, "service"].map(base_ev["n_requests"]).fillna(0).to_numpy() >= th.min_requests
        ratio = np.where(judged & (b > 0), requests / seconds / np.where(b > 0, b, 1), 1.0)
        # A drop counts where the requests read are too few for chance: against the baseline rate times the
        # share of them read (the service's own in a sample, else the slice's; 1 for a full read).
        share = np.where(requests > 0, read / np.where(requests > 0, requests, 1),
                         read.sum() / requests.sum() if requests.sum() > 0 else 1.0)
        expected = b * seconds * share
        chance = read - expected > -th.z_rate * np.sqrt(np.maximum(expected, 1e-9))
        ev.loc[rows, "rate_ratio"] = np.where((ratio < 1) & chance, 1.0, ratio)
        base_shape = ev.loc[rows, "service"].map(base_ev["odd_shape"]).fillna(0).to_numpy()
        ev.loc[rows, "shape_frac"] = np.clip(ev.loc[rows, "odd_shape"].fillna(0).to_numpy() - base_shape, 0, 1)
    # Shares resting on fewer than min_flagged spans are noise (one slow span of ten is not 10 % slow).
    for frac, count in (("slow_frac", "slow_n"), ("self_slow_frac", "self_slow_n"), ("shape_frac", "odd_shape_n"),
                        ("fast_frac", "fast_n")):
        ev[frac] = ev[frac].fillna(0.0).where(ev[count].fillna(0) >= th.min_flagged, 0.0)
    base_err = ev["service"].map(base_ev["error_ratio"]).fillna(0).to_numpy()
    ev["state"] = _state(ev, base_err, th)
    calls, names = _call_gaps(df, sampled)
    gaps = _gap_evidence(calls, names, th)
    pooled = _pooled_gaps(calls, names, th)
    ev["net_frac"] = [gaps.get((s, w), (0.0, 0))[0] for s, w in zip(ev["service"], ev["window"])]
    ev["gap_edges"] = [max(gaps.get((s, w), (0.0, 0))[1], pooled.get((s, w), (0, 0.0))[0])
                       for s, w in zip(ev["service"], ev["window"])]
    ev["gap_score"] = [pooled.get((s, w), (0, 0.0))[1] for s, w in zip(ev["service"], ev["window"])]
    ev["own_state"] = _own_state(ev, base_err, th)
    # Too few of the service's spans had a baseline to be judged against for a share of them to count
    # (min_flagged), and nothing else (own errors, network gaps) spoke: its own work is unknown in that
    # window, not ok -- "ok" is a judgement only where the data could have said otherwise.
    unjudged = (ev["judged_n"].fillna(0).to_numpy() < th.min_flagged) & (ev["own_state"].to_numpy() == 0)
    ev["own_state"] = np.where(unjudged, -1, ev["own_state"].to_numpy())
    # What callers experience from a service includes the network in front of it.
    ev["state"] = np.where(ev["gap_edges"].to_numpy() > 0, 2, ev["state"].to_numpy())
    base_rows = ev["window"] == -1
    ev.loc[base_rows, ["state", "own_state"]] = 0
    for col in ("p50_ms", "p95_ms", "self_p95_ms"):
        ev[col] = ev[col].fillna(0.0)

    band = _baseline_band(df, client, baseline, slices, base_rate, th)
    ev = ev.join(band, on="service") if not band.empty else ev.assign(**{c: np.nan for c in BAND_COLUMNS})
    edges = _edge_counts(_keep(df, df["window"].to_numpy() >= 0))
    out = ev[EVIDENCE_COLUMNS + BAND_COLUMNS].copy()
    out.attrs["baseline"] = baseline  # the baseline judged against (run on into the gap where too short)
    return out, edges


def _baseline_band(df: pd.DataFrame, client: np.ndarray, baseline: tuple[float, float],
                   slices: list[tuple[float, float]], base_rate: pd.Series, th: Thresholds) -> pd.DataFrame:
    """Per service, the range of :data:`BAND_SIGNALS` over the baseline cut into pieces as long as a slice:
    how far the signal wanders when nothing is wrong (drawn as the band on the report's charts). Latency
    and error ratio count a piece only with ``min_requests`` entering spans behind it; the request rate
    counts every piece of the baseline's extent, a silent piece as 0."""
    piece = float(np.mean([hi - lo for lo, hi in slices])) if slices else 0.0
    in_base = df["window"].to_numpy() == -1
    if piece <= 0 or not in_base.any():
        return pd.DataFrame(columns=BAND_COLUMNS)
    t = df["start_ns"].to_numpy()[in_base] / 1e9
    first, last = max(baseline[0], t.min()), min(baseline[1], t.max())
    n_pieces = int((last - first) // piece)
    if n_pieces < 2:
        return pd.DataFrame(columns=BAND_COLUMNS)
    idx = np.floor((t - first) / piece).astype(np.int64)
    part = df.loc[in_base, ["service", "failed", "dur_ns", "self_ns", "entry"]].assign(
        piece=idx, own=~client[in_base], w=df["w"].to_numpy()[in_base] if "w" in df else 1.0)
    part = part[(part["piece"] >= 0) & (part["piece"] < n_pieces)]
    entry = part[part["entry"]]
    g = entry.assign(werr=entry["w"] * entry["failed"]).groupby(["service", "piece"], observed=True)
    per = pd.DataFrame({"n": g.size(), "req": g["w"].sum(), "err": g["werr"].sum(),
                        "p95_ms": g["dur_ns"].quantile(0.95) / 1e6})
    per["self_p95_ms"] = part[part["own"]].groupby(["service", "piece"], observed=True)["self_ns"].quantile(0.95) / 1e6
    per = per.reset_index()
    per["service"] = per["service"].astype(str)
    enough = per["n"] >= th.min_requests
    per["error_ratio"] = (per["err"] / per["req"]).where(enough)
    per["p95_ms"] = per["p95_ms"].where(enough)
    per["self_p95_ms"] = per["self_p95_ms"].where(enough)
    rates = per.pivot_table(index="service", columns="piece", values="req", aggfunc="sum", fill_value=0.0)
    rates = rates.reindex(columns=range(n_pieces), fill_value=0.0) / piece
    ratio = rates.div(rates.index.map(base_rate).to_numpy(), axis=0).where(lambda r: np.isfinite(r))
    out = {}
    for col in ("p95_ms", "self_p95_ms", "error_ratio"):
        agg = per.dropna(subset=[col]).groupby("service")[col].agg(["min", "max", "size"])
        agg = agg[agg["size"] >= 2]
        out[f"{col}_lo"], out[f"{col}_hi"] = agg["min"], agg["max"]
    out["rate_ratio_lo"], out["rate_ratio_hi"] = ratio.min(axis=1), ratio.max(axis=1)
    return pd.DataFrame(out).reindex(columns=BAND_COLUMNS)


def _weighted(df: pd.DataFrame, client: np.ndarray) -> pd.DataFrame:
    """Counts and shares of a weighted sample (column ``w``, one over each trace's chance of being read):
    counts are sums of weights, shares weighted means. Quantiles and the ``*_n`` counts (how many flagged
    spans stand behind a share) stay as read."""
    w = df["w"].to_numpy(dtype=float)
    cols = {"w": w, "service": df["service"], "window": df["window"]}
    entry = df["entry"].to_numpy()
    own = ~client
    for name, values, mask in (("req", np.ones(len(df)), entry), ("err", df["failed"].to_numpy(), entry),
                               ("slow", df["slow"].to_numpy(), entry), ("own_w", np.ones(len(df)), own),
                               ("self_slow", df["self_slow"].to_numpy(), own), ("fast", df["fast"].to_numpy(), own),
                               ("odd", df["odd_shape"].to_numpy(), None), ("own_err", df["own_error"].to_numpy(), None),
                               ("failed", df["failed"].to_numpy(), None)):
        cols[name] = w * values.astype(float) * (mask if mask is not None else 1)
    sums = pd.DataFrame(cols).groupby(["service", "window"], observed=True).sum()

    def share(num: str, den: str) -> pd.Series:
        return (sums[num] / sums[den]).where(sums[den] > 0)

    return pd.DataFrame({"requests": sums["req"], "errors": sums["err"], "slow_frac": share("slow", "req"),
                         "self_slow_frac": share("self_slow", "own_w"), "fast_frac": share("fast", "own_w"),
                         "odd_shape": share("odd", "w"), "own_errors": sums["own_err"],
                         "failed_spans": sums["failed"]})


def _state(ev: pd.DataFrame, base_err: np.ndarray, th: Thresholds) -> np.ndarray:
    err_up = ev["error_ratio"].to_numpy() - base_err
    slow = ev["slow_frac"].to_numpy()
    rate = ev["rate_ratio"].to_numpy()
    failing = (err_up >= th.failing_error) | (slow >= th.failing_frac) | (rate <= th.failing_rate)
    degraded = (err_up >= th.degraded_error) | (slow >= th.degraded_frac) | (rate <= th.degraded_rate)
    return np.where(failing, 2, np.where(degraded, 1, 0)).astype(np.int64)


def _level(value: np.ndarray, anomalous: float, severe: float) -> np.ndarray:
    return np.where(value >= severe, 2, np.where(value >= anomalous, 1, 0))


def _own_state(ev: pd.DataFrame, base_err: np.ndarray, th: Thresholds) -> np.ndarray:
    """0 ok, 1 anomalous, 2 severe: the worst of self time, trace shape, own errors and network gaps."""
    own_err = np.where(ev["own_error_frac"].to_numpy() >= 0.5, ev["error_ratio"].to_numpy() - base_err, 0.0)
    net = np.maximum(np.minimum(ev["gap_edges"].to_numpy(), 2),
                     _level(ev["gap_score"].to_numpy(), th.gap_anomalous, th.gap_severe))
    return np.maximum.reduce([
        _level(ev["self_slow_frac"].to_numpy(), th.degraded_frac, th.failing_frac),
        _level(ev["shape_frac"].to_numpy(), th.shape_frac, th.failing_frac),
        _level(ev["fast_frac"].to_numpy(), th.degraded_frac, th.failing_frac),
        _level(own_err, th.degraded_error, th.failing_error),
        net,
    ]).astype(np.int64)


def _call_gaps(df: pd.DataFrame, sampled: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Every call between two services: caller and callee (integer codes into the returned names: cheap to
    group), window, gap (the caller's span minus the callee's, ms, at least 0) and, in a sample, ``w`` (its
    trace's weight) and ``trace`` (its trace's code)."""
    prow = df["prow"].to_numpy()
    cross = df["entry"].to_numpy() & (prow >= 0)
    dur = df["dur_ns"].to_numpy()
    names = np.asarray(df["service"].cat.categories, dtype=object)
    calls = pd.DataFrame({"caller": df["parent_svc"].to_numpy()[cross],
                          "callee": df["service"].cat.codes.to_numpy()[cross],
                          "window": df["window"].to_numpy()[cross],
                          "gap_ms": np.clip(dur[prow[cross]] - dur[cross], 0, None) / 1e6})
    if sampled:
        calls["w"] = df["w"].to_numpy(dtype=float)[cross]
        calls["trace"] = trace_codes(df)[cross]
    return calls, names


def _medians(calls: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per caller, callee and window: the ``median`` of ``value`` and the ``size`` (calls read). In a sample
    (column ``w``) the median is weighted: the traces a stratum over-reads (a rare service's top-ups, the
    error search) would otherwise pull it towards their own calls."""
    keys = ["caller", "callee", "window"]
    if "w" not in calls:
        return calls.groupby(keys)[value].agg(["median", "size"])
    c = calls.sort_values(keys + [value])
    cum = c.groupby(keys)["w"].cumsum().to_numpy()
    half = c.groupby(keys)["w"].transform("sum").to_numpy() / 2
    first_past = c[cum >= half].groupby(keys)[value].first()
    return pd.DataFrame({"median": first_past, "size": c.groupby(keys).size()})


def _pooled_gaps(gap: pd.DataFrame, names: np.ndarray, th: Thresholds) -> dict[tuple[str, int], tuple[int, float]]:
    """Network gaps that hold at low traffic: every call on every edge, pooled. A call's gap (caller span
    minus callee span) has grown when it exceeds the largest gap its edge showed in the baseline: under no
    change that happens with probability ``1 / (n + 1)`` for an edge of ``n`` baseline calls, whatever the
    gaps' distribution. Each edge whose calls grew more often than that (a binomial test) is blamed by
    :func:`baynet.evidence.network.blame`, shares counted over an endpoint's calls on all its edges; per service and slice, the calls of
    the edges blamed on it are pooled into one binomial test: ``(edges blamed, -log10 p)``. A pod whose
    calls in both directions grew is found even when each edge alone is too thin to judge."""
    from scipy import stats

    if gap.empty:
        return {}
    calls = gap.assign(caller=names[gap["caller"].to_numpy()], callee=names[gap["callee"].to_numpy()])
    calls = calls.rename(columns={"gap_ms": "gap"})
    base = calls[calls["window"] == -1].groupby(["caller", "callee"])["gap"].agg(["max", "size"])
    base = base[base["size"] >= th.min_gap_baseline]
    inc = calls[calls["window"] >= 0].join(base, on=["caller", "callee"], how="inner")
    if inc.empty:
        return {}
    inc["grown"] = inc["gap"] > inc["max"] + th.gap_min_growth_ms
    inc["p0"] = 1.0 / (inc["size"] + 1.0)
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for w, g in inc.groupby("window"):
        edges = g.groupby(["caller", "callee"]).agg(k=("grown", "sum"), n=("grown", "size"), p0=("p0", "first"))
        # Edges with calls enough to be judged on their own (_gap_evidence) are left to that rule.
        edges = edges[edges["n"] < th.min_calls]
        edges["p"] = [float(stats.binom.sf(k - 1, n, p0)) if k else 1.0 for k, n, p0 in
                      zip(edges["k"], edges["n"], edges["p0"])]
        grown = edges[edges["p"] < 0.05]
        if grown.empty:
            continue
        share: dict[str, list[int]] = {}
        for (a, b), e in edges.iterrows():
            for svc in (a, b):
                k_n = share.setdefault(svc, [0, 0])
                k_n[0] += int(e["k"])
                k_n[1] += int(e["n"])
        for svc, pairs in blame(grown.index, {svc: k / n for svc, (k, n) in share.items()}).items():
            items = [(int(grown.loc[e, "k"]), int(grown.loc[e, "n"]), float(grown.loc[e, "p0"])) for e in pairs]
            k = sum(i[0] for i in items)
            n = sum(i[1] for i in items)
            p0 = sum(i[2] * i[1] for i in items) / n
            p = float(stats.binom.sf(k - 1, n, p0))
            out[(svc, int(w))] = (len(items), -math.log10(max(p, 1e-300)))
    return out


def _gap_evidence(gap: pd.DataFrame, names: np.ndarray, th: Thresholds) -> dict[tuple[str, int], tuple[float, int]]:
    """Network gaps: per call edge, the caller's span minus the callee's span. A delayed service delays
    every edge it touches, a neighbour only the one edge to it, so per service and window this returns
    (share of its judged edges whose gap grew, number of such edges)."""
    if gap.empty:
        return {}
    med = _medians(gap, "gap_ms")
    med.index = med.index.set_levels([names[med.index.levels[0]], names[med.index.levels[1]]], level=[0, 1])
    code = {str(n): i for i, n in enumerate(names)}
    out: dict[tuple[str, int], tuple[float, int]] = {}
    windows = sorted(w for w in gap["window"].unique() if w >= 0)
    for w in windows:
        touched: dict[str, list[int]] = {}
        bad_edges = []
        for (caller, callee, win), row in med.iterrows():
            if win != w or row["size"] < th.min_calls:
                continue
            base = med["median"].get((caller, callee, -1))
            if base is None or np.isnan(base):
                continue
            bound = th.gap_factor * base + th.gap_floor_ms
            bad = int(row["median"] > bound and _beyond_half(gap, code[caller], code[callee], w, bound, th.gap_z))
            for svc in (caller, callee):
                touched.setdefault(svc, []).append(bad)
            if bad:
                bad_edges.append((caller, callee))
        frac = {svc: sum(flags) / len(flags) for svc, flags in touched.items()}
        blamed = blame(bad_edges, frac, first="count")  # a starved caller grows every edge: see blame()
        for svc in touched:
            out[(svc, w)] = (frac[svc], len(blamed.get(svc, ())))
    return out


def _beyond_half(gap: pd.DataFrame, caller: int, callee: int, window: int, bound: float, z: float) -> bool:
    """In a sample (column ``w``): whether more than half of the edge's traffic in ``window`` had a gap past
    ``bound`` beyond the sample's chance. Calls of one trace move together (a starved caller delays all of
    them), so the unit is the trace: each trace's share of its calls past the bound, weighted by its weight;
    the weighted mean must lie ``z`` standard errors above one half, with the effective number of traces
    (Kish) behind it. Every call read (no ``w``): the median of all of them is the edge's, nothing to test."""
    if "w" not in gap:
        return True
    g = gap[(gap["caller"].to_numpy() == caller) & (gap["callee"].to_numpy() == callee)
            & (gap["window"].to_numpy() == window)]
    if g.empty:
        return True
    per = pd.DataFrame({"trace": g["trace"].to_numpy(), "past": g["gap_ms"].to_numpy() > bound,
                        "w": g["w"].to_numpy(dtype=float)})
    t = per.groupby("trace").agg(f=("past", "mean"), w=("w", "first"))
    w, f = t["w"].to_numpy(), t["f"].to_numpy(dtype=float)
    share = float(np.sum(w * f) / np.sum(w))
    n_eff = float(np.sum(w) ** 2 / np.sum(w ** 2))
    var = float(np.sum(w * (f - share) ** 2) / np.sum(w))
    return share - 0.5 > z * math.sqrt(max(var, 1e-12) / max(n_eff, 1.0))


def _edge_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per caller->callee: how often a bad child came with a bad caller span (propagated) and how
    often the caller span was bad while all its children were fine (the caller's own fault)."""
    caller = df["parent_svc"].to_numpy()
    cross = df["entry"].to_numpy() & (caller >= 0)
    if not cross.any():
        return pd.DataFrame(columns=EDGE_COLUMNS)
    bad = df["bad"].to_numpy()
    prow = df["prow"].to_numpy()
    parent = prow[cross]  # -1: the caller's span is outside these windows
    here = parent >= 0
    # The parent of a cross-service span is usually the caller's client span: a slow or failed child
    # makes it slow or failed as well, so it stands for the caller here.
    parent_bad = here & bad[np.maximum(parent, 0)]
    any_bad_child = np.bincount(prow[prow >= 0], weights=bad[prow >= 0], minlength=len(df)) > 0
    caller_alone = parent_bad & ~(here & any_bad_child[np.maximum(parent, 0)])
    child_bad = bad[cross]
    n_svc = len(df["service"].cat.categories)
    edge = caller[cross].astype(np.int64) * n_svc + df["service"].cat.codes.to_numpy()[cross]
    keys, inverse = np.unique(edge, return_inverse=True)  # sorted by caller code, then callee code
    names = np.asarray(df["service"].cat.categories, dtype=object)
    counts = {col: np.bincount(inverse, weights=w, minlength=len(keys)).astype(np.int64)
              for col, w in (("calls", None), ("child_bad", child_bad), ("both_bad", child_bad & parent_bad),
                             ("caller_bad_alone", caller_alone))}
    out = pd.DataFrame({"caller": names[keys // n_svc], "callee": names[keys % n_svc], **counts})
    return out.sort_values(["caller", "callee"], kind="stable").reset_index(drop=True)[EDGE_COLUMNS]


def judge(observations: "Observations", windows: "Windows", settings: "Settings", model: "DBNModel | None" = None
          ) -> Judged | None:
    """The trace evidence of an incident (None without spans)."""
    spans = observations.table("spans")
    if spans is None:
        return None
    evidence, edges = build_evidence(spans, windows.baseline, windows.slices)
    pairs = set(zip(edges["caller"], edges["callee"])) if len(edges) else set()
    notes = []
    used = evidence.attrs.get("baseline")
    if used is not None and used[1] > windows.baseline[1]:
        notes.append(f"the traces before the gap cover less than one slice: their baseline runs on to the first "
                     f"slice ({used[1] - used[0]:.0f} s, from {windows.baseline[1] - windows.baseline[0]:.0f} s)")
    if len(evidence) and not (evidence["window"] >= 0).any():
        notes.append("no span in the incident window (traces not ingested yet, or not kept): the traces judge "
                     "no slice; the other sources judge every slice")
    return Judged("traces", evidence, notes, edges=edges, call_edges=pairs)
