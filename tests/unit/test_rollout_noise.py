"""A harmless rollout's noise is not the service's fault: during a rollout the older versions' calls give the
service's latency (a fresh pod's warm-up is the new version's alone), and an alert on a quiet service is
not read as that service's own fault while other services changed (baynet.analysis.infer)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from baynet.analysis import analyse
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.evidence.changes import ChangeParams
from baynet.evidence.metrics import MetricThresholds, build_metric_evidence
from baynet.settings import Settings
from baynet.sources.base import Observations, Observed

T = 1_700_000_000.0
BEFORE = np.arange(15, 601, 15.0)
DURING = np.arange(615, 781, 15.0)
SLICES = [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]


def _rows(service, version, times, ms):
    return [{"time": t, "source": "front", "destination": service, "window_s": 15.0, "requests": 20.0,
             "error_ratio": 0.0, "latency_ms_p50": m, "destination_version": version, "reporter": "destination"}
            for t, m in zip(times, ms)]


def _rollout(v2_factor) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    noise = lambda n: np.exp(rng.normal(0, 0.05, n))  # noqa: E731
    return pd.DataFrame(_rows("a", "v1", BEFORE, 10 * noise(len(BEFORE)))
                        + _rows("a", "v1", DURING, 10 * noise(len(DURING)))
                        + _rows("a", "v2", DURING, 10 * v2_factor * noise(len(DURING))))


def test_a_fresh_pods_warm_up_at_each_canary_step_leaves_the_service_ok_a_lasting_slowdown_does_not():
    th = MetricThresholds()
    # a fresh pod at each step (every 60 s) answers x3 slower, settling in ~15 s
    cold = build_metric_evidence(_rollout(1 + 2.0 * np.exp(-((DURING - 615) % 60) / 15)), None, (0.0, 600.0), SLICES)
    slow = build_metric_evidence(_rollout(np.full(len(DURING), 1.8)), None, (0.0, 600.0), SLICES)
    cold, slow = cold[cold["window"] >= 0], slow[slow["window"] >= 0]
    # judged against the service before it, the new version's warm-up read x3 slower (latency_z >> 6)
    assert (cold["latency_z"] < th.z_anomalous).all() and (cold["state"] == 0).all()
    assert (cold["own_state"] == 0).all()
    # a new version slower than the old in every window: as its callers see it, and its own fault
    assert (slow["latency_z"] >= ChangeParams().canary_z).all() and (slow["state"] >= 1).all()
    assert (slow["own_state"] == 2).all()


def _analyse(changed: bool):
    """front -> cart, front -> pay; nothing moves in any series, the alert fires on front."""
    rng = np.random.default_rng(3)
    rows = []
    for t in np.arange(T - 1200, T + 1, 15.0):
        for dst in ("cart", "pay"):
            ms = 10.0 * float(rng.lognormal(0, 0.05))
            rows.append((t, "front", dst, 15.0, 30.0, 0.0, ms, "destination"))
        ms = 25.0 * float(rng.lognormal(0, 0.05))
        rows.append((t, "", "front", 15.0, 30.0, 0.0, ms, "destination"))
    signals = pd.DataFrame(rows, columns=["time", "source", "destination", "window_s", "requests", "error_ratio",
                                          "latency_ms_p50", "reporter"])
    parts = [Observed("metrics", {"signals": signals})]
    if changed:
        changes = pd.DataFrame({"time": [T - 120.0], "service": ["pay"], "kind": ["deploy"], "detail": ["v2"]})
        parts.append(Observed("changes", {"changes": changes}))
    (event,) = parse_object({"id": "e", "service": "front", "event_type": "latency", "timestamp": T,
                             "severity": "critical"})
    return analyse(event, Observations(parts), DBNModel(), Settings(_env_file=None))


def test_an_alert_on_a_quiet_service_points_at_it_unless_another_service_just_changed():
    assert _analyse(changed=False).ranking[0]["service"] == "front"
    result = _analyse(changed=True)
    assert result.ranking[0]["service"] == "pay"
    assert "recent change" in result.ranking[0]["why"]
