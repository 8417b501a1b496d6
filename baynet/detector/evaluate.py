"""Held-out evaluation of the detector: ``baynet detect eval DATASET PATH``.

Outer folds hold out whole groups (RCD: every run of one injected service; Nezha: one day), so the scored
runs were never seen in training; ``--hold-out service`` holds out services instead (their series in every
case), and ``--also-train`` / ``--transfer`` add, or train only on, another dataset — a model from another
mesh. Inside each training side, K and the threshold are chosen
by inner grouped folds (``models.train_detector``); the held-out side is scored once with them.

Point-wise metrics count the windows labelled 0/1 (unknown windows — neighbours of a fault — are left
out). Event-level: a fault is detected when its service is flagged at least once between the fault's
first and last window; the delay is the number of windows from the first fault window to the first flag.
Beside it, ``event_recall_any_service`` (any scored service flagged during the fault) and false alarms: runs
of flagged windows labelled normal, per service-hour of normal windows.
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
            # any scored service of the case flagged in the fault's windows (the incident flow then localises)
            anywhere = False
            start_t, end_t = _fault_times(case, f)
            for s in case.services:
                j = index.get((case.name, s.service))
                if j is None:
                    continue
                t = s.observed.index.to_numpy(float)
                anywhere |= bool(np.any(preds[j][(t >= start_t) & (t <= end_t)]))
            out.append({"case": case.name, "service": f.service, "kind": f.kind, "detected": bool(hits.size),
                        "delay_windows": int(hits[0]) if hits.size else None, "detected_anywhere": anywhere})
    return out


def _false_alarms(blocks: list[Block], preds: list[np.ndarray], step_s: dict[str, float]) -> tuple[int, float]:
    """False alarms: runs of consecutive flagged windows labelled normal (0), and the service-hours of
    normal windows they came from."""
    alarms, hours = 0, 0.0
    for b, pred in zip(blocks, preds):
        bad = np.asarray(pred, bool) & (b.y == 0)
        alarms += int(np.sum(bad[1:] & ~bad[:-1]) + (bad[0] if bad.size else 0))
        hours += float(np.sum(b.y == 0)) * step_s.get(b.case, 0.0) / 3600.0
    return alarms, hours


HOLD_OUTS = ("group", "service")


def evaluate(cases: list[Case], models: tuple[str, ...] | None = None, *, folds: int = 5, random_state: int = 0,
             hold_out: str = "group", extra: dict[str, list[Case]] | None = None, transfer: bool = False,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Held-out scores of each model on ``cases``.

    ``hold_out``: ``group`` holds out whole groups (RCD: every run of one injected service; Nezha: a day);
    ``service`` holds out services — their series in every case — and trains on the other services.
    ``extra``: other datasets' cases, added to every training side and never scored. ``transfer``: train on
    ``extra`` only and score every case (a model trained on other meshes)."""
    say = progress or (lambda _msg: None)
    models = models or (("gbm", "lstm") if torch_available() else ("gbm",))
    if hold_out not in HOLD_OUTS:
        raise ValueError(f"unknown hold-out {hold_out!r}; choose one of {', '.join(HOLD_OUTS)}")
    if transfer and not extra:
        raise ValueError("transfer evaluation needs other datasets to train on")
    started = time.monotonic()
    say(f"features for {len(cases)} cases")
    blocks = blocks_from_cases(cases)
    extra_blocks: list[Block] = []
    for name, more in (extra or {}).items():
        say(f"features for {len(more)} training-only cases from {name}")
        extra_blocks += blocks_from_cases(more, group_prefix=f"{name}:")
    key = (lambda b: b.group) if hold_out == "group" else (lambda b: b.service)
    groups = sorted({key(b) for b in blocks})
    n_folds = 1 if transfer else min(folds, len(groups))
    if n_folds < 2 and not transfer:
        raise ValueError(f"held-out evaluation needs at least two {hold_out}s, got {groups}")
    fold_of = {g: i % n_folds for i, g in enumerate(groups)}
    step_s = {c.name: c.step_s for c in cases}
    result: dict[str, Any] = {"cases": len(cases), "hold_out": hold_out, "groups": groups, "folds": n_folds,
                              "transfer": transfer, "also_trained_on": {k: len(v) for k, v in (extra or {}).items()},
                              "models": {}, "step_s": sorted({c.step_s for c in cases})}
    for kind in models:
        ys, ps, preds_all, events, per_fold, alarms, normal_hours = [], [], [], [], [], 0, 0.0
        t0 = time.monotonic()
        for fold in range(n_folds):
            held = {g for g in groups if fold_of[g] == fold}
            train = extra_blocks + ([] if transfer else [b for b in blocks if key(b) not in held])
            test = [b for b in blocks if key(b) in held]
            say(f"{kind}: fold {fold + 1}/{n_folds}, held out {', '.join(sorted(held))}")
            model = train_detector(train, kind, random_state=random_state, progress=say)
            probs = model.score(test)
            preds = [p >= model.threshold for p in probs]
            events += _events(cases, test, preds)
            n_alarms, hours = _false_alarms(test, preds, step_s)
            alarms, normal_hours = alarms + n_alarms, normal_hours + hours
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
            "false_alarms": alarms, "normal_service_hours": round(normal_hours, 2),
            "false_alarms_per_service_hour": alarms / normal_hours if normal_hours else None,
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
    extra = result.get("also_trained_on") or {}
    trained = ", ".join(f"{k} ({v} cases)" for k, v in extra.items())
    if result.get("transfer"):
        how = f"trained only on {trained}; every case scored"
    else:
        how = (f"{result['folds']} held-out folds over {len(result['groups'])} {result.get('hold_out', 'group')}s"
               + (f"; every training side also has {trained}" if extra else ""))
    lines = [f"{result['dataset']}: {result['cases']} cases, {how}, step "
             f"{', '.join(str(s) for s in result['step_s'])} s", "",
             "| model | precision | recall | F1 | accuracy | event recall | median delay (windows) "
             "| any-service recall | false alarms / service-hour | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        delay = "—" if m["median_delay_windows"] is None else f"{m['median_delay_windows']:.1f}"
        rate = m.get("false_alarms_per_service_hour")
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} "
                     f"| {m['event_recall']:.3f} ({m['events_detected']}/{m['events']}) | {delay} "
                     f"| {m['event_recall_any_service']:.3f} | {'—' if rate is None else f'{rate:.3f}'} "
                     f"| {m['seconds']} |")
    for name, m in result["models"].items():
        chosen = [f["threshold"] for f in m["folds"]]
        lines += ["", f"{name}: thresholds chosen on training folds {chosen}; K per fold "
                      f"{[f['k'] for f in m['folds']]}; event recall by fault {m['event_recall_by_fault']}",
                  f"{name}: held-out threshold table (all folds pooled; ← the median chosen threshold)",
                  format_table(pd.DataFrame(m["held_out_threshold_table"]), float(np.median(chosen)))]
    return "\n".join(lines)
