"""Evidence that knows its sample size: spreads from few spans, counts against a baseline share."""

import numpy as np
import pandas as pd

from baynet.evidence import build_evidence
from baynet.evidence import stats
from baynet.otlp import Span


def test_a_share_resting_on_more_spans_weighs_more():
    prior = stats.rate_prior(np.array([5]), np.array([500]), 20.0)
    few, many = stats.excess_score(np.array([4, 400]), np.array([5, 500]), np.array([1, 1]), np.array([100, 100]),
                                   prior)
    assert 2 < few < many
    # the baseline's own share is what is expected: the same share scores nothing
    same = stats.excess_score(np.array([10]), np.array([100]), np.array([10]), np.array([100]), prior)
    assert same[0] < 1.5


def test_a_small_baseline_widens_the_predictive_tails():
    mu, sd = np.array([0.0, 0.0]), np.array([0.1, 0.1])
    up, _ = stats.predictive_tails(np.array([0.4, 0.4]), mu, sd, np.array([3, 300]), 4.0)
    assert up[0] > 5 * up[1]
    # three spans with no spread of their own take the mesh's typical spread, hundreds keep theirs
    shrunk = stats.shrunk_sd(np.array([0.0, 0.02]), np.array([3, 300]), 0.3, 4.0)
    assert shrunk[0] > 0.2 and shrunk[1] < 0.05


def _spans(service: str, op: str, durations_ms: list[float], start_s: float, step_s: float) -> list[Span]:
    out = []
    for i, d in enumerate(durations_ms):
        t = int((start_s + i * step_s) * 1e9)
        out.append(Span(f"{hash((service, start_s, i)) & (2**64 - 1):032x}", f"{i + 1:016x}", "", service, op,
                        "server", t, t + int(d * 1e6), "unset"))
    return out


def test_a_few_baseline_spans_do_not_make_ordinary_variation_fast():
    rng = np.random.default_rng(0)
    # 'thin': three baseline spans of ~10 ms; in the incident ~7 ms (30 % faster) -- within what three
    # spans can tell. 'thick': 300 tight baseline spans; the same 30 % is far outside them.
    base = (_spans("thin", "op", [10.0, 10.1, 9.9], 0, 10)
            + _spans("thick", "op", list(10 + rng.normal(0, 0.1, 300)), 0, 0.1))
    incident = (_spans("thin", "op", [7.0] * 5, 100, 10) + _spans("thick", "op", [7.0] * 50, 100, 1))
    ev, _ = build_evidence(base + incident, (0, 60), [(100, 160)])
    inc = ev[ev.window == 0].set_index("service")
    assert inc.loc["thin", "fast_frac"] == 0.0 and inc.loc["thin", "own_state"] == 0
    assert inc.loc["thick", "fast_frac"] == 1.0 and inc.loc["thick", "own_state"] == 2
