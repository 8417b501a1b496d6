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

As an alert source (``baynet.detector.incidents``): firings of any services of a mesh grouped into
incidents; ``incident_recall`` (faults with an incident of their own), ``false_incidents_per_mesh_hour``
(incidents that start outside every fault, per hour of the mesh without a fault) and the delay. The
threshold is chosen on the training side for a false-incident budget (``false_budget``), not for F1.

``leave_mesh_out``: each mesh in turn is held out whole; the model trains on the others only.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from baynet.detector.calibrate import calibrate_recordings
from baynet.detector.incidents import incident_metrics
from baynet.detector.models import (Block, blocks_from_cases, format_table, meshes_of, threshold_table,
                                    torch_available, train_detector)


def default_models() -> tuple[str, ...]:
    return ("gbm", "lstm", "zmax") if torch_available() else ("gbm", "zmax")
from baynet.detector.series import Case, Fault
from baynet.settings import DEFAULT_BUDGET, DEFAULT_GAP_WINDOWS


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


def _summary(cases: list[Case], tested: list[Block], probs: list[np.ndarray], thresholds: dict[str, float],
             gap_windows: int) -> dict[str, Any]:
    """Per-window, per-service event and incident figures of scored blocks (``thresholds`` per case)."""
    preds = [p >= thresholds[b.case] for b, p in zip(tested, probs)]
    y = np.concatenate([b.y for b in tested]) if tested else np.array([])
    pred = np.concatenate(preds) if preds else np.array([], bool)
    metrics = _point_metrics(y, pred)
    events = _events(cases, tested, preds)
    detected = [e for e in events if e["detected"]]
    delays = [e["delay_windows"] for e in detected]
    alarms, hours = _false_alarms(tested, preds, {c.name: c.step_s for c in cases})
    metrics.update({
        "event_recall": len(detected) / len(events) if events else 0.0, "events": len(events),
        "events_detected": len(detected),
        "event_recall_any_service": (sum(e["detected_anywhere"] for e in events) / len(events)
                                     if events else 0.0),
        "median_delay_windows": float(np.median(delays)) if delays else None,
        "false_alarms": alarms, "normal_service_hours": round(hours, 2),
        "false_alarms_per_service_hour": alarms / hours if hours else None,
        "missed": [f"{e['case']} {e['service']} {e['kind']}" for e in events if not e["detected"]][:50],
    })
    by_kind: dict[str, list[bool]] = {}
    for e in events:
        by_kind.setdefault(e["kind"], []).append(e["detected"])
    metrics["event_recall_by_fault"] = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
    metrics.update(incident_metrics(meshes_of(tested, probs), thresholds, gap_windows))
    return metrics


