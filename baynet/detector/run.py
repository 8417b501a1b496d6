"""Scoring live series: Prometheus frames -> features -> the stored model -> per-window scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.detector.emit import ServiceScores
from baynet.detector.features import service_features
from baynet.detector.models import Block, DetectorModel
from baynet.detector.series import FAMILIES, ServiceSeries


def split_frames(frames: dict[str, pd.DataFrame], observed_from: float) -> list[ServiceSeries]:
    """Rows before ``observed_from`` are the reference (calibration), the rest are scored."""
    out = []
    for svc, df in sorted(frames.items()):
        df = df.dropna(how="all", axis=1)
        if df.empty:
            continue
        ref, obs = df[df.index < observed_from], df[df.index >= observed_from]
        if len(obs):
            out.append(ServiceSeries(svc, ref, obs))
    return out


def score_series(model: DetectorModel, series: list[ServiceSeries]) -> list[ServiceScores]:
    feats = [service_features(s) for s in series]
    blocks = [Block(f.to_numpy(float), np.full(len(f), -1), s.service, "live", "live")
              for s, f in zip(series, feats)]
    probs = model.score(blocks)
    out = []
    for s, f, p in zip(series, feats, probs):
        z = f[[f"{fam}_z" for fam in FAMILIES]].abs().to_numpy()
        kinds = [FAMILIES[i] for i in z.argmax(axis=1)]
        out.append(ServiceScores(s.service, f.index.to_numpy(float), np.asarray(p, float), kinds))
    return out
