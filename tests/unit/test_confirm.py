"""Confirmed root causes: stored with who and when, withdrawable, folded into the model's priors, and one
wrong confirmation moves the ranking only boundedly."""

import itertools
import json
import math
import random

import pytest
from typer.testing import CliRunner

from baynet.artifacts import LocalStore
from baynet.dbn import DBNModel, confirmed_propagation
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
    worst, moved_edges = 0.0, 0
    for trial in range(60):
        m, states, own, services = _model(rng)
        for _ in range(trial % 4):  # some earlier confirmations, so counts are not at the prior
            m.confirm(rng.choice(services), services)
        before = m.infer(states, own, services)
        wrong = min(services, key=lambda s: before[s])  # confirm the least likely service: the worst case
        way = confirmed_propagation(wrong, states, m.callees)
        strengths = dict(m.edge_counts)
        m.confirm(wrong, services, way)
        moved_edges += sum(m.edge_counts[k] != v for k, v in strengths.items())
        after = m.infer(states, own, services)
        for a, b in itertools.permutations(services, 2):
            moved = (_odds(after[a]) / _odds(after[b])) / (_odds(before[a]) / _odds(before[b]))
            worst = max(worst, moved)
    bound = DBNModel().confirmation_bound(slices=3)
    assert moved_edges > 0  # strengths moved too, in some of the networks
    assert 1.5 < worst <= bound + 1e-9
    assert bound == pytest.approx((1.5 / 0.5 / 0.9) / (0.9 * 9.5 / 10.5) * math.exp(2 * 3 * 0.1 / 2.0) ** 2)


def test_the_strength_part_of_the_bound_holds_where_only_strengths_move():
    """Confirm with priors frozen (a huge root prior): what moves the odds is the strength update alone,
    which must stay within its part of the bound, exp(2 T w / min(edge prior)) per service, squared."""
    rng = random.Random(11)
    worst = 0.0
    for _ in range(80):
        m, states, own, services = _model(rng)
        m.params.root_prior = (1e9, 1.9e10)
        m.root_counts = {s: list(m.params.root_prior) for s in services}
        m.params.confirm_edge_weight = 2.0  # large, so the bound is tested where it bites
        before = m.infer(states, own, services)
        root = rng.choice(services)
        m.confirm(root, services, confirmed_propagation(root, states, m.callees))
        after = m.infer(states, own, services)
        for a, b in itertools.permutations(services, 2):
            worst = max(worst, (_odds(after[a]) / _odds(after[b])) / (_odds(before[a]) / _odds(before[b])))
    edge_part = math.exp(2 * 3 * 2.0 / 2.0) ** 2
    assert 1.05 < worst <= edge_part


def test_confirmed_propagation_walks_up_from_the_root_cause():
    callees = {"front": ["cart", "user"], "cart": ["db"], "user": [], "db": []}
    states = {"front": [0, 1, 1], "cart": [0, 2, 2], "user": [1, 1, 0], "db": [1, 1, 1]}
    way = {(e["caller"], e["callee"]): e["share"] for e in confirmed_propagation("db", states, callees)}
    # db bad in 3 slices, cart in 2 of them; cart bad in 2, front in both; front -> user is off the way
    assert way == {("cart", "db"): pytest.approx(2 / 3), ("front", "cart"): 1.0}
    m = DBNModel()
    m.update_structure(set(callees), {(a, c) for a, cs in callees.items() for c in cs})
    before = {k: m.strength(*k) for k in [("cart", "db"), ("front", "cart"), ("front", "user")]}
    m.confirm("db", list(callees), confirmed_propagation("db", states, callees))
    assert m.strength("front", "cart") > before[("front", "cart")]
    assert m.strength("front", "user") == before[("front", "user")]
    w = m.params.confirm_edge_weight
    assert m.edge_counts["cart->db"] == pytest.approx([3 + w * 2 / 3, 2 + w / 3])


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


