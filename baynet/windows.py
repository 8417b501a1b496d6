"""The time windows of one analysis: a baseline, then the incident slices ending at the anomaly time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def baseline_pieces(self, length: int) -> list[tuple[float, float]]:
        """The baseline cut into pieces of ``length`` seconds (the last one shorter where it does not
        divide): what a per-slice read budget is spent on in the baseline."""
        lo, hi = self.baseline
        return [(a, min(hi, a + length)) for a in range(int(lo), int(hi), length)]
