"""Exemplar traces: for the top services, a few traces that show their problem (failed, slowest, an
unusual call shape), linked to Grafana/Tempo through ``BAYNET_TRACE_URL_TEMPLATE``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from baynet.evidence.traces import span_keys
from baynet.windows import Windows


def exemplars(spans: pd.DataFrame | None, ranking: list[dict[str, Any]], windows: Windows,
              template: str | None = None, *, top: int = 5, per_kind: int = 2) -> None:
    """Add to the first ``top`` services of ``ranking`` a few trace ids that show their problem in the
    incident slices -- failed (the service's own spans that failed), slowest (its longest spans), unusual
    shape (a span of the service whose calls, as a multiset of callee operations, no baseline span of the
    same operation made) -- as ``exemplars``: ``[{"trace_id", "why", "url"}]``, the url from ``template``
    (``{trace_id}`` filled in, http(s) only) or None."""
    if spans is None or spans.empty:
        return
    lo, hi = windows.incident
    start = spans["start_ns"].to_numpy() / 1e9
    inc = spans[(start >= lo) & (start < hi)]
    if inc.empty:
        return
    shapes = _call_shapes(spans)
    b_lo, b_hi = windows.baseline
    in_base = (start >= b_lo) & (start < b_hi)
    dur = inc["end_ns"] - inc["start_ns"]
    usable = template if template and template.lower().startswith(("http://", "https://")) and \
        "{trace_id}" in template else None
    for row in ranking[:top]:
        mine = inc[inc["service"].astype(str) == row["service"]]
        if mine.empty:
            continue
        picked: list[tuple[str, str]] = []
        failed = mine[mine["failed"].to_numpy(dtype=bool)]
        picked += [(str(t), "failed") for t in dict.fromkeys(failed["trace_id"].astype(str))][:per_kind]
        slow = mine.assign(d=dur.loc[mine.index]).sort_values("d", ascending=False)
        failed_ids = {t for t, _ in picked}
        slow_ids = [str(t) for t in dict.fromkeys(slow["trace_id"].astype(str)) if t not in failed_ids]
        picked += [(t, f"slowest ({slow.loc[slow['trace_id'].astype(str) == t, 'd'].iloc[0] / 1e6:.0f} ms)")
                   for t in slow_ids[:per_kind]]
        picked += _unusual_shapes(spans, shapes, in_base, mine.index, {t for t, _ in picked}, per_kind)
        row["exemplars"] = [{"trace_id": t, "why": why, "url": usable.replace("{trace_id}", t) if usable else None}
                            for t, why in picked]


def _call_shapes(spans: pd.DataFrame) -> pd.DataFrame:
    """Per span: its operation, how many calls it made, and a signature of the multiset of the operations it
    called (a sum of one random 64-bit code per callee operation, so equal multisets sign alike)."""
    op = spans["service"].astype(str) + " " + spans["name"].astype(str)
    codes, labels = pd.factorize(op)
    salt = np.random.default_rng(0).integers(1, 2**62, size=max(1, len(labels)), dtype=np.int64)
    key, parent = span_keys(spans)
    has_parent = spans["parent_span_id"].astype(str).to_numpy() != ""
    sums = pd.DataFrame({"parent": parent[has_parent], "salt": salt[codes][has_parent]}).groupby("parent")[
        "salt"].agg(["sum", "size"])
    sig = pd.Series(key).map(sums["sum"]).fillna(0).astype(np.int64).to_numpy()
    calls = pd.Series(key).map(sums["size"]).fillna(0).astype(np.int64).to_numpy()
    return pd.DataFrame({"op": codes, "sig": sig, "calls": calls}, index=spans.index)


def _unusual_shapes(spans: pd.DataFrame, shapes: pd.DataFrame, in_base: np.ndarray, mine: pd.Index,
                    taken: set[str], per_kind: int) -> list[tuple[str, str]]:
    """Traces where one of ``mine`` (the service's incident spans) made calls its operation never made in
    the baseline, the operations with more baseline spans first (a shape unseen among many is the surer
    sign); nothing for an operation the baseline saw fewer than 20 times."""
    base = shapes[in_base]
    seen = set(zip(base["op"], base["sig"]))
    n_base = base["op"].value_counts()
    usual = base.groupby("op")["calls"].agg(lambda c: int(c.mode().iloc[0]))
    cand = shapes.loc[mine]
    odd = cand[[(o, g) not in seen for o, g in zip(cand["op"], cand["sig"])]]
    odd = odd.assign(n=odd["op"].map(n_base).fillna(0))
    odd = odd[odd["n"] >= 20].sort_values("n", ascending=False, kind="stable")
    out: list[tuple[str, str]] = []
    for idx, row in odd.iterrows():
        trace = str(spans.at[idx, "trace_id"])
        if trace in taken or trace in dict(out):
            continue
        out.append((trace, f"unusual shape ({int(row['calls'])} calls, usually {usual[row['op']]})"))
        if len(out) >= per_kind:
            break
    return out


def log_templates(logs: pd.DataFrame | None, ranking: list[dict[str, Any]], windows: Windows,
                  template: str | None = None, *, top: int = 5, per_service: int = 5, samples: int = 2) -> None:
    """Add to the first ``top`` services of ``ranking`` the log templates that appeared or rose in the
    incident slices against the baseline, as ``log_templates``: ``[{"template", "level", "incident",
    "baseline", "change", "samples": [{"line", "trace_id", "url"}]}]`` (counts per minute; the samples
    linked to their trace through ``template``, http(s) only), WARN/ERROR templates first. Lines that carry
    their template ``key`` already (the log evidence's) keep it: the page names the templates the evidence
    judged, and the lines are not mined twice."""
    if logs is None or logs.empty:
        return
    from baynet.evidence.logs import BAD_LEVELS, keyed

    lines = logs if "key" in logs.columns else keyed(logs)
    t = lines["time"].to_numpy(dtype=float)
    lo, hi = windows.incident
    b_lo, b_hi = windows.baseline
    inc_min, base_min = max((hi - lo) / 60, 1e-9), max((b_hi - b_lo) / 60, 1e-9)
    usable = template if template and template.lower().startswith(("http://", "https://")) and \
        "{trace_id}" in template else None
    for row in ranking[:top]:
        mine = lines[lines["service"] == row["service"]]
        here = mine[(mine["time"] >= lo) & (mine["time"] < hi)]
        if here.empty:
            continue
        in_base = mine[(mine["time"] >= b_lo) & (mine["time"] < b_hi)]["key"].value_counts() / base_min
        found = []
        for key, n in (here["key"].value_counts() / inc_min).items():
            before = float(in_base.get(key, 0.0))
            if before > 0 and n < 2 * before:
                continue
            change = "new" if before == 0 else f"x{n / before:.1f}"
            ex = here[here["key"] == key].head(samples)
            found.append({"template": key.split(" ", 1)[1], "level": key.split(" ", 1)[0],
                          "incident": round(float(n), 2), "baseline": round(before, 2), "change": change,
                          "samples": [{"line": str(r.line)[:300], "trace_id": str(r.trace_id or ""),
                                       "url": usable.replace("{trace_id}", str(r.trace_id))
                                       if usable and r.trace_id else None} for r in ex.itertuples()]})
        found.sort(key=lambda f: (f["level"] not in BAD_LEVELS, f["baseline"] > 0, -f["incident"]))
        if found:
            row["log_templates"] = found[:per_service]
