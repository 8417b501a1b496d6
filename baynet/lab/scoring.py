"""Scoring rankings against the truth: AC@k, Avg@5, per fault type, beside the baselines of the same cases."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from baynet.lab.baselines import ac_at_k, random_ac_at_k
from baynet.lab.datasets.nezha import DETECTION_DELAY_S

KS = (1, 2, 3, 4, 5)


def metrics(hits: list[dict[int, float]]) -> dict[str, float]:
    if not hits:
        return {"AC@1": 0.0, "AC@3": 0.0, "AC@5": 0.0, "Avg@5": 0.0, "n": 0}
    ac = {k: sum(h[k] for h in hits) / len(hits) for k in KS}
    return {"AC@1": ac[1], "AC@3": ac[3], "AC@5": ac[5], "Avg@5": sum(ac.values()) / len(KS), "n": len(hits)}


def hits_of(ranking: list[str], truth: str) -> dict[int, float]:
    return {k: ac_at_k(ranking, truth, k) for k in KS}


def rank_of(ranking: list[str], truth: str) -> int | None:
    return ranking.index(truth) + 1 if truth in ranking else None


def summarise(rows: list[dict[str, Any]], skipped: list[dict[str, Any]],
              relocated: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    methods = ["baynet", "baro", "microrank"]
    hits: dict[str, list[dict[int, float]]] = defaultdict(list)
    by_type: dict[str, dict[str, list[dict[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for m in methods:
            h = hits_of(row["rankings"][m], row["truth"])
            hits[m].append(h)
            by_type[m][row["fault_type"]].append(h)
        rnd = {k: random_ac_at_k(row["candidates"], k) for k in KS}
        hits["random"].append(rnd)
        by_type["random"][row["fault_type"]].append(rnd)
    cases = [{"case": r["case"], "fault_type": r["fault_type"], "truth": r["truth"],
              "top5": r["rankings"]["baynet"][:5], "rank": rank_of(r["rankings"]["baynet"], r["truth"]),
              "ranks": {m: rank_of(r["rankings"][m], r["truth"]) for m in methods},
              "candidates": r["candidates"], "seconds": round(r["seconds"], 3)} for r in rows]
    return {
        "overall": metrics(hits["baynet"]),
        "by_type": {t: metrics(v) for t, v in sorted(by_type["baynet"].items())},
        "cases": cases,
        "skipped": skipped,
        "relocated": relocated or [],
        "seconds_per_case": statistics.mean(r["seconds"] for r in rows) if rows else 0.0,
        "baselines": {m: {"overall": metrics(hits[m]),
                          "by_type": {t: metrics(v) for t, v in sorted(by_type[m].items())}}
                      for m in ("baro", "microrank", "random")},
        "detection_delay_s": DETECTION_DELAY_S,
    }


def summarise_bundles(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    methods = sorted({m for r in rows for m in r["rankings"]} - {"baynet"}) + ["random"]
    hits: dict[str, list[dict[int, float]]] = defaultdict(list)
    by_type: dict[str, dict[str, list[dict[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        scored = dict(row["rankings"])
        for m in ["baynet"] + methods:
            h = ({k: random_ac_at_k(row["candidates"], k) for k in KS} if m == "random"
                 else hits_of(scored[m], row["truth"]) if m in scored else None)
            if h is None:
                continue
            hits[m].append(h)
            by_type[m][row["fault_type"]].append(h)
    cases = [{"case": r["case"], "directory": r["directory"], "fault_type": r["fault_type"], "truth": r["truth"],
              "top5": r["rankings"]["baynet"][:5], "rank": rank_of(r["rankings"]["baynet"], r["truth"]),
              "ranks": {m: rank_of(v, r["truth"]) for m, v in r["rankings"].items()}, "sources": r["sources"],
              "notes": r["notes"], "candidates": r["candidates"], "seconds": round(r["seconds"], 3)} for r in rows]
    return {
        "overall": metrics(hits["baynet"]) if rows else metrics([]),
        "by_type": {t: metrics(v) for t, v in sorted(by_type["baynet"].items())},
        "cases": cases,
        "skipped": skipped,
        "seconds_per_case": statistics.mean(r["seconds"] for r in rows) if rows else 0.0,
        "baselines": {m: {"overall": metrics(hits[m]), "by_type": {t: metrics(v) for t, v in sorted(by_type[m].items())}}
                      for m in methods if hits[m]},
    }
