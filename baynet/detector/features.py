"""Features per service and window, the same for every mesh (no service names, no time position).

Each family is first denoised (``denoise``), then expressed against the service's own reference data as a
robust z-score ``(x - median) / scale`` (scale: 1.4826·MAD, or 1.2533·mean absolute deviation where
the MAD is 0 — as in Iglewicz and Hoaglin's modified z-score — so a mostly-zero series does not turn every
small value into an extreme; and, on a reference of 100 points or more, at least its 1st-99th percentile
range over 4.653, so a tail the reference itself shows is not an outlier) compressed by
``sign(z) * log1p(|z|)``. From that:

* ``<family>_z``: the level now; ``_lag1``, ``_lag2``: the level one and two windows ago;
* ``<family>_slope``: least-squares slope over the last five windows (the trend);
* ``<family>_ewm``: an exponentially smoothed level (span 4);
* ``<family>_diff``: now minus the median of the ten windows before (a smoothed difference: onsets);
* cross features ``lat_per_load_z`` and ``cpu_per_load_z``: log latency per request and log CPU per
  request against their reference — a gray failure raises them while the load stays flat;
* ``max_abs_z`` and ``n_out``: the largest deviation over families and how many exceed 3.

A family the mesh does not publish gives zeros (no deviation), so one model serves meshes with different
metric sets. Nothing here encodes which experiment, service or time the row came from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.detector.denoise import denoise_frame
from baynet.detector.series import FAMILIES, ServiceSeries

PER_FAMILY = ("z", "lag1", "lag2", "slope", "ewm", "diff")
CROSS = ("lat_per_load_z", "cpu_per_load_z", "max_abs_z", "n_out")
FEATURES: tuple[str, ...] = tuple(f"{f}_{k}" for f in FAMILIES for k in PER_FAMILY) + CROSS
_SLOPE = np.array([2.0, 1.0, 0.0, -1.0, -2.0]) / 10.0  # np.convolve flips the kernel
_LATENCY_PREFERENCE = ("lat_p90", "lat_p99", "lat_p50")


TAIL_Q = 0.01             # the reference's 1st and 99th percentiles bound its normal range
TAIL_SPAN = 4.653         # their distance in standard deviations for normal data (2 x 2.326)
MIN_TAIL_POINTS = 100     # a 1 % tail needs 100 points to be seen at all; fewer: the MAD alone


def _robust(ref: np.ndarray, fallback: np.ndarray) -> tuple[float, float]:
    """Centre and spread of the reference (``fallback`` when it has under 3 points).

    The spread is the larger of the MAD's and, on 100 points or more (a 1 % tail is not seen in fewer),
    the reference's own 1st-99th percentile range on the normal scale. The MAD alone ignores a tail that
    over half the data never reaches: a p99 latency that sits on one histogram bucket and moves to the next
    in a tenth of the windows has a MAD near 0, and its normal next-bucket value then reads as 70 spreads.
    The percentile range counts that tail as normal; on data without one it agrees with the MAD, and a
    fault far beyond the reference's range still stands out.
    """
    data = ref[np.isfinite(ref)]
    if data.size < 3:
        data = fallback[np.isfinite(fallback)]
    if data.size == 0:
        return 0.0, 1.0
    med = float(np.median(data))
    dev = np.abs(data - med)
    scale = 1.4826 * float(np.median(dev))
    if scale == 0.0:  # over half the reference sits on its median (an idle edge, a constant bucket):
        scale = 1.2533 * float(np.mean(dev))  # the mean absolute deviation (modified z-score convention)
    if data.size >= MIN_TAIL_POINTS:
        lo, hi = np.quantile(data, [TAIL_Q, 1.0 - TAIL_Q])
        scale = max(scale, float(hi - lo) / TAIL_SPAN)
    return med, max(scale, 0.01 * abs(med), 1e-9)


def _compressed_z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    med, scale = _robust(ref, x)
    z = (x - med) / scale
    return np.sign(z) * np.log1p(np.abs(z))


def _fill(values: np.ndarray, default: float) -> np.ndarray:
    s = pd.Series(values).ffill().bfill()
    return s.fillna(default).to_numpy(float)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    out = np.empty_like(a)
    out[:k] = a[0] if a.size else 0.0
    out[k:] = a[:-k] if k else a
    return out


def family_features(zc: np.ndarray) -> dict[str, np.ndarray]:
    n = zc.size
    padded = np.concatenate([np.full(4, zc[0] if n else 0.0), zc])
    slope = np.convolve(padded, _SLOPE, mode="valid")[:n]
    s = pd.Series(zc)
    ewm = s.ewm(span=4, adjust=False).mean().to_numpy()
    past = s.shift(1).rolling(10, min_periods=1).median().to_numpy()
    diff = np.nan_to_num(zc - past, nan=0.0)
    return {"z": zc, "lag1": _shift(zc, 1), "lag2": _shift(zc, 2), "slope": slope, "ewm": ewm, "diff": diff}


def summaries(abs_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max_abs_z`` and ``n_out`` from the families' compressed |z| (families x windows): the largest
    deviation and how many families exceed 3."""
    return abs_z.max(axis=0), (abs_z > np.log1p(3.0)).sum(axis=0).astype(float)


def service_features(series: ServiceSeries) -> pd.DataFrame:
    """The feature frame of one service: one row per observed window, columns ``FEATURES``."""
    obs, ref = series.observed, series.reference
    n = len(obs)
    cols = [c for c in obs.columns if c in FAMILIES and obs[c].notna().any()]
    ref = ref.reindex(columns=cols)
    obs = obs[cols].copy()
    for c in cols:  # gaps: carry the last value; a series that starts late starts at its reference median
        ref_med = float(np.nanmedian(ref[c])) if ref[c].notna().any() else float(np.nanmedian(obs[c]))
        obs[c] = _fill(obs[c].to_numpy(float), ref_med)
        if ref[c].notna().any():
            ref[c] = _fill(ref[c].to_numpy(float), ref_med)
    ref_d, obs_d, _ = denoise_frame(ref, obs)
    out: dict[str, np.ndarray] = {name: np.zeros(n) for name in FEATURES}
    zs = []
    for c in cols:
        zc = _compressed_z(obs_d[c].to_numpy(float), ref_d[c].to_numpy(float))
        zs.append(zc)
        for k, v in family_features(zc).items():
            out[f"{c}_{k}"] = v
    eps = 1e-9
    if "load" in cols:
        load_o, load_r = obs_d["load"].to_numpy(float), ref_d["load"].to_numpy(float)
        lat = next((c for c in _LATENCY_PREFERENCE if c in cols), None)
        if lat:
            out["lat_per_load_z"] = _compressed_z(np.log((obs_d[lat].to_numpy(float) + eps) / (load_o + eps)),
                                                  np.log((ref_d[lat].to_numpy(float) + eps) / (load_r + eps)))
        if "cpu" in cols:
            out["cpu_per_load_z"] = _compressed_z(np.log((obs_d["cpu"].to_numpy(float) + eps) / (load_o + eps)),
                                                  np.log((ref_d["cpu"].to_numpy(float) + eps) / (load_r + eps)))
    if zs:
        out["max_abs_z"], out["n_out"] = summaries(np.abs(np.vstack(zs)))
    frame = pd.DataFrame(out, index=obs.index)
    return frame.replace([np.inf, -np.inf], 0.0).fillna(0.0)