def evaluate(cases: list[Case], models: tuple[str, ...] | None = None, *, folds: int = 5, random_state: int = 0,
             hold_out: str = "group", extra: dict[str, list[Case]] | None = None, transfer: bool = False,
             false_budget: float | None = DEFAULT_BUDGET, gap_windows: int = DEFAULT_GAP_WINDOWS,
             calibrate_on_reference: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Held-out scores of each model on ``cases``.

    ``hold_out``: ``group`` holds out whole groups (RCD: every run of one injected service; Nezha: a day);
    ``service`` holds out services — their series in every case — and trains on the other services.
    ``extra``: other datasets' cases, added to every training side and never scored. ``transfer``: train on
    ``extra`` only and score every case (a model trained on other meshes)."""
    say = progress or (lambda _msg: None)
    models = models or default_models()
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
    result: dict[str, Any] = {"cases": len(cases), "hold_out": hold_out, "groups": groups, "folds": n_folds,
                              "transfer": transfer, "also_trained_on": {k: len(v) for k, v in (extra or {}).items()},
                              "models": {}, "step_s": sorted({c.step_s for c in cases})}
    for kind in models:
        tested, probs_all, thresholds, per_fold, calibrations = [], [], {}, [], {}
        t0 = time.monotonic()
        for fold in range(n_folds):
            held = {g for g in groups if fold_of[g] == fold}
            train = extra_blocks + ([] if transfer else [b for b in blocks if key(b) not in held])
            test = [b for b in blocks if key(b) in held]
            say(f"{kind}: fold {fold + 1}/{n_folds}, held out {', '.join(sorted(held))}")
            model = train_detector(train, kind, random_state=random_state, progress=say, false_budget=false_budget)
            tested += test
            probs_all += model.score(test)
            names = {b.case for b in test}
            thresholds.update(_thresholds(model, [c for c in cases if c.name in names],
                                          calibrate_on_reference, false_budget, gap_windows, calibrations))
            per_fold.append({"held_out": sorted(held), "k": len(model.features), "threshold": model.threshold,
                             "features": model.features})
        metrics = _summary(cases, tested, probs_all, thresholds, gap_windows)
        table = threshold_table(np.concatenate([b.y for b in tested]), np.concatenate(probs_all))
        metrics.update({"folds": per_fold, "seconds": round(time.monotonic() - t0, 1),
                        "held_out_threshold_table": table.to_dict("records"), "calibration": calibrations})
        result["models"][kind] = metrics
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _thresholds(model: Any, cases: list[Case], calibrate_on_reference: bool, budget: float | None,
                gap_windows: int, calibrations: dict[str, Any]) -> dict[str, float]:
    """Per case: the model's threshold, or (``calibrate_on_reference``) that raised on the references of
    ``cases`` -- recordings of one mesh, pooled (``baynet.detector.calibrate.calibrate_recordings``)."""
    threshold = model.threshold
    if calibrate_on_reference and budget is not None and cases:
        cal = calibrate_recordings(model, [(c.services, c.step_s) for c in cases], budget, gap_windows)
        for c in cases:  # the same calibration, under each case it covers
            calibrations[c.name] = {**cal.as_dict(), "recordings": len(cases)}
        threshold = cal.threshold
    return {case.name: threshold for case in cases}


def leave_mesh_out(meshes: dict[str, list[Case]], models: tuple[str, ...] | None = None, *, random_state: int = 0,
                   false_budget: float | None = DEFAULT_BUDGET, gap_windows: int = DEFAULT_GAP_WINDOWS,
                   calibrate_on_reference: bool = True, progress: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """Each mesh held out whole in turn: train on every other mesh, score every case of the held-out one."""
    say = progress or (lambda _msg: None)
    models = models or default_models()
    if len(meshes) < 2:
        raise ValueError(f"leave-one-mesh-out needs at least two meshes, got {sorted(meshes)}")
    started = time.monotonic()
    blocks = {}
    for name, cases in meshes.items():
        say(f"features for {len(cases)} cases of {name}")
        blocks[name] = blocks_from_cases(cases, group_prefix=f"{name}:")
    out: dict[str, Any] = {"leave_mesh_out": True, "false_budget": false_budget, "gap_windows": gap_windows,
                           "calibrated": calibrate_on_reference, "meshes": {}}
    for held, cases in meshes.items():
        out["meshes"][held] = {"cases": len(cases), "step_s": sorted({c.step_s for c in cases}),
                               "trained_on": sorted(m for m in meshes if m != held), "models": {}}
        for kind in models:
            t0 = time.monotonic()
            train = [b for m, bs in blocks.items() if m != held for b in bs]
            say(f"{kind}: held out {held}; training on {', '.join(out['meshes'][held]['trained_on'])}")
            model = train_detector(train, kind, random_state=random_state, progress=say, false_budget=false_budget)
            probs = model.score(blocks[held])
            calibrations: dict[str, Any] = {}
            thresholds = _thresholds(model, cases, calibrate_on_reference, false_budget, gap_windows, calibrations)
            metrics = _summary(cases, blocks[held], probs, thresholds, gap_windows)
            trained = incident_metrics(meshes_of(blocks[held], probs), model.threshold, gap_windows)
            metrics.update({"threshold": model.threshold, "thresholds": thresholds, "calibration": calibrations,
                            "at_trained_threshold": {k: trained[k] for k in (
                                "incident_recall", "new_incident_recall", "false_incidents_per_mesh_hour",
                                "false_incidents")},
                            "k": len(model.features), "features": model.features,
                            "seconds": round(time.monotonic() - t0, 1)})
            out["meshes"][held]["models"][kind] = metrics
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def render_leave_mesh_out(result: dict[str, Any]) -> str:
    lines = [f"leave-one-mesh-out: each mesh scored by a model trained on the others only; threshold for "
             f"{result['false_budget']} false incidents per mesh-hour on the training side; firings within "
             f"{result['gap_windows']} windows are one incident", "",
             "| held-out mesh | model | incident recall | false incidents / mesh-hour | median delay (windows) "
             "| new-incident recall | per-service event recall | false alarms / service-hour | F1 "
             "| threshold (trained → used) | at the trained threshold: recall, false / h | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mesh, part in result["meshes"].items():
        for kind, m in part["models"].items():
            rate = m["false_incidents_per_mesh_hour"]
            fa = m["false_alarms_per_service_hour"]
            delay = m["median_incident_delay_windows"]
            at = m["at_trained_threshold"]
            at_rate = at["false_incidents_per_mesh_hour"]
            lines.append(f"| {mesh} | {kind} | {m['incident_recall']:.2f} ({m['faults_detected']}/{m['faults']}) "
                         f"| {'—' if rate is None else f'{rate:.2f}'} ({m['false_incidents']} in "
                         f"{m['mesh_hours']:.1f} h) | {'—' if delay is None else f'{delay:.1f}'} "
                         f"| {m['new_incident_recall']:.2f} "
                         f"| {m['event_recall']:.2f} ({m['events_detected']}/{m['events']}) "
                         f"| {'—' if fa is None else f'{fa:.2f}'} | {m['f1']:.3f} | {m['threshold']:g} → "
                         f"{'/'.join(f'{t:g}' for t in sorted(set(m['thresholds'].values())))} "
                         f"| {at['incident_recall']:.2f}, {'—' if at_rate is None else f'{at_rate:.2f}'} "
                         f"| {m['seconds']} |")
    for mesh, part in result["meshes"].items():
        lines += _idle_note(part["models"], mesh)
    if result.get("calibrated"):
        lines += ["", "threshold used: the trained one, raised until the held-out mesh's references (each case's "
                  "first half as reference, its second scored; all cases together) stay within the budget. "
                  "gbm and lstm thresholds are probabilities, zmax's are robust z"]
    return "\n".join(lines)


def _idle_note(models: dict[str, Any], mesh: str = "") -> list[str]:
    """A warning when the calibration found services that served no request in the reference but do in the
    scored stretch (``calibrate.idle_services``): their every request reads as an outlier."""
    cals = [c for m in models.values() for c in (m.get("calibration") or {}).values() if c.get("idle_services")]
    if not cals:
        return []
    idle, busy = cals[0]["idle_services"], cals[0]["busy_services"]
    return ["", f"reference without traffic{' on ' + mesh if mesh else ''}: {len(idle)} of {busy} services with "
            f"requests in the scored stretch served none in the reference ({', '.join(idle)}); any request of "
            "theirs reads as an outlier, so a detector can fire on them all along and still fit the budget: "
            "these figures say little"]


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
             "| any-service recall | false alarms / service-hour | incident recall | false incidents / mesh-hour "
             "| seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        delay = "—" if m["median_delay_windows"] is None else f"{m['median_delay_windows']:.1f}"
        rate = m.get("false_alarms_per_service_hour")
        inc = m.get("false_incidents_per_mesh_hour")
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} "
                     f"| {m['event_recall']:.3f} ({m['events_detected']}/{m['events']}) | {delay} "
                     f"| {m['event_recall_any_service']:.3f} | {'—' if rate is None else f'{rate:.3f}'} "
                     f"| {m['incident_recall']:.3f} ({m['faults_detected']}/{m['faults']}) "
                     f"| {'—' if inc is None else f'{inc:.2f}'} ({m['false_incidents']} in {m['mesh_hours']:.1f} h) "
                     f"| {m['seconds']} |")
    lines += _idle_note(result["models"])
    for name, m in result["models"].items():
        chosen = [round(float(f["threshold"]), 3) for f in m["folds"]]
        lines += ["", f"{name}: thresholds chosen on training folds {chosen}; K per fold "
                      f"{[f['k'] for f in m['folds']]}; event recall by fault {m['event_recall_by_fault']}",
                  f"{name}: held-out threshold table (all folds pooled; ← the median chosen threshold)",
                  format_table(pd.DataFrame(m["held_out_threshold_table"]), float(np.median(chosen)))]
    return "\n".join(lines)
