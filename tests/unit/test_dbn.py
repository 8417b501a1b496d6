import itertools
import random

import pytest

from baynet.dbn import O_STATES, R_STATES, S_STATES, DBNModel


def chain_model(edges, services=None):
    m = DBNModel()
    services = services or {s for e in edges for s in e}
    m.update_structure(set(services), set(edges))
    return m


def test_posterior_by_hand_one_slice():
    # front calls db; front is degraded, db is fine, no own-work anomaly anywhere.
    m = chain_model({("front", "db")})
    post = m.infer({"front": [1], "db": [0]}, {"front": [0], "db": [0]})
    prior = 0.5 / (0.5 + 9.5)
    # noisy-MAX: P(O<=l) = prod of causes' CDFs. Leak (.94,.05,.01); own fault (.40,.30,.30).
    p_deg_no_fault = 0.05
    p_deg_fault = (0.99 * 0.70) - (0.94 * 0.40)
    # own-work state ok: P(S=ok | fault) = 0.2, P(S=ok | no fault) = 0.9
    p_s_ok_fault, p_s_ok_no_fault = 0.2, 0.9
    num = prior * p_deg_fault * p_s_ok_fault
    expected = num / (num + (1 - prior) * p_deg_no_fault * p_s_ok_no_fault)
    assert post["front"] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.06903, abs=1e-5)


def test_callee_failure_explains_caller():
    m = chain_model({("front", "db")})
    alone = m.infer({"front": [2], "db": [0]}, {"front": [0], "db": [0]})["front"]
    explained = m.infer({"front": [2], "db": [2]}, {"front": [0], "db": [0]})["front"]
    assert explained < alone / 5


def brute_force(bn, evidence, query):
    """P(query=yes | evidence) by summing the full joint of the pgmpy network over hidden variables."""
    cpds = {c.variable: c for c in bn.get_cpds()}
    hidden = [v for v in bn.nodes() if v not in evidence]
    states = {v: cpds[v].state_names[v] for v in bn.nodes()}
    total = yes = 0.0
    for combo in itertools.product(*(states[v] for v in hidden)):
        assign = {**evidence, **dict(zip(hidden, combo))}
        p = 1.0
        for var, cpd in cpds.items():
            p *= cpd.get_value(**{k: assign[k] for k in cpd.scope()})
            if p == 0:
                break
        total += p
        if assign[query] == "yes":
            yes += p
    return yes / total


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_equals_pgmpy_and_brute_force(seed):
    rng = random.Random(seed)
    services = ["a", "b", "c", "d"]
    edges = {("a", "b"), ("a", "c"), ("b", "d")} | ({("a", "d")} if seed % 2 else set())
    m = chain_model(edges, services)
    m.update_parameters([{"caller": "a", "callee": "b", "child_bad": rng.randint(0, 20), "both_bad": rng.randint(0, 5)}])
    slices = 2
    states = {s: [rng.randint(0, 2) for _ in range(slices)] for s in services}
    own = {s: [rng.randint(0, 2) for _ in range(slices)] for s in services}
    fast = m.infer(states, own)
    ve = m.infer_pgmpy(states, own)
    bn = m.to_pgmpy(slices, services)
    evidence = {f"O|{s}|{t}": O_STATES[states[s][t]] for s in services for t in range(slices)}
    evidence |= {f"S|{s}|{t}": S_STATES[own[s][t]] for s in services for t in range(slices)}
    for s in services:
        exact = brute_force(bn, evidence, f"R|{s}|{slices - 1}")
        assert fast[s] == pytest.approx(exact, abs=1e-9)
        assert ve[s] == pytest.approx(exact, abs=1e-9)


def test_parent_divorcing_is_exact():
    callees = [f"c{i}" for i in range(5)]  # 5 callees > GROUP: divorced into two M nodes
    m = chain_model({("hub", c) for c in callees})
    states = {"hub": [2], **{c: [i % 3] for i, c in enumerate(callees)}}
    own = {s: [0] for s in states}
    bn = m.to_pgmpy(1)
    assert any(n.startswith("M|hub|") for n in bn.nodes())
    assert max(len(bn.get_parents(n)) for n in bn.nodes()) <= 4
    assert m.infer_pgmpy(states, own)["hub"] == pytest.approx(m.infer(states, own)["hub"], abs=1e-9)


def test_missing_evidence_is_marginalised():
    m = chain_model({("a", "b"), ("b", "c")})
    post = m.infer_pgmpy({"a": [2], "c": [2]}, {"a": [0], "c": [1]}, services=["a", "b", "c"])
    assert 0 < post["b"] < 1 and post["c"] > post["a"]


def test_leaf_error_in_chain_ranks_first():
    m = chain_model({("front", "mid"), ("mid", "leaf")})
    states = {"front": [0, 2, 2], "mid": [0, 2, 2], "leaf": [0, 2, 2]}
    own = {"front": [0, 0, 0], "mid": [0, 0, 0], "leaf": [0, 1, 1]}
    post = m.infer(states, own)
    assert max(post, key=post.get) == "leaf"
    assert m.propagation_path("leaf", "front", states) == ["leaf", "mid", "front"]


