"""The threshold, calibrated on the mesh being watched: its own normal data decides how high the bar is.

A model trained on other meshes scores a new mesh on a scale it never saw: 1 s metrics are noisier than
60 s ones, and one mesh's normal is another's outlier. The training side's threshold (chosen for the
false-incident budget there) is therefore only a floor. Each mesh brings its reference — the known-normal
history the features are computed against — and that reference says how often the model fires when
nothing is wrong: its first half serves as the reference of its second half, the second half is scored as
if live, every firing there is false, and the threshold is raised to the lowest value at which the false
incidents stay within the budget (``budget`` per hour of that half; a short reference allows none).

One threshold per mesh: when a mesh is watched in several separate recordings (an evaluation's cases), the
reference halves of all of them are scored together, each on its own, and their hours added up. A budget
of one false incident an hour cannot be judged on a minute of reference, but it can on an hour of them.

A reference can also fail to stand for normal operation: a service that served no request in it but does
in the scored stretch (a load generator switched off or running another mix) fires on every request, and
no threshold calibrated on that reference can tell. The calibration names such services
(:func:`idle_services`) in its reason, and ``detect eval`` prints them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from baynet.detector.features import service_features
from baynet.detector.incidents import MeshScores, incident_metrics
from baynet.detector.models import THRESHOLDS, Block, thresholds_for
from baynet.detector.series import ServiceSeries
from baynet.settings import DEFAULT_GAP_WINDOWS

CANDIDATES = tuple(sorted({float(t) for t in THRESHOLDS} | {0.97, 0.98, 0.99, 0.995}))
MIN_REFERENCE_WINDOWS = 20  # fewer windows per half than this: the training side's threshold stands
log = logging.getLogger(__name__)


def candidates_for(model: Any) -> tuple[float, ...]:
    """The thresholds calibration may raise to: for probabilities, the model's grid made finer near 1."""
    kind = getattr(model, "kind", "")
    return CANDIDATES if thresholds_for(kind) == THRESHOLDS else thresholds_for(kind)


def idle_services(series: list[ServiceSeries]) -> list[str]:
    """The services with requests in the scored stretch that served none in their reference (every load 0
    or absent there). Against such a reference (a load generator switched off or running another mix, a
    service scaled to zero) any request reads as an outlier, so those services fire whenever they are used,
    and a calibration on that reference cannot see it."""
    return [s.service for s in series if _busy(s.observed) and not _busy(s.reference)]


def _busy(frame: pd.DataFrame) -> bool:
    """Whether a service's frame has a request in it (some load above 0)."""
    return "load" in frame.columns and bool(np.nan_to_num(frame["load"].to_numpy(float)).any())


@dataclass
class Calibration:
    threshold: float
    trained: float
    windows: int
    hours: float
    false_incidents: int | None
    reason: str
    idle_services: list[str] = field(default_factory=list)  # see idle_services()
    busy_services: int = 0                                  # services with requests in the scored stretch

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def calibrate(model: Any, series: list[ServiceSeries], step_s: float, budget: float,
              gap_windows: int = DEFAULT_GAP_WINDOWS) -> Calibration:
    """The threshold for this mesh: the model's, raised until its reference's second half, scored against
    its first, makes at most ``budget`` false incidents per hour."""
    return calibrate_recordings(model, [(series, step_s)], budget, gap_windows)


def calibrate_recordings(model: Any, recordings: list[tuple[list[ServiceSeries], float]], budget: float,
                         gap_windows: int = DEFAULT_GAP_WINDOWS) -> Calibration:
    """:func:`calibrate` over several recordings of one mesh (``(series, step_s)`` each): every recording's
    reference is halved on its own, and the false incidents and hours of all of them are added up."""
    cal = _calibrate_recordings(model, recordings, budget, gap_windows)
    cal.idle_services = sorted({svc for series, _ in recordings for svc in idle_services(series)})
    cal.busy_services = len({s.service for series, _ in recordings for s in series if _busy(s.observed)})
    if cal.idle_services:
        note = (f"{len(cal.idle_services)} of {cal.busy_services} services with requests in the scored stretch "
                f"served none in the reference ({', '.join(cal.idle_services[:5])}"
                f"{', …' if len(cal.idle_services) > 5 else ''})")
        log.warning("%s: any request of theirs reads as an outlier", note)
        cal.reason += "; " + note
    return cal


def _calibrate_recordings(model: Any, recordings: list[tuple[list[ServiceSeries], float]], budget: float,
                          gap_windows: int) -> Calibration:
    meshes, windows, hours = [], 0, 0.0
    for k, (series, step_s) in enumerate(recordings):
        halves = []
        for s in series:
            ref = s.reference.dropna(how="all")
            n = len(ref) // 2
            if n >= MIN_REFERENCE_WINDOWS:
                halves.append(ServiceSeries(s.service, ref.iloc[:n], ref.iloc[n:]))
        if not halves:
            continue
        feats = [service_features(h) for h in halves]
        blocks = [Block(f.to_numpy(float), np.zeros(len(f), int), h.service, f"reference {k}", "reference",
                        f.index.to_numpy(float), step_s) for h, f in zip(halves, feats)]
        scores = model.score(blocks)
        mesh = MeshScores(f"reference {k}", step_s, [b.t for b in blocks], [b.y for b in blocks], list(scores),
                          [b.service for b in blocks])
        meshes.append(mesh)
        n_windows = int(np.unique(np.concatenate(mesh.times)).size)
        windows += n_windows
        hours += n_windows * step_s / 3600.0
    if not meshes:
        return Calibration(model.threshold, model.threshold, 0, 0.0, None,
                           f"no service has {2 * MIN_REFERENCE_WINDOWS} reference windows; the trained threshold stands")
    allowed = budget * hours
    chosen, false = None, None
    candidates = candidates_for(model)
    for th in candidates:
        if th < model.threshold:
            continue
        false = incident_metrics(meshes, th, gap_windows)["false_incidents"]
        if false <= allowed:
            chosen = th
            break
    if chosen is None:
        return Calibration(candidates[-1], model.threshold, windows, hours, false,
                           f"the reference fires at every threshold; the highest, {candidates[-1]:g}, is used")
    how = "kept" if chosen == model.threshold else f"raised from {model.threshold:g}"
    return Calibration(chosen, model.threshold, windows, hours, false,
                       f"{how}: {false} false incidents in {hours:.2f} h of reference (budget {budget:g}/h)")