def test_a_confirmation_moves_the_strengths_on_its_way_and_a_withdrawal_undoes_it(tmp_path):
    store = LocalStore(tmp_path)
    _incident(store, "e1", "2026-05-01T10:00:00+00:00", ["front", "cart", "db"])
    ModelLog(store, "ns").store.put_json("model/ns/base.json", _chain_model().to_json())
    store.put_json("incidents/e1/model.json", _chain_model().to_json())
    store.put("incidents/e1/evidence.csv", "service,window,state\n" + "".join(
        f"{s},{w},{v}\n" for s, vals in {"front": [0, 1], "cart": [1, 1], "db": [2, 2]}.items()
        for w, v in zip([0, 1], vals)) + "front,-1,0\ncart,-1,0\ndb,-1,0\n")
    plain = ModelLog(store, "ns").current()
    record = Confirmations(store).add("e1", "db")
    assert {(e["caller"], e["callee"]) for e in record["propagation"]} == {("cart", "db"), ("front", "cart")}
    learned = ModelLog(store, "ns").current()
    assert learned.strength("cart", "db") > plain.strength("cart", "db")
    assert learned.strength("front", "cart") < plain.strength("front", "cart")  # bad in only half of cart's
    Confirmations(store).add("e1", None, withdraw=True)
    assert ModelLog(store, "ns").current().edge_counts == plain.edge_counts


def _chain_model() -> DBNModel:
    m = DBNModel()
    m.update_structure({"front", "cart", "db"}, {("front", "cart"), ("cart", "db")})
    return m


def test_confirm_command(tmp_path, monkeypatch):
    from baynet.cli.main import app

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


def test_confirmed_changes_are_kept_and_the_change_prior_is_learnt_from_them(tmp_path):
    from baynet.evidence.changes import ChangeParams, learn_change_params

    store = LocalStore(tmp_path)
    members = ["front", "cart", "db", "user", "pay"]
    for k in range(12):
        _incident(store, f"e{k}", f"2026-05-01T{10 + k}:00:00+00:00", members)
        fetch = {"change_ages": {"cart": 60.0, "db": 900.0}} if k % 2 == 0 else {"change_ages": {"cart": 900.0,
                                                                                                "db": 60.0}}
        ranking = store.get_json(f"incidents/e{k}/ranking.json")
        store.put_json(f"incidents/e{k}/ranking.json", {**ranking, "fetch": fetch})
        record = Confirmations(store).add(f"e{k}", "cart" if k % 2 == 0 else "db")  # the latest change, always
        assert record["changed"] == fetch["change_ages"]
    model = ModelLog(store, "ns").current()
    assert len(model.change_history) == 12
    learnt = learn_change_params(model.change_history)
    start = ChangeParams()
    # the latest change was always the cause: a larger boost, and a half-life that tells 1 min from 15 min
    assert learnt.boost > start.boost and learnt.half_life_s < start.half_life_s
    assert DBNModel.from_json(model.to_json()).change_history == model.change_history
    # changes that were never the cause: the boost falls towards 1
    never = [{"root": "front", "members": members, "changed": {"cart": 60.0}} for _ in range(30)]
    assert learn_change_params(never).boost < start.boost
    assert learn_change_params([]) == start
    # a withdrawal takes its incident out of the history
    Confirmations(store).add("e0", None, withdraw=True)
    assert len(ModelLog(store, "ns").current().change_history) == 11


def test_the_learnt_change_prior_reaches_the_analysis():
    import pandas as pd

    from baynet.evidence.changes import judge
    from baynet.settings import Settings
    from baynet.sources.base import Observations, Observed
    from baynet.windows import Windows

    changes = pd.DataFrame({"time": [1000.0 - 60, 1000.0 - 900], "service": ["cart", "db"], "kind": "deploy",
                            "detail": ""})
    obs = Observations([Observed("changes", {"changes": changes, "versions": None})])
    windows = Windows.around(1000.0, Settings())
    plain = judge(obs, windows, Settings(), DBNModel())
    assert plain.prior_factor["cart"] / plain.prior_factor["db"] < 1.5  # 30-min half-life: nearly equal
    m = DBNModel()
    m.change_history = [{"root": "cart", "members": ["front", "cart", "db"], "changed": {"cart": 60.0, "db": 900.0}}
                        for _ in range(20)]
    learnt = judge(obs, windows, Settings(), m)
    assert learnt.prior_factor["cart"] / learnt.prior_factor["db"] > 2
    assert learnt.change_ages == {"cart": 60.0, "db": 900.0}
    assert any("learnt from 20 confirmed incident(s)" in n for n in learnt.notes)