def test_callers_own_fault_ranks_caller_first():
    m = chain_model({("front", "mid"), ("mid", "leaf")})
    m.update_parameters([{"caller": "front", "callee": "mid", "child_bad": 0, "both_bad": 0}])
    states = {"front": [0, 2, 2], "mid": [0, 0, 0], "leaf": [0, 0, 0]}
    own = {"front": [0, 1, 1], "mid": [0, 0, 0], "leaf": [0, 0, 0]}
    post = m.infer(states, own)
    assert max(post, key=post.get) == "front"


def test_structure_update_keeps_learned_parameters_and_drops_removed_edges():
    m = chain_model({("a", "b"), ("a", "c")})
    m.update_parameters([{"caller": "a", "callee": "b", "child_bad": 40, "both_bad": 38}])
    learned = list(m.edge_counts["a->b"])
    changes = m.update_structure({"a", "b", "d"}, {("a", "b"), ("a", "d")})
    assert m.edge_counts["a->b"] == learned
    assert "a->c" not in m.edge_counts and "c" not in m.services and m.callees["a"] == ["b", "d"]
    assert m.edge_counts["a->d"] == list(m.params.edge_prior)
    assert changes["edges_removed"] == [("a", "c")] and changes["services_added"] == ["d"]
    assert m.strength("a", "b") > 0.85


def test_forgetting_moves_strength_towards_new_behaviour():
    m = chain_model({("a", "b")})
    for _ in range(10):
        m.update_parameters([{"caller": "a", "callee": "b", "child_bad": 20, "both_bad": 20}])
    high = m.strength("a", "b")
    for _ in range(30):
        m.update_parameters([{"caller": "a", "callee": "b", "child_bad": 20, "both_bad": 0}])
    assert high > 0.95 and m.strength("a", "b") < 0.2


def test_json_round_trip():
    m = chain_model({("a", "b")})
    m.update_parameters([{"caller": "a", "callee": "b", "child_bad": 3, "both_bad": 2}])
    m2 = DBNModel.from_json(m.to_json())
    assert m2.to_json() == m.to_json()
    states, own = {"a": [1, 2], "b": [2, 2]}, {"a": [0, 0], "b": [1, 0]}
    assert m2.infer(states, own) == m.infer(states, own)
    assert R_STATES == ["no", "yes"]


def test_explain_names_the_observations_that_moved_the_posterior():
    m = DBNModel()
    m.update_structure({"front", "cart", "db"}, {("front", "cart"), ("cart", "db")})
    states = {"front": [2, 2, 2], "cart": [2, 2, 2], "db": [0, 0, 0]}
    own = {"front": [0, 0, 0], "cart": [2, 2, 1], "db": [0, 0, 0]}
    cart = m.explain("cart", states, own)
    assert cart.startswith("own work (traces) severe in slices 0-2 x") and "no callee bad" in cart
    ratio = float(cart.split(" x")[1].split(";")[0])
    expected = (m.s_likelihood(2, 1) / m.s_likelihood(2, 0)) ** 2 * m.s_likelihood(1, 1) / m.s_likelihood(1, 0)
    assert ratio == pytest.approx(expected, rel=1e-2)
    front = m.explain("front", states, own)
    assert "ok throughout x0.0" in front and "callees bad too: cart" in front
    assert "recent change (prior) x4" in m.explain("db", states, own, prior_factor=4.0)


@pytest.mark.parametrize("at", [0, 1, 2])
def test_from_the_alert_on_equals_pgmpy(at):
    rng = random.Random(at)
    services = ["a", "b", "c"]
    m = chain_model({("a", "b"), ("b", "c")}, services)
    states = {s: [rng.randint(0, 2) for _ in range(3)] for s in services}
    own = {s: [rng.randint(0, 2) for _ in range(3)] for s in services}
    fast, ve = m.infer(states, own, at=at), m.infer_pgmpy(states, own, at=at)
    for s in services:
        assert fast[s] == pytest.approx(ve[s], abs=1e-9)
    if at == 2:  # the last slice: the query as before
        assert fast == pytest.approx(m.infer(states, own))


def test_a_changed_service_seen_at_the_alert_outranks_a_blip_after_it():
    # "early" changed recently and was anomalous at the alert (slice 0), then looked ok; "late" blipped in
    # the last slice, two slices after the alert (hard rollouts at one minute, sock-shop-hard-39)
    m = chain_model(set(), ["early", "late"])
    states = {"early": [1, 0, 0], "late": [0, 0, 0]}
    own = {"early": [1, 0, 0], "late": [0, 0, 1]}
    prior = {"early": 3.8}
    at_end = m.infer(states, own, prior_factor=prior)
    from_alert = m.infer(states, own, prior_factor=prior, at=0)
    assert at_end["late"] > at_end["early"]  # the state at the window's end alone: the blip
    assert from_alert["early"] > from_alert["late"]
    assert from_alert["late"] >= at_end["late"]  # a fault from the alert on includes one at the end
