"""The sentence an SRE reads first: the likely cause, its probability, the strongest evidence in words with
numbers and times, the propagation path in words, and what the analysis could not see.

One generator for the report page, the Prefect artifact and the CLI. Every phrase comes from a column of
the incident's evidence frame (``evidence.csv``) that a source actually filled: a phrase is only written
when its source spoke about the service (traces, metrics, logs, changes).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _ok(value: Any) -> bool:
    return math.isfinite(_num(value))


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def findings(evidence: pd.DataFrame, service: str) -> list[tuple[float, str, str, int]]:
    """What the evidence says about ``service`` in words: ``(strength, phrase, source, first slice)``, the
    strongest first. Only slices where the source flagged the service count."""
    rows = evidence[(evidence["service"] == service) & (evidence["window"] >= 0)].sort_values("window")
    base = evidence[(evidence["service"] == service) & (evidence["window"] == -1)]
    b = base.iloc[0] if len(base) else None
    out: list[tuple[float, str, str, int]] = []

    def add(strength: float, phrase: str, source: str, flagged: pd.Series) -> None:
        windows = rows.loc[flagged, "window"]
        if len(windows):
            out.append((strength, phrase, source, int(windows.min())))

    traces = rows["sources"].astype(str).str.contains("traces") if "sources" in rows else pd.Series(True, rows.index)
    own = rows["own_state"].fillna(0) > 0
    if traces.any():
        t = rows[traces]
        worst = t.loc[t["self_slow_frac"].idxmax()] if t["self_slow_frac"].max() > 0 else None
        if worst is not None:
            usual = f" (usually up to {_ms(_num(b['self_p95_ms_hi']))})" if b is not None and "self_p95_ms_hi" in b \
                and _ok(b["self_p95_ms_hi"]) else ""
            add(2 + worst["self_slow_frac"], f"its own work slowed: {worst['self_slow_frac']:.0%} of its spans "
                f"took far longer than usual, p95 self time {_ms(worst['self_p95_ms'])}{usual}", "traces",
                traces & own & (rows["self_slow_frac"] > 0))
        if (t["own_error_frac"] >= 0.5).any() and t["error_ratio"].max() > 0:
            w = t.loc[t["error_ratio"].idxmax()]
            add(3 + w["error_ratio"], f"{w['error_ratio']:.0%} of its requests failed, the failures its own "
                "(no failing call beneath them)", "traces", traces & own & (rows["own_error_frac"] >= 0.5))
        if t["fast_frac"].max() > 0:
            w = t.loc[t["fast_frac"].idxmax()]
            add(2 + w["fast_frac"], f"{w['fast_frac']:.0%} of its spans ended far sooner than usual (an early "
                "return or a wrong answer)", "traces", traces & own & (rows["fast_frac"] > 0))
        if t["shape_frac"].max() > 0:
            w = t.loc[t["shape_frac"].idxmax()]
            add(1.5 + w["shape_frac"], f"{w['shape_frac']:.0%} of its spans made an unusual set of calls",
                "traces", traces & own & (rows["shape_frac"] > 0))
        if t["gap_edges"].max() > 0:
            add(2.5, f"the network in front of it added delay on {int(t['gap_edges'].max())} call edge(s) "
                "(callers waited longer than it worked)", "traces", traces & (rows["gap_edges"] > 0))
        if t["slow_frac"].max() > 0:
            w = t.loc[t["slow_frac"].idxmax()]
            usual = f", usually up to {_ms(_num(b['p95_ms_hi']))}" if b is not None and "p95_ms_hi" in b and \
                _ok(b["p95_ms_hi"]) else ""
            add(1 + w["slow_frac"], f"{w['slow_frac']:.0%} of the requests to it were slow (p95 "
                f"{_ms(w['p95_ms'])}{usual})", "traces", traces & (rows["slow_frac"] > 0))
    if "m_own_state" in rows:
        m_own = rows["m_own_state"].fillna(-1) > 0
        if rows["m_resource_z"].fillna(0).max() >= 3:
            w = rows.loc[rows["m_resource_z"].fillna(0).idxmax()]
            add(2 + min(w["m_resource_z"], 1000) / 1000, f"its {w['m_resource'] or 'resource'} rose "
                f"{w['m_resource_z']:.0f} baseline spreads", "metrics", m_own & (rows["m_resource_z"].fillna(0) >= 3))
        if rows["m_canary_z"].fillna(0).max() >= 3:
            w = rows.loc[rows["m_canary_z"].fillna(0).idxmax()]
            said = str(w["m_canary"]) if "m_canary" in rows and isinstance(w["m_canary"], str) and w["m_canary"] \
                else "its new version does worse than the old one"
            add(3.5, f"{said} ({w['m_canary_z']:.0f} spreads)", "metrics", rows["m_canary_z"].fillna(0) >= 3)
        if rows["m_gap_edges"].fillna(0).max() > 0:
            add(2.4, f"its callers measured {int(rows['m_gap_edges'].max())} call edge(s) slower than it did "
                "(a network delay on its side)", "metrics", rows["m_gap_edges"].fillna(0) > 0)
        if "m_calls" in rows:
            stopped = rows["m_calls"].fillna("").astype(str).str.startswith("its calls to ")
            if stopped.any():
                add(2.6, str(rows.loc[stopped, "m_calls"].iloc[0]).split("; ")[0], "metrics", stopped)
        if rows["m_latency_z"].fillna(0).max() >= 3:
            add(1.2, f"its latency rose {rows['m_latency_z'].max():.0f} baseline spreads", "metrics",
                rows["m_latency_z"].fillna(0) >= 3)
        if rows["m_error_up"].fillna(0).max() > 0.01:
            add(1.3, f"its error ratio rose by {rows['m_error_up'].max():.0%}", "metrics",
                rows["m_error_up"].fillna(0) > 0.01)
    if "l_own_state" in rows:
        l_own = rows["l_own_state"].fillna(-1) > 0
        tops = rows.loc[l_own, "l_top"].astype(str)
        tops = tops[tops != ""]
        if len(tops):
            top = tops.iloc[-1]
            if top.startswith("new "):
                key, _, rest = top[4:].partition(" x")
                count = rest.split(":", 1)[0]
                phrase = f"it logged a kind of {key.split(' ', 1)[0]} it never logged before, " \
                         f"\"{key.split(' ', 1)[-1][:80]}\", {count} times in a minute"
            else:
                phrase = f"a log line that always followed another stopped: {top[5:140]}"
            add(3 + rows["l_score"].max() / 100, phrase, "logs", l_own)
    out.sort(key=lambda f: -f[0])
    return out


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M")


def describe(ranking: list[dict[str, Any]], path: list[str], evidence: pd.DataFrame, event_service: str,
             event_time: float, window_s: float, n_slices: int, fetch: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """``{"headline", "short", "words": {service: sentence}}`` for an analysed incident."""
    fetch = fetch or {}
    words = {}
    first = event_time - n_slices * window_s
    for row in ranking:
        found = findings(evidence, row["service"])
        if found:
            parts = [f"{phrase} (from {_clock(first + w * window_s)}, {source})" for _, phrase, source, w in found[:3]]
            words[row["service"]] = "; ".join(parts)
        else:
            words[row["service"]] = "nothing stood out in its own evidence"
    if not ranking:
        return {"headline": "No service could be ranked: the sources held no evidence about any.", "short": "-",
                "words": words}
    top = ranking[0]
    found = findings(evidence, top["service"])
    lead = f"{top['service']} is the likely cause (P={float(top['posterior']):.2f})"
    if found:
        said = [f"{phrase} from {_clock(first + w * window_s)}" for _, phrase, _, w in found[:2]]
        lead += ": " + " and ".join(said)
    else:
        lead += ", though nothing in its own evidence stood out: it ranks first by its neighbours' states and "\
                "its prior"
    sentences = [lead + "."]
    if len(path) > 1:
        sentences.append(f"The fault travelled {' → '.join(path)}, where {event_service} raised the anomaly at "
                         f"{_clock(event_time)} UTC.")
    elif top["service"] != event_service:
        sentences.append(f"{event_service} raised the anomaly at {_clock(event_time)} UTC; no call path from "
                         f"{top['service']} to it was seen.")
    gaps = list(fetch.get("partial_reasons") or [])
    if gaps:
        sentences.append("Could not see: " + "; ".join(g.split(";")[0] for g in gaps[:3]) + ".")
    short = f"{top['service']} (P={float(top['posterior']):.2f})" + (f": {found[0][1]}" if found else "")
    return {"headline": " ".join(sentences), "short": short, "words": words}
