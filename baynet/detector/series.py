"""Metric series for the detector: the data model (a service's reference and observed frames, faults, cases)
and coarsening to a longer step. The families and how they are read from Prometheus: :mod:`baynet.families`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from baynet.families import FAMILIES

__all__ = ["FAMILIES", "Case", "Fault", "ServiceSeries", "coarsen"]


@dataclass
class ServiceSeries:
    """One service's series: ``reference`` is known-normal history (calibration), ``observed`` is scored.

    Both are frames indexed by unix seconds with one column per family present. ``labels`` (evaluation
    only) holds one value per observed row: 1 anomalous, 0 normal, -1 unknown (not scored)."""

    service: str
    reference: pd.DataFrame
    observed: pd.DataFrame
    labels: np.ndarray | None = None


@dataclass
class Fault:
    service: str
    start: int  # index into the observed rows of that service
    end: int    # exclusive
    kind: str = ""


@dataclass
class Case:
    """A unit of evaluation: one experiment run (RCD) or one day of experiments (Nezha)."""

    name: str
    group: str  # what is held out together (never in training and test at once)
    step_s: float
    services: list[ServiceSeries]
    faults: list[Fault] = field(default_factory=list)


def coarsen(case: Case, step_s: float) -> Case:
    """``case`` at a step of ``step_s`` (no change when its own step is that long or longer): each window
    the mean of the rows in it, as a scrape at that interval would average them; a window is anomalous
    when any row in it is, unknown when any is unknown and none anomalous. Faults follow the new windows."""
    if step_s <= case.step_s:
        return case
    services, faults = [], []
    kinds = {f.service: f.kind for f in case.faults}
    for s in case.services:
        def agg(frame: pd.DataFrame) -> pd.DataFrame:
            if frame.empty:
                return frame
            keys = np.floor(frame.index.to_numpy(float) / step_s) * step_s
            return frame.groupby(keys).mean()

        obs = agg(s.observed)
        labels = None
        if s.labels is not None and len(s.observed):
            keys = np.floor(s.observed.index.to_numpy(float) / step_s) * step_s
            lab = pd.Series(np.asarray(s.labels), index=keys).groupby(level=0)
            labels = np.where(lab.max().to_numpy() == 1, 1, np.where(lab.min().to_numpy() == -1, -1, 0))
        services.append(ServiceSeries(s.service, agg(s.reference), obs, labels))
        if labels is not None and s.service in kinds:
            runs = np.flatnonzero(np.diff(np.r_[0, (labels == 1).astype(int), 0]))
            faults += [Fault(s.service, int(a), int(b), kinds[s.service]) for a, b in zip(runs[::2], runs[1::2])]
    return Case(case.name, case.group, float(step_s), services, faults)
