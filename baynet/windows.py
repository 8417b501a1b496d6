"""The time windows of one analysis: a baseline, a gap, then the incident slices ending at the anomaly time;
and the rule by which a trace baseline too short to judge by runs on into the gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from baynet.settings import Settings


@dataclass
class Windows:
    """Baseline and incident slices in unix seconds; the last slice ends at the anomaly time plus the
    settle time (``BAYNET_SETTLE_S``, 0 by default)."""

    baseline: tuple[float, float]
    slices: list[tuple[float, float]]

    @classmethod
    def around(cls, at: float, settings: "Settings") -> "Windows":
        w, n = settings.window_s, settings.slices
        first = at + settings.settle_s - n * w
        slices = [(first + i * w, first + (i + 1) * w) for i in range(n)]
        b_end = first - settings.baseline_gap_s
        return cls((b_end - settings.baseline_s, b_end), slices)

    @property
    def incident(self) -> tuple[float, float]:
        return self.slices[0][0], self.slices[-1][1]

    @property
    def gap(self) -> tuple[float, float]:
        """Between the baseline and the first slice (``BAYNET_BASELINE_GAP_S``): kept out of the baseline so a
        slow onset does not become the norm, and read only where the baseline holds too little data
        (:func:`baseline_into_gap`)."""
        return self.baseline[1], self.slices[0][0]

    def baseline_pieces(self, length: int) -> list[tuple[float, float]]:
        """The baseline cut into pieces of ``length`` seconds (the last one shorter where it does not
        divide): what a per-slice read budget is spent on in the baseline."""
        return _pieces(self.baseline, length)

    def gap_pieces(self, length: int) -> list[tuple[float, float]]:
        """The gap cut the same way."""
        return _pieces(self.gap, length)


def _pieces(span: tuple[float, float], length: int) -> list[tuple[float, float]]:
    lo, hi = span
    return [(a, min(hi, a + length)) for a in range(int(lo), int(hi), length)]


def thin_baseline(starts_s: np.ndarray, baseline: tuple[float, float], slices: list[tuple[float, float]]) -> bool:
    """Whether the spans (``starts_s``, unix seconds) inside ``baseline`` cover less than one slice."""
    inside = starts_s[(starts_s >= baseline[0]) & (starts_s < baseline[1])]
    return bool(slices) and not (len(inside) and inside.max() - inside.min() >= slices[0][1] - slices[0][0])


def baseline_into_gap(starts_s: np.ndarray, baseline: tuple[float, float], slices: list[tuple[float, float]]
                      ) -> tuple[float, float] | None:
    """The baseline run on to the first slice where its spans (``starts_s``, unix seconds) cover less than
    one slice (:func:`thin_baseline`) and there are spans between it and the first slice (the gap,
    ``BAYNET_BASELINE_GAP_S``), else None. The gap keeps a slow onset out of the baseline; but where the
    data begin late (retention, a fresh deployment, an outage of the tracing backend, an alert that came
    early) the choice is between a baseline of a few seconds -- every operation's usual duration read from
    a handful of spans -- and one that includes the gap: the gap is the lesser risk. The live reader reads
    the gap on the same rule (:mod:`baynet.sources.tempo`); the trace evidence judges against it
    (:func:`baynet.evidence.traces.build_evidence`)."""
    if not thin_baseline(starts_s, baseline, slices):
        return None
    if not ((starts_s >= baseline[1]) & (starts_s < slices[0][0])).any():
        return None
    return baseline[0], slices[0][0]
