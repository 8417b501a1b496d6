"""The detector judged as an alert source: firings grouped into incidents, incident recall, false incidents
per mesh-hour, and the threshold chosen for a false-incident budget.

A *firing* is a window in which the detector flags some service. Firings of any services of one mesh
(one case) that follow each other within ``gap`` seconds are one *incident*: one fault that makes ten
services deviate is one page, not ten. A fault is *detected* when some service fires inside it (the RCA
localises from there); the delay is from the fault's first window to that firing. Stricter,
``new_incident_recall`` counts a fault only when an incident *starts* for it (within ``gap`` before it or
inside it): with faults close together, an incident that stays open across several sends one event, and
the RCA runs once. A fault's *zone* is the fault widened by ``gap`` on both sides (its listed start is approximate; its tail may linger). Firings
outside every zone are false: grouped the same way, each group is one *false incident*, and one that keeps
firing counts again for every further hour (a page repeats while its alert fires: Alertmanager's
``repeat_interval``, at :data:`REPEAT_S`). An alarm that stays on through normal time therefore pays for
every stretch of normal time and every hour it covers: a detector that never stops firing finds every
fault but cannot stay within a budget.

Faults come from the labels (``y == 1``: the injected service's windows inside its fault), so the same
code judges held-out scores and, during training, inner-fold scores: the threshold is the lowest whose
false incidents per mesh-hour on the training data's out-of-fold scores stay within the budget.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from baynet.settings import DEFAULT_GAP_WINDOWS

REPEAT_S = 3600.0         # a false incident still firing counts again after this long


@dataclass
class MeshScores:
    """One mesh's (one case's) scored windows: per service, window times, labels and scores."""

    case: str
    step_s: float
    times: list[np.ndarray]
    labels: list[np.ndarray]
    scores: list[np.ndarray]
    services: list[str]


def by_case(blocks: Sequence[Any], scores: Sequence[np.ndarray], step_s: dict[str, float]) -> list[MeshScores]:
    """Group per-service blocks (``Block`` with ``t``) and their scores by case."""
    out: dict[str, MeshScores] = {}
    for b, p in zip(blocks, scores):
        m = out.setdefault(b.case, MeshScores(b.case, float(step_s.get(b.case, 1.0) or 1.0), [], [], [], []))
        m.times.append(np.asarray(b.t, float))
        m.labels.append(np.asarray(b.y, int))
        m.scores.append(np.asarray(p, float))
        m.services.append(b.service)
    return list(out.values())


def _runs(times: np.ndarray, gap: float) -> list[tuple[float, float]]:
    """Maximal runs of sorted ``times`` whose neighbours are at most ``gap`` apart."""
    if times.size == 0:
        return []
    cut = np.flatnonzero(np.diff(times) > gap)
    starts = np.r_[0, cut + 1]
    ends = np.r_[cut, times.size - 1]
    return [(float(times[a]), float(times[b])) for a, b in zip(starts, ends)]


def faults_of(mesh: MeshScores) -> list[tuple[float, float]]:
    """Fault intervals: runs of the windows labelled anomalous on any service (one step apart at most)."""
    t = np.unique(np.concatenate([tt[y == 1] for tt, y in zip(mesh.times, mesh.labels)] or [np.array([])]))
    return _runs(t, 1.5 * mesh.step_s)


def _firings(mesh: MeshScores, threshold: float) -> list[tuple[float, str]]:
    """(window time, service) of every flagged window, service by service."""
    return [(float(x), svc) for t, p, svc in zip(mesh.times, mesh.scores, mesh.services) for x in t[p >= threshold]]


def _group(fired: list[tuple[float, str]], gap: float) -> list[dict[str, Any]]:
    ordered = sorted(fired)
    times = np.array([t for t, _ in ordered])
    return [{"start": lo, "end": hi, "services": list(dict.fromkeys(s for t, s in ordered if lo <= t <= hi))}
            for lo, hi in _runs(times, gap)]


def incidents_of(mesh: MeshScores, threshold: float, gap_windows: int = DEFAULT_GAP_WINDOWS
                 ) -> list[dict[str, Any]]:
    """The mesh's firings grouped into incidents: start, end, the services that fired (first first)."""
    return _group(_firings(mesh, threshold), gap_windows * mesh.step_s)


def _in_zones(times: np.ndarray, faults: list[tuple[float, float]], gap: float) -> np.ndarray:
    """Which of ``times`` lie in a fault's zone (the fault widened by ``gap`` on both sides)."""
    inside = np.zeros(times.size, bool)
    for lo, hi in faults:
        inside |= (times >= lo - gap) & (times <= hi + gap)
    return inside


