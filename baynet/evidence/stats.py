"""Significance of what a slice shows against a baseline, with the sample size behind both.

Every test here answers "how surprising is this count (or this duration) if nothing changed?" as a
score ``-log10(p)``: 3 means a one-in-a-thousand chance. A handful of spans can never reach a high score,
hundreds can; a baseline of three spans widens the predictive distribution instead of pretending to know
the service's spread.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

# Scores are capped: past this the data says "certainly changed" and more zeros add nothing.
MAX_SCORE = 30.0


def _score(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.minimum(-np.log10(np.clip(p, 1e-300, 1.0)), MAX_SCORE)


def normal_tail(z: float) -> float:
    """Upper tail probability of a standard normal at ``z`` (3 -> 0.00135)."""
    return float(stats.norm.sf(z))


def shrunk_sd(sd: np.ndarray, n: np.ndarray, prior_sd: float, prior_n: float) -> np.ndarray:
    """Posterior spread of each operation's log duration: its own sample variance pooled with the mesh's
    typical one (``prior_sd``, worth ``prior_n`` observations). One or two baseline spans give no spread
    of their own; hundreds override the prior."""
    dof = np.maximum(n - 1, 0)
    var = np.where(dof > 0, np.nan_to_num(sd) ** 2, 0.0)
    return np.sqrt((prior_n * prior_sd ** 2 + dof * var) / (prior_n + dof))


def predictive_tails(x: np.ndarray, mu: np.ndarray, sd: np.ndarray, n: np.ndarray, prior_n: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower tail probabilities of ``x`` under the Student-t predictive distribution of a new
    observation given a baseline of ``n`` observations with mean ``mu`` and (shrunk) spread ``sd``."""
    scale = sd * np.sqrt(1.0 + 1.0 / np.maximum(n, 1))
    dof = prior_n + np.maximum(n - 1, 0)
    t = (x - mu) / scale
    return stats.t.sf(t, dof), stats.t.cdf(t, dof)


def rate_prior(k: np.ndarray, n: np.ndarray, weight: float) -> tuple[float, float]:
    """Beta prior for a per-service rate, centred on the rate pooled over every service of the mesh
    (``k`` hits of ``n``), worth ``weight`` observations."""
    total_n = float(np.sum(n))
    mean = (float(np.sum(k)) + 0.5) / (total_n + 1.0)
    return mean * weight, (1.0 - mean) * weight


def excess_score(k: np.ndarray, n: np.ndarray, base_k: np.ndarray, base_n: np.ndarray, prior: tuple[float, float]
                 ) -> np.ndarray:
    """Score of ``k`` hits in ``n`` trials when the baseline had ``base_k`` of ``base_n`` (Beta posterior
    mean with ``prior``): a one-sided binomial test. Zero trials score 0."""
    a, b = prior
    p0 = (base_k + a) / (base_n + a + b)
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    p = np.where(n > 0, stats.binom.sf(k - 1, np.maximum(n, 1), p0), 1.0)
    return np.where(k > 0, _score(p), 0.0)
