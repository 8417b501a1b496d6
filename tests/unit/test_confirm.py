"""Confirmed root causes: stored with who and when, withdrawable, folded into the model's priors, and one
wrong confirmation moves the ranking only boundedly."""

import itertools
import json
import math
import random

import pytest
from typer.testing import CliRunner

from baynet.artifacts import LocalStore
from baynet.dbn import DBNModel
from baynet.state import ConfirmationError, Confirmations, ModelLog


def _model(rng: random.Random) -> tuple[DBNModel, dict, dict, list[str]]:
    services = [f"s{i}" for i in range(6)]
    m = DBNModel()
    edges = {(a, b) for a, b in itertools.combinations(services, 2) if rng.random() < 0.4}
    m.update_structure(set(services), edges)
    states = {s: [rng.choice([0, 0, 1, 2]) for _ in range(3)] for s in services}
    own = {s: [rng.choice([0, 0, 0, 1, 2]) for _ in range(3)] for s in services}
    return m, states, own, services


def _odds(p: float) -> float:
    p = min(max(p, 1e-300), 1 - 1e-16)
    return p / (1 - p)


def test_one_wrong_confirmation_moves_any_two_services_odds_by_at_most_the_bound():
    rng = random.Random(7)
    worst = 0.0
    for trial in range(60):
        m, states, own, services = _model(rng)
        for _ in range(trial % 4):  # some earlier confirmations, so counts are not at the prior
            m.confirm(rng.choice(services), services)
        before = m.infer(states, own, services)
        wrong = min(services, key=lambda s: before[s])  # confirm the least likely service: the worst case
        m.confirm(wrong, services)
        after = m.infer(states, own, services)
        for a, b in itertools.permutations(services, 2):
            moved = (_odds(after[a]) / _odds(after[b])) / (_odds(before[a]) / _odds(before[b]))
            worst = max(worst, moved)
    bound = DBNModel().confirmation_bound()
    assert 1.5 < worst <= bound + 1e-9
    assert bound == pytest.approx((1.5 / 0.5 / 0.9) / (0.9 * 9.5 / 10.5))


def test_a_service_far_ahead_stays_ahead_after_a_wrong_confirmation():
    m = DBNModel()
    m.update_structure({"front", "cart", "db"}, {("front", "cart"), ("cart", "db")})
    states = {"front": [2, 2, 2], "cart": [2, 2, 2], "db": [2, 2, 2]}
    own = {"front": [0, 0, 0], "cart": [0, 0, 0], "db": [2, 2, 2]}
    before = m.infer(states, own)
    assert max(before, key=before.get) == "db"
    ratio = _odds(before["db"]) / max(_odds(before[s]) for s in ("front", "cart"))
    assert ratio > m.confirmation_bound()
    m.confirm("front", ["front", "cart", "db"])
    after = m.infer(states, own)
    assert max(after, key=after.get) == "db"
    assert after["front"] > before["front"]  # it moved, within the bound


def _incident(store: LocalStore, event_id: str, ts: str, services: list[str]) -> None:
    store.put_json(f"incidents/{event_id}/ranking.json", {
        "event": {"id": event_id, "service": services[0], "namespace": "ns", "timestamp": ts},
        "ranking": [{"rank": i + 1, "service": s, "posterior": 0.1} for i, s in enumerate(services)]})
    store.put(f"incidents/{event_id}/_COMPLETE", "x")


def test_confirmations_are_stored_folded_and_withdrawn(tmp_path):
    store = LocalStore(tmp_path)
    _incident(store, "e1", "2026-05-01T10:00:00+00:00", ["front", "cart", "db"])
    _incident(store, "e2", "2026-05-01T11:00:00+00:00", ["front", "cart", "db"])
    plain = ModelLog(store, "ns").current()
    conf = Confirmations(store)
    record = conf.add("e2", "db", by="alice", note="disk full")
    assert record["by"] == "alice" and record["at"] and conf.of("e2")["root_cause"] == "db"
    learned = ModelLog(store, "ns").current()
    assert learned.prior("db") > plain.prior("db") and learned.prior("front") < plain.prior("front")
    # a confirmation of an older incident, arriving later, is folded in its place (same as in order)
    conf.add("e1", "cart")
    both = ModelLog(store, "ns").current()
    in_order = DBNModel()
    in_order.confirm("cart", ["front", "cart", "db"])
    in_order.confirm("db", ["front", "cart", "db"])
    assert both.root_counts == in_order.root_counts
    # withdrawn: as if never confirmed
    conf.add("e1", None, withdraw=True)
    conf.add("e2", None, withdraw=True)
    assert ModelLog(store, "ns").current().root_counts == plain.root_counts
    assert conf.of("e2")["withdrawn"] is True
    with pytest.raises(ConfirmationError, match="'nope' is not among the 3 services"):
        conf.add("e1", "nope")
    with pytest.raises(ConfirmationError, match="no complete analysis of event 'e9'"):
        conf.add("e9", "db")


def test_confirm_command(tmp_path, monkeypatch):
    from baynet.cli import app

    monkeypatch.setenv("BAYNET_ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.delenv("BAYNET_S3_BUCKET", raising=False)
    _incident(LocalStore(tmp_path), "e1", "2026-05-01T10:00:00+00:00", ["front", "cart"])
    runner = CliRunner()
    ok = runner.invoke(app, ["confirm", "e1", "--root-cause", "cart", "--by", "bob"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["root_cause"] == "cart"
    bad = runner.invoke(app, ["confirm", "e1", "--root-cause", "carts"])
    assert bad.exit_code == 2 and "'carts' is not among" in bad.output
    assert runner.invoke(app, ["confirm", "e1"]).exit_code == 2  # neither --root-cause nor --withdraw
    assert math.isfinite(ModelLog(LocalStore(tmp_path), "ns").current().prior("cart"))
