"""TUNA-style denoising, adapted per series.

Metrics scraped from a mesh carry bursts that are not failures: a GC pause, one slow scrape, a retry
storm of a single window. A classifier trained on them learns noise, and a threshold set on them fires on
it. The TUNA idea: look at a sliding window's *relative range* — how far the newest point sits from the
window's median, relative to that median — and compare it with a threshold calibrated on normal data.

Why the window and threshold differ per series. A volatile series (request latency under bursty load)
swings widely in normal operation: it needs a short window, so the median follows it, and a high
threshold, so ordinary swings are not cut. A near-constant series (memory, a idle service's CPU) hardly
moves: it gets a long window, so the median is stable, and a low threshold, since any burst stands out.
The volatility is measured on the reference (known-normal) data as the robust coefficient of variation of
the window-to-window change; the threshold is a high quantile of the reference's own relative ranges,
never below an absolute floor.

Why only *bursts* are replaced. A stable oscillation stays inside the calibrated threshold and is left
alone. A point that jumps out of band while the point before it was in band is a burst candidate: it is
replaced by the window median. If the next point is out of band too, the series has *shifted* — that is
what a gray failure looks like — and it is passed through. The filter is causal: each point is decided
from the past only, so a real shift reaches the features one window late and no later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLOOR = 0.05  # relative deviations below 5 % of the median are never called bursts
TIERS = (  # (robust CV of the change at least, window, quantile): most volatile first
    (0.20, 3, 0.995),
    (0.02, 5, 0.99),
    (0.0, 10, 0.95),
)


@dataclass(frozen=True)
class DenoiseParams:
    window: int
    threshold: float
    volatility: float


def _relative_deviation(values: np.ndarray, window: int, scale_floor: float) -> np.ndarray:
    """|x_t - median(x_{t-window..t-1})| / max(|median|, scale_floor); NaN for the first points."""
    s = pd.Series(values)
    med = s.shift(1).rolling(window, min_periods=max(2, window // 2)).median().to_numpy()
    return np.abs(values - med) / np.maximum(np.abs(med), scale_floor)


def _scale_floor(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1e-9
    mad = np.median(np.abs(finite - np.median(finite)))
    return float(max(1.4826 * mad, 1e-3 * np.max(np.abs(finite)), 1e-9))


def calibrate(reference: np.ndarray) -> DenoiseParams:
    """Window and threshold for one series from its reference (normal) data."""
    ref = np.asarray(reference, float)
    ref = ref[np.isfinite(ref)]
    if ref.size < 8:
        return DenoiseParams(TIERS[-1][1], FLOOR, 0.0)
    diff = np.abs(np.diff(ref))
    level = max(abs(float(np.median(ref))), _scale_floor(ref))
    volatility = float(1.4826 * np.median(diff) / level + np.mean(diff) / level)
    window, quantile = next((w, q) for cv, w, q in TIERS if volatility >= cv)
    dev = _relative_deviation(ref, window, _scale_floor(ref))
    dev = dev[np.isfinite(dev)]
    threshold = max(float(np.quantile(dev, quantile)) if dev.size else FLOOR, FLOOR)
    return DenoiseParams(window, threshold, volatility)


def denoise(values: np.ndarray, params: DenoiseParams, scale_floor: float | None = None) -> np.ndarray:
    """Replace single-window bursts by the trailing median; keep shifts (two or more windows out of band)."""
    x = np.asarray(values, float).copy()
    if x.size == 0:
        return x
    floor = _scale_floor(x) if scale_floor is None else scale_floor
    s = pd.Series(x)
    med = s.shift(1).rolling(params.window, min_periods=max(2, params.window // 2)).median().to_numpy()
    dev = np.abs(x - med) / np.maximum(np.abs(med), floor)
    out = np.nan_to_num(dev, nan=0.0) > params.threshold
    prev_out = np.concatenate([[False], out[:-1]])
    burst = out & ~prev_out  # first out-of-band point: held back until the next one confirms a shift
    x[burst] = med[burst]
    return x


def denoise_frame(reference: pd.DataFrame, observed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                             dict[str, DenoiseParams]]:
    """Denoise every column of both frames with parameters calibrated on ``reference``."""
    params: dict[str, DenoiseParams] = {}
    ref_out, obs_out = {}, {}
    for col in observed.columns:
        ref = reference[col].to_numpy(float) if col in reference else np.array([])
        p = calibrate(ref)
        params[col] = p
        floor = _scale_floor(ref) if ref.size else None
        ref_out[col] = denoise(ref, p, floor) if ref.size else ref
        obs_out[col] = denoise(observed[col].to_numpy(float), p, floor)
    return (pd.DataFrame(ref_out, index=reference.index), pd.DataFrame(obs_out, index=observed.index), params)
