"""Held-out evaluation of the detector: ``baynet detect eval DATASET PATH``.

Outer folds hold out whole groups (RCD: every run of one injected service; Nezha: one day), so the scored
runs and services were never seen in training. Inside each training side, K and the threshold are chosen
by inner grouped folds (``models.train_detector``); the held-out side is scored once with them.

Point-wise metrics count the windows labelled 0/1 (unknown windows — neighbours of a fault — are left
out). Event-level: a fault is detected when its service is flagged at least once between the fault's
first and last window; the delay is the number of windows from the first fault window to the first flag.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from baynet.detector.models import (Block, blocks_from_cases, format_table, threshold_table, torch_available,
                                    train_detector)
from baynet.detector.series import Case, Fault


def _point_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    keep = y >= 0
    y, pred = y[keep].astype(bool), pred[keep].astype(bool)
    tp, fp, fn = int(np.sum(pred & y)), int(np.sum(pred & ~y)), int(np.sum(~pred & y))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "accuracy": float(np.mean(pred == y)) if len(y) else 0.0, "windows": int(len(y)),
            "positives": int(y.sum())}


def _fault_times(case: Case, f: Fault) -> tuple[float, float]:
    """Start and end time of a fault, from its own service's rows."""
    s = next(s for s in case.services if s.service == f.service)
    t = s.observed.index.to_numpy(float)
    return float(t[f.start]), float(t[f.end - 1])


def _events(cases: list[Case], blocks: list[Block], preds: list[np.ndarray]) -> list[dict[str, Any]]:
    index = {(b.case, b.service): i for i, b in enumerate(blocks)}
    out = []
    for case in cases:
        for f in case.faults:
            i = index.get((case.name, f.service))
            if i is None:
                continue
            hits = np.flatnonzero(preds[i][f.start:f.end])
            # any service of the case flagged in the fault's windows (the incident flow then localises)
            anywhere = False
            start_t, end_t = _fault_times(case, f)
            for s in case.services:
                j = index.get((case.name, s.service))
                t = s.observed.index.to_numpy(float)
                anywhere |= bool(np.any(preds[j][(t >= start_t) & (t <= end_t)]))
            out.append({"case": case.name, "service": f.service, "kind": f.kind, "detected": bool(hits.size),
                        "delay_windows": int(hits[0]) if hits.size else None, "detected_anywhere": anywhere})
    return out


def evaluate(cases: list[Case], models: tuple[str, ...] | None = None, *, folds: int = 5, random_state: int = 0,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    models = models or (("gbm", "lstm") if torch_available() else ("gbm",))
    started = time.monotonic()
    say(f"features for {len(cases)} cases")
    blocks = blocks_from_cases(cases)
    groups = sorted({c.group for c in cases})
    n_folds = min(folds, len(groups))
    if n_folds < 2:
        raise ValueError(f"held-out evaluation needs at least two groups, got {groups}")
    fold_of = {g: i % n_folds for i, g in enumerate(groups)}
    result: dict[str, Any] = {"cases": len(cases), "groups": groups, "folds": n_folds, "models": {},
                              "step_s": sorted({c.step_s for c in cases})}
    for kind in models:
        ys, ps, preds_all, events, per_fold = [], [], [], [], []
        t0 = time.monotonic()
        for fold in range(n_folds):
            held = {g for g in groups if fold_of[g] == fold}
            train = [b for b in blocks if b.group not in held]
            test_idx = [i for i, b in enumerate(blocks) if b.group in held]
            test = [blocks[i] for i in test_idx]
            say(f"{kind}: fold {fold + 1}/{n_folds}, held out {', '.join(sorted(held))}")
            model = train_detector(train, kind, random_state=random_state, progress=say)
            probs = model.score(test)
            preds = [p >= model.threshold for p in probs]
            test_cases = [c for c in cases if c.group in held]
            events += _events(test_cases, test, preds)
            ys.append(np.concatenate([b.y for b in test]))
            ps.append(np.concatenate(probs))
            preds_all.append(np.concatenate(preds))
            per_fold.append({"held_out": sorted(held), "k": len(model.features), "threshold": model.threshold,
                             "features": model.features})
        y, p, pred = np.concatenate(ys), np.concatenate(ps), np.concatenate(preds_all)
        metrics = _point_metrics(y, pred)
        detected = [e for e in events if e["detected"]]
        delays = [e["delay_windows"] for e in detected]
        table = threshold_table(y, p)
        metrics.update({
            "event_recall": len(detected) / len(events) if events else 0.0, "events": len(events),
            "events_detected": len(detected),
            "event_recall_any_service": (sum(e["detected_anywhere"] for e in events) / len(events)
                                         if events else 0.0),
            "median_delay_windows": float(np.median(delays)) if delays else None,
            "folds": per_fold, "seconds": round(time.monotonic() - t0, 1),
            "held_out_threshold_table": table.to_dict("records"),
            "missed": [f"{e['case']} {e['service']} {e['kind']}" for e in events if not e["detected"]][:50],
        })
        by_kind: dict[str, list[bool]] = {}
        for e in events:
            by_kind.setdefault(e["kind"], []).append(e["detected"])
        metrics["event_recall_by_fault"] = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
        result["models"][kind] = metrics
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['dataset']}: {result['cases']} cases, {result['folds']} held-out folds over "
             f"{len(result['groups'])} groups, step {', '.join(str(s) for s in result['step_s'])} s", "",
             "| model | precision | recall | F1 | accuracy | event recall | median delay (windows) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        delay = "—" if m["median_delay_windows"] is None else f"{m['median_delay_windows']:.1f}"
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} "
                     f"| {m['event_recall']:.3f} ({m['events_detected']}/{m['events']}) | {delay} | {m['seconds']} |")
    for name, m in result["models"].items():
        chosen = [f["threshold"] for f in m["folds"]]
        lines += ["", f"{name}: thresholds chosen on training folds {chosen}; K per fold "
                      f"{[f['k'] for f in m['folds']]}; event recall by fault {m['event_recall_by_fault']}",
                  f"{name}: held-out threshold table (all folds pooled; ← the median chosen threshold)",
                  format_table(pd.DataFrame(m["held_out_threshold_table"]), float(np.median(chosen)))]
    return "\n".join(lines)
