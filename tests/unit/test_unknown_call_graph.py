"""Where no call edge is known (no traces, no topology, no series that name a caller), what a service's
callers experience cannot tell a root cause from a service that only passed the fault on: the alerting
service, whose symptom nothing could then explain, used to come first. The propagating state is left out,
and the service whose own latency rose most (in spreads of its baseline) leads."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from baynet.analysis import analyse
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.settings import Settings
from baynet.sources.base import Observations, Observed
from baynet.topology import topology_from_edges

T = 1_700_000_000.0


def _signals() -> pd.DataFrame:
    """front calls cart and pay (the series do not say so): every 15 s, each service's mean latency as its
    own proxy reports it. For the last three minutes cart answers 12 % slower (two to three of its baseline
    spreads: under the metrics' thresholds), and front, which waits for it, slower by the same milliseconds
    (about one of its own spreads); the detector alerted on front."""
    rng = np.random.default_rng(3)
    rows = []
    for t in np.arange(T - 1200, T + 1, 15.0):
        cart = 10.0 * float(rng.lognormal(0, 0.05)) * (1.12 if t > T - 180 else 1.0)
        pay = 10.0 * float(rng.lognormal(0, 0.05))
        front = 20.0 * float(rng.lognormal(0, 0.05)) + cart
        for svc, ms in (("front", front), ("cart", cart), ("pay", pay)):
            rows.append((t, "", svc, 15.0, np.nan, np.nan, ms, np.nan, "", "destination"))
    return pd.DataFrame(rows, columns=["time", "source", "destination", "window_s", "requests", "error_ratio",
                                       "latency_ms_avg", "latency_ms_p50", "destination_version", "reporter"])


def _analyse(topology=None):
    (event,) = parse_object({"id": "e", "service": "front", "event_type": "latency", "timestamp": T,
                             "severity": "critical"})
    obs = Observations([Observed("metrics", {"signals": _signals()})])
    return analyse(event, obs, DBNModel(), Settings(_env_file=None), topology=topology)


def test_without_a_call_graph_the_alerting_service_is_not_blamed_for_its_symptom() -> None:
    result = _analyse()
    order = [r["service"] for r in result.ranking]
    assert order[0] == "cart" and order[-1] == "pay", result.ranking
    assert any("no call graph known" in n for n in result.notes)
    # every service's posterior is its prior's: the O observations were left out, the alert with them
    assert len({round(r["posterior"], 9) for r in result.ranking}) == 1


def test_with_the_call_graph_the_callers_view_and_the_alert_are_used() -> None:
    """The same series with the calls known: front's slowness and the alert are evidence again, and with
    cart judged healthy (its rise is under the thresholds) they point at front itself."""
    graph = topology_from_edges([("front", "cart", 0.0, 0.0), ("front", "pay", 0.0, 0.0)], "default", "given")
    result = _analyse(graph)
    assert not any("no call graph known" in n for n in result.notes)
    front = next(r for r in result.ranking if r["service"] == "front")
    assert result.ranking[0]["service"] == "front" and front["posterior"] > 2 * front["prior"]


def test_an_unobserved_propagating_state_is_marginalised_alike_by_both_inferences() -> None:
    """The exact forward pass and pgmpy's variable elimination answer the same query when O is not observed
    (level -1), as the analysis passes it without a call graph."""
    model = DBNModel()
    states = {"front": [-1, -1, -1], "cart": [-1, -1, -1]}
    own = {"front": [0, 0, 0], "cart": [0, 1, 2]}
    mine, theirs = model.infer(states, own), model.infer_pgmpy(states, own)
    assert mine["cart"] == pytest.approx(theirs["cart"], abs=1e-9) and mine["cart"] > 0.5
    assert mine["front"] == pytest.approx(theirs["front"], abs=1e-9)