def judge(mesh: MeshScores, threshold: float, gap_windows: int = DEFAULT_GAP_WINDOWS) -> dict[str, Any]:
    """Faults detected (and their delays), false incidents and the mesh-hours outside fault zones."""
    gap = gap_windows * mesh.step_s
    faults = faults_of(mesh)
    pairs = _firings(mesh, threshold)
    incidents = _group(pairs, gap)
    fired = np.array(sorted(t for t, _ in pairs))
    detected, delays, paged = [], [], []
    starts = np.array([i["start"] for i in incidents])
    for lo, hi in faults:
        inside = fired[(fired >= lo) & (fired <= hi)] if fired.size else fired
        detected.append(bool(inside.size))
        if inside.size:
            delays.append((float(inside[0]) - lo) / mesh.step_s)
        # stricter: an incident (one event, one RCA) starts for this fault, not one already open before it
        paged.append(bool(starts.size and ((starts >= lo - gap) & (starts <= hi)).any()))
    # a run of false firings ends where a fault zone begins, however close the next false firing is
    outside = fired[~_in_zones(fired, faults, gap)]
    zone_id = np.searchsorted(np.array([lo for lo, _ in faults]), outside) if faults else np.zeros(outside.size)
    false = []
    for z in np.unique(zone_id):
        false += _runs(outside[zone_id == z], gap)
    all_t = np.unique(np.concatenate(mesh.times)) if mesh.times else np.array([])
    services = dict(pairs)
    pages = sum(max(1, int(np.ceil((hi - lo + mesh.step_s) / REPEAT_S))) for lo, hi in false)
    return {"faults": len(faults), "detected": sum(detected), "paged": sum(paged), "delays_windows": delays,
            "false_incidents": pages, "incidents": len(incidents),
            "normal_hours": float((~_in_zones(all_t, faults, gap)).sum()) * mesh.step_s / 3600.0,
            "false_examples": [{"case": mesh.case, "start": lo, "end": hi, "first_service": services.get(lo)}
                               for lo, hi in false[:3]]}


def incident_metrics(meshes: Sequence[MeshScores], threshold: float | dict[str, float],
                     gap_windows: int = DEFAULT_GAP_WINDOWS) -> dict[str, Any]:
    """Pooled over meshes: ``incident_recall``, ``false_incidents_per_mesh_hour``, the median detection
    delay in windows, and the counts behind them. ``threshold`` may differ per case (a dict)."""
    parts = [judge(m, threshold[m.case] if isinstance(threshold, dict) else threshold, gap_windows)
             for m in meshes]
    faults = sum(p["faults"] for p in parts)
    hours = sum(p["normal_hours"] for p in parts)
    false = sum(p["false_incidents"] for p in parts)
    delays = [d for p in parts for d in p["delays_windows"]]
    return {"incident_recall": sum(p["detected"] for p in parts) / faults if faults else 0.0,
            "new_incident_recall": sum(p["paged"] for p in parts) / faults if faults else 0.0,
            "faults": faults, "faults_detected": sum(p["detected"] for p in parts),
            "false_incidents": false, "mesh_hours": round(hours, 3),
            "false_incidents_per_mesh_hour": false / hours if hours else None,
            "incidents": sum(p["incidents"] for p in parts),
            "median_incident_delay_windows": float(np.median(delays)) if delays else None,
            "false_examples": [e for p in parts for e in p["false_examples"]][:5]}


def budget_threshold(meshes: Sequence[MeshScores], budget: float, thresholds: Sequence[float],
                     gap_windows: int = DEFAULT_GAP_WINDOWS) -> tuple[float, list[dict[str, Any]]]:
    """The lowest threshold whose false incidents per mesh-hour stay within ``budget`` (the most recall
    the budget allows), and the table it was chosen from. No threshold within budget: the highest."""
    table = []
    for th in sorted(thresholds):
        m = incident_metrics(meshes, th, gap_windows)
        table.append({"Thresh": float(th), "IncRecall": m["incident_recall"],
                      "FalsePerHour": m["false_incidents_per_mesh_hour"] or 0.0, "Incidents": m["incidents"]})
    within = [r["Thresh"] for r in table if r["FalsePerHour"] <= budget]
    return float(min(within) if within else max(thresholds)), table


def group_services(firing: list[tuple[str, float]], callees: dict[str, list[str]]) -> str:
    """The service an incident is named after: among the firing services (with their scores), the most
    upstream -- one no other firing service reaches through calls -- and among those the highest score."""
    names = {s for s, _ in firing}
    reach: dict[str, set[str]] = defaultdict(set)
    for s in names:
        todo, seen = list(callees.get(s, [])), set()
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            todo += callees.get(c, [])
        reach[s] = seen
    top = [s for s in names if not any(s in reach[o] for o in names if o != s)] or list(names)
    score = dict(firing)
    return max(sorted(top), key=lambda s: score.get(s, 0.0))
