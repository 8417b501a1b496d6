"""Metric windows in points of the data's own step.

A user's metrics come every 15 s, every minute or every five minutes. The analysis' slices and its baseline
are set in seconds (``BAYNET_WINDOW_S``, ``BAYNET_BASELINE_S``); here they follow the data:

* :func:`data_step` -- the data's step, read from the rows themselves;
* :func:`widen`, :func:`slices_for_step` -- slices widen to whole steps when a step is longer than a slice, so each holds
  data;
* :func:`baseline_for_step` -- the baseline ends where the first (widened) slice begins and holds at least
  :data:`BASELINE_POINTS` points of the step, reaching further back for coarse data rather than judging
  against one point or none (ten by measurement: see the README's data shapes);
* :func:`read_from` -- where a live reader at a given step must begin for that baseline.
"""

from __future__ import annotations

import math

import pandas as pd

BASELINE_POINTS = 10  # the metric baseline holds at least this many points of the data's step


def data_step(signals: pd.DataFrame | None, resources: pd.DataFrame | None) -> float | None:
    """The data's step: the shortest median spacing of one series' points, seconds (None without rows)."""
    steps = []
    for frame, key in ((signals, ["source", "destination", "reporter"]), (resources, ["service", "metric"])):
        if frame is None or frame.empty:
            continue
        d = frame.sort_values("time").groupby(key, sort=False)["time"].diff().dropna()
        d = d[d > 0]
        if len(d):
            steps.append(float(d.median()))
    return min(steps) if steps else None


def widen(slices: list[tuple[float, float]], step: float | None) -> list[tuple[float, float]]:
    """``slices`` as whole steps ending at the last slice's end when ``step`` is longer than a slice (each then
    holds data); as they are otherwise."""
    if step is None or not slices:
        return slices
    width = slices[0][1] - slices[0][0]
    if step <= width * 1.001:
        return slices
    n, end = len(slices), slices[-1][1]
    wide = math.ceil(step / width) * width
    return [(end - (n - i) * wide, end - (n - i - 1) * wide) for i in range(n)]


def slices_for_step(signals: pd.DataFrame | None, resources: pd.DataFrame | None,
                    slices: list[tuple[float, float]], step: float | None = None
                    ) -> tuple[list[tuple[float, float]], str | None]:
    """Slices that each hold data (:func:`widen` by the data's step, :func:`data_step` unless ``step`` is
    given). Returns the slices and, when they changed, a sentence saying so."""
    step = data_step(signals, resources) if step is None else step
    out = widen(slices, step)
    if out is slices:
        return slices, None
    width, wide = slices[0][1] - slices[0][0], out[0][1] - out[0][0]
    return out, f"metric data arrive every {step:.0f} s, longer than a {width:.0f} s slice: slices are {wide:.0f} s"


def baseline_for_step(baseline: tuple[float, float], first_slice: float, step: float | None,
                      points: int = BASELINE_POINTS) -> tuple[float, float]:
    """The metric baseline: it ends where the first (possibly widened) slice begins, if that is earlier than
    its own end, and holds at least ``points`` points of the data's ``step`` -- it reaches further back for
    coarse data rather than judge against one or two points (or none, when the widened slices cover the
    configured baseline)."""
    end = min(baseline[1], first_slice)
    length = max(baseline[1] - baseline[0], points * step if step else 0.0)
    return min(baseline[0], end - length), end


def read_from(baseline: tuple[float, float], slices: list[tuple[float, float]], step: float,
              points: int = BASELINE_POINTS) -> float:
    """Where a reader of metrics at ``step`` seconds must begin so that :func:`baseline_for_step` finds its
    points: the configured baseline's start, or earlier for a step longer than a slice (the slices widen to
    whole steps, and the baseline holds ``points`` of them before them)."""
    wide = widen(slices, step)
    if wide is slices:
        return baseline[0]
    return baseline_for_step(baseline, wide[0][0], step, points)[0]
