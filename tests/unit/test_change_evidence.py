"""Deployments as evidence (baynet.evidence.changes) and generated rollout incidents."""

import json

import pandas as pd
import pytest

from baynet.dbn import DBNModel
from baynet.evidence.changes import ChangeParams, canary, change_events, prior_factors


def rows(service, version, t0, n_windows, requests, error_ratio, step=15.0):
    return [{"time": t0 + step * (i + 1), "source": "front", "destination": service, "window_s": step,
             "requests": requests, "error_ratio": error_ratio, "destination_version": version,
             "reporter": "destination"} for i in range(n_windows)]


def test_a_new_version_failing_more_than_the_old_is_severe_a_harmless_one_is_not():
    sig = pd.DataFrame(rows("cart", "v1", 0, 40, 50, 0.01) + rows("cart", "v2", 300, 20, 50, 0.20)
                       + rows("user", "v1", 0, 40, 50, 0.01) + rows("user", "v2", 300, 20, 50, 0.01))
    result = canary(sig, [(300.0, 450.0), (450.0, 600.0)])
    cart = result[result["service"] == "cart"]
    user = result[result["service"] == "user"]
    assert (cart["canary_z"] > ChangeParams().canary_z).all() and (cart["new_version"] == "v2").all()
    assert (user["canary_z"] < 1).all()


def test_changes_come_from_changes_csv_and_from_versions_that_first_serve_calls():
    sig = pd.DataFrame(rows("cart", "v1", 0, 40, 50, 0.0) + rows("cart", "v2", 300, 20, 50, 0.0)
                       + rows("user", "v1", 0, 40, 50, 0.0))
    changes = pd.DataFrame({"time": [200.0], "service": ["orders"], "kind": ["config"], "detail": ["pool size"]})
    events = change_events(changes, sig, (0.0, 300.0))
    assert list(events["service"]) == ["orders", "cart"]
    assert events.iloc[1]["time"] == 315.0 and events.iloc[1]["source"] == "signals.csv destination_version"


def test_the_change_prior_decays_with_the_half_life():
    events = pd.DataFrame({"time": [1000.0, 1000.0 - 1800.0], "service": ["a", "b"], "kind": "deploy",
                           "detail": "", "source": "changes.csv"})
    f = prior_factors(events, 1000.0)
    assert f["a"] == pytest.approx(4.0) and f["b"] == pytest.approx(2.5)
    assert prior_factors(events, 500.0) == {"b": pytest.approx(1 + 3 * 0.5 ** (1300 / 1800))}  # a is later


def test_a_prior_factor_raises_the_posterior_but_healthy_observations_outweigh_it():
    m = DBNModel()
    m.update_structure({"front", "a", "b"}, {("front", "a"), ("front", "b")})
    states = {"front": [1, 1], "a": [0, 0], "b": [1, 1]}
    own = {"front": [0, 0], "a": [0, 0], "b": [1, 1]}
    plain = m.infer(states, own)
    changed = m.infer(states, own, prior_factor={"a": 4.0})
    assert changed["a"] > plain["a"] and changed["a"] < plain["b"]  # a changed, b is the one misbehaving
    exact = m.infer_pgmpy(states, own, prior_factor={"a": 4.0})
    for s in changed:
        assert changed[s] == pytest.approx(exact[s], abs=1e-9)


def test_generated_rollouts_the_bad_deployment_is_found_among_harmless_ones(tmp_path):
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle
    from baynet.lab.datasets.rollouts import rollout_bundle

    out = rollout_bundle(tmp_path / "r", "sock-shop", "catalogue", seed=4)
    changed = set(pd.read_csv(out / "changes.csv")["service"])
    assert "catalogue" in changed and len(changed) == 3
    result = analyse_bundle(load_bundle(out))
    assert result.ranking[0]["service"] == json.loads((out / "truth.json").read_text())["root_cause"]
    assert "v2 error ratio" in result.ranking[0]["evidence"] and "against v1" in result.ranking[0]["evidence"]
    assert any("recent changes" in n for n in result.notes)
