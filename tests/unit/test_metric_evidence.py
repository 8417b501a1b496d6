"""Metrics evidence (baynet.evidence.metrics), its fusion with traces, and the DBN's second own-work
observation (Sm)."""

import numpy as np
import pandas as pd
import pytest

from baynet.analysis.headline import findings
from baynet.dbn import DBNModel
from baynet.evidence.fuse import fuse
from baynet.evidence.metrics import MetricThresholds, build_metric_evidence
from baynet.evidence.steps import slices_for_step

BASE = (0.0, 600.0)
SLICES = [(720.0, 780.0), (780.0, 840.0), (840.0, 900.0)]


def resources(series: dict[tuple[str, str], callable], step: float = 10.0) -> pd.DataFrame:
    rows = []
    for (svc, metric), f in series.items():
        for t in np.arange(step, 900.0 + step, step):
            rows.append((t, svc, metric, f(t)))
    return pd.DataFrame(rows, columns=["time", "service", "metric", "value"])


def row(ev, svc, w):
    return ev[(ev["service"] == svc) & (ev["window"] == w)].iloc[0]


def test_a_cpu_jump_is_severe_own_work_a_quiet_series_is_not():
    rng = np.random.default_rng(1)
    res = resources({("a", "cpu"): lambda t: 10 + rng.normal(0, 1) + (80 if t > 780 else 0),
                     ("b", "cpu"): lambda t: 10 + rng.normal(0, 1),
                     ("b", "net_rx"): lambda t: 1e5 * (5 if t > 780 else 1)})
    ev = build_metric_evidence(None, res, BASE, SLICES)
    assert row(ev, "a", 0)["own_state"] == 0
    assert row(ev, "a", 1)["own_state"] == 2 and row(ev, "a", 1)["resource"] == "cpu"
    assert row(ev, "a", 2)["resource_z"] > 2 * MetricThresholds().z_severe
    # b's cpu is noise; its network bytes follow the load and are not saturation.
    assert (ev.loc[ev["service"] == "b", "own_state"] == 0).all()


def test_a_constant_baseline_gets_a_spread_floor_not_infinite_z():
    res = resources({("a", "memory"): lambda t: 100.0 if t <= 780 else 103.0})  # +3 %: within the floor
    ev = build_metric_evidence(None, res, BASE, SLICES)
    assert row(ev, "a", 2)["own_state"] == 0
    assert np.isfinite(ev["resource_z"]).all()


@pytest.mark.parametrize("step, level", [(60.0, 1), (15.0, 2)])
def test_a_deviation_means_less_against_few_baseline_points(step, level):
    """One sample of the same series, the same 9 baseline spreads above its median in the last slice: against
    the ten one-minute points of the baseline, whose centre and spread are themselves uncertain, it is as
    likely as 4.5 spreads of the normal (Student's t, nine degrees of freedom): anomalous, not severe; against
    forty points of 15 s as 6.6: severe."""
    from baynet.evidence.metrics import normal_equivalent

    rng = np.random.default_rng(5)
    base_t = np.arange(step / 2, 600.0, step)             # ten points at one minute, forty at 15 s
    values = 10.0 + rng.normal(0, 1.0, len(base_t))
    rows = [(t, "db", "cpu", v) for t, v in zip(base_t, values)]
    center = float(np.median(values))
    spread = max(1.4826 * float(np.median(np.abs(values - center))), float(np.std(values, ddof=1)),
                 0.05 * center) * np.sqrt(1 + 1 / len(base_t))
    rows += [(t, "db", "cpu", center) for t in np.arange(720.0, 840.0 + step, step) if t <= 840.0]
    rows += [(t, "db", "cpu", center + 9.0 * spread) for t in np.arange(840.0 + step, 900.0 + step / 2, step)]
    ev = build_metric_evidence(None, pd.DataFrame(rows, columns=["time", "service", "metric", "value"]),
                               BASE, SLICES)
    last = row(ev, "db", 2)
    assert last["resource_z"] == pytest.approx(normal_equivalent(9.0, len(base_t)), abs=1e-6)
    assert last["own_state"] == level
    assert row(ev, "db", 0)["own_state"] == 0


def test_the_latency_rise_baseline_stays_in_plain_spreads():
    """The crude rule "latency rose most" ranks by baseline spreads, whatever the baseline's points: a
    service 6 spreads up against three points comes before one 4.5 up against sixty, though Baynet reads the
    first as the likelier noise."""
    from types import SimpleNamespace

    from baynet.lab.baselines import metric_rise_ranks

    rng = np.random.default_rng(8)
    rows = []
    for svc, base_t, rise in (("sparse", [200.0, 400.0, 590.0], 6.0), ("dense", np.arange(10.0, 600.0, 10.0), 4.5)):
        values = 20.0 + rng.normal(0, 1.0, len(base_t))
        center = float(np.median(values))
        spread = max(1.4826 * float(np.median(np.abs(values - center))), float(np.std(values, ddof=1)),
                     0.05 * center) * np.sqrt(1 + 1 / len(base_t))
        rows += [(t, "front", svc, v) for t, v in zip(base_t, values)]
        rows += [(t, "front", svc, center + rise * spread) for t in (780.0, 840.0, 900.0)]
    sig = pd.DataFrame(rows, columns=["time", "source", "destination", "latency_ms_avg"]).assign(
        requests=np.nan, error_ratio=0.0, window_s=10.0, reporter="destination", destination_version="")
    ev = build_metric_evidence(sig, None, BASE, SLICES)
    assert row(ev, "dense", 2)["latency_z"] > row(ev, "sparse", 2)["latency_z"]   # Baynet: dense is the likelier
    ranks = metric_rise_ranks(sig, None, SimpleNamespace(baseline=BASE, slices=SLICES))
    assert ranks["latency_rise"] == ["sparse", "dense"]                            # the crude rule: in spreads


def test_the_normal_equivalent_keeps_the_sign_and_grows_with_the_points():
    from baynet.evidence.metrics import normal_equivalent

    assert normal_equivalent(4.0, 10) == pytest.approx(2.96, abs=0.01)
    assert normal_equivalent(-4.0, 10) == -normal_equivalent(4.0, 10)
    assert normal_equivalent(4.0, 10) < normal_equivalent(4.0, 40) < normal_equivalent(4.0, 10_000) < 4.0
    assert normal_equivalent(4.0, 10_000) == pytest.approx(4.0, abs=0.01)
    assert normal_equivalent(0.0, 10) == 0.0 and np.isfinite(normal_equivalent(1e9, 10))


def test_a_window_without_points_says_nothing():
    res = resources({("a", "cpu"): lambda t: 10.0})
    res = res[~((res["time"] > 780) & (res["time"] <= 840))]
    ev = build_metric_evidence(None, res, BASE, SLICES)
    assert row(ev, "a", 1)["points"] == 0 and row(ev, "a", 1)["state"] == 0


def signals(rate: dict[str, callable], window_s: float = 10.0) -> pd.DataFrame:
    rows = []
    for svc, f in rate.items():
        for t in np.arange(window_s, 900.0 + window_s, window_s):
            rows.append({"time": t, "source": "", "destination": svc, "window_s": window_s,
                         "requests": f(t) * window_s, "error_ratio": 0.0, "latency_ms_p90": 20.0,
                         "reporter": "destination"})
    return pd.DataFrame(rows)


def test_a_rate_drop_counts_only_when_the_counts_can_tell():
    sig = signals({"busy": lambda t: 50.0 if t <= 780 else 5.0,       # 500 calls per window -> 50
                   "quiet": lambda t: 0.02 if t <= 780 else 0.0})     # 0.2 calls per window -> 0
    ev = build_metric_evidence(sig, None, BASE, SLICES)
    assert row(ev, "busy", 1)["state"] == 2 and row(ev, "busy", 1)["rate_ratio"] == pytest.approx(0.1)
    assert (ev.loc[(ev["service"] == "quiet") & (ev["window"] >= 0), "state"] == 0).all()


def test_error_evidence_grows_with_the_requests_behind_it():
    def errs(svc_rate):
        sig = signals({"s": lambda t: svc_rate})
        sig.loc[sig["time"] > 780, "error_ratio"] = 0.1
        return row(build_metric_evidence(sig, None, BASE, SLICES), "s", 2)

    few, many = errs(0.1), errs(20.0)
    assert few["error_up"] == pytest.approx(many["error_up"])
    assert many["error_z"] > 5 * few["error_z"]
    assert many["state"] >= 1 and few["state"] == 0


def test_the_binomial_z_reads_the_exact_tail_of_the_failed_calls():
    from scipy import stats

    from baynet.evidence.metrics import binomial_z

    p = 0.5 / 301  # a baseline of 300 calls and none failed
    for k, n in ((1, 29), (3, 40), (12, 500)):
        assert binomial_z(k, n, p) == pytest.approx(stats.norm.isf(stats.binom.sf(k - 1, n, p)), rel=1e-6)
    # One failed call of 29 happens one time in twenty: not the 4.3 spreads the normal approximation said.
    assert binomial_z(1, 29, p) == pytest.approx(1.67, abs=0.01)
    assert binomial_z(1, 29, p) < 3.0 < binomial_z(3, 29, p)
    assert binomial_z(1.5, 29, p) == pytest.approx((binomial_z(1, 29, p) + binomial_z(2, 29, p)) / 2, abs=0.5)
    assert binomial_z(0, 29, 0.01) < 0 and binomial_z(5, 0, p) == 0.0
    assert binomial_z(500, 500, p) == pytest.approx(37.5)  # beyond a double's smallest tail: capped, finite


def test_one_failed_call_against_a_baseline_of_none_is_chance_many_are_not():
    sig = signals({"s": lambda t: 0.5})  # 5 calls a 10 s window, none failed in the baseline
    failed = sig["time"] == 850.0
    one = sig.assign(error_ratio=np.where(failed, 1 / 5, 0.0))
    ev = build_metric_evidence(one, None, BASE, SLICES)
    assert row(ev, "s", 2)["error_up"] > 0.02 and row(ev, "s", 2)["error_z"] < 3.0 and row(ev, "s", 2)["state"] == 0
    three = sig.assign(error_ratio=np.where(failed | (sig["time"] == 870.0) | (sig["time"] == 890.0), 1 / 5, 0.0))
    assert row(build_metric_evidence(three, None, BASE, SLICES), "s", 2)["state"] == 1


def test_slices_follow_data_coarser_than_a_slice():
    res = resources({("a", "cpu"): lambda t: 1.0}, step=300.0)
    slices, why = slices_for_step(None, res, SLICES)
    assert why and "300 s" in why
    assert slices[-1][1] == SLICES[-1][1] and slices[0][1] - slices[0][0] == 300.0
    assert slices_for_step(None, resources({("a", "cpu"): lambda t: 1.0}), SLICES) == (SLICES, None)


def test_fusion_keeps_both_own_observations_and_marks_silence():
    rng = np.random.default_rng(2)
    res = resources({("a", "cpu"): lambda t: 10 + rng.normal(0, 1) + (80 if t > 720 else 0),
                     ("b", "cpu"): lambda t: 10 + rng.normal(0, 1)})
    metric = build_metric_evidence(None, res, BASE, SLICES)
    traces = pd.DataFrame({"service": ["b"] * 4, "window": [-1, 0, 1, 2], "state": [0, 1, 1, 1],
                           "own_state": [0, 1, 1, 1]})
    for col in ("requests", "errors", "error_ratio", "p50_ms", "p95_ms", "self_p95_ms", "slow_frac",
                "self_slow_frac", "fast_frac", "shape_frac", "rate_ratio", "own_error_frac", "net_frac", "gap_edges"):
        traces[col] = 0
    fused = fuse(traces, metric)
    a1, b1 = row(fused, "a", 1), row(fused, "b", 1)
    assert a1["sources"] == "metrics" and a1["own_state"] == -1 and a1["m_own_state"] == 2
    assert b1["sources"] == "traces+metrics" and b1["own_state"] == 1 and b1["m_own_state"] == 0
    assert a1["state"] == a1["m_state"]


def test_second_own_observation_multiplies_evidence_and_matches_pgmpy():
    m = DBNModel()
    m.update_structure({"front", "a", "b"}, {("front", "a"), ("front", "b")})
    states = {"front": [1, 2], "a": [1, 1], "b": [1, 1]}
    own = {"front": [0, 0], "a": [1, 1], "b": [1, 1]}
    own_m = {"front": [-1, -1], "a": [2, 2], "b": [0, 0]}
    fast = m.infer(states, own, ["front", "a", "b"], own_metrics=own_m)
    assert fast["a"] > fast["b"]  # same trace evidence; the metrics saw a's own fault, not b's
    assert m.infer(states, own, ["front", "a", "b"])["a"] == pytest.approx(
        m.infer(states, own, ["front", "a", "b"])["b"])
    exact = m.infer_pgmpy(states, own, ["front", "a", "b"], own_metrics=own_m)
    for s in fast:
        assert fast[s] == pytest.approx(exact[s], abs=1e-9)
    # A level below 0 is not observed: the same as leaving the service out of own_metrics.
    silent = m.infer(states, own, ["front", "a", "b"], own_metrics={"front": [-1, -1], "a": [-1, -1], "b": [-1, -1]})
    assert silent == pytest.approx(m.infer(states, own, ["front", "a", "b"]))


def test_saturation_far_below_the_slices_largest_is_anomalous_not_severe():
    """A stressed pod moves thousands of spreads, a neighbour on the same node a few: only the first is
    severe. Alone, the neighbour's rise stays severe."""
    rng = np.random.default_rng(4)
    stressed = {("a", "cpu"): lambda t: 10 + rng.normal(0, 0.1) + (900 if t > 780 else 0),
                ("b", "cpu"): lambda t: 10 + rng.normal(0, 0.1) + (8 if t > 780 else 0)}
    ev = build_metric_evidence(None, resources(stressed), BASE, SLICES)
    # both beyond the severe bar (in tail probability), thousands of spreads against tens
    assert row(ev, "a", 1)["resource_z"] > row(ev, "b", 1)["resource_z"] > MetricThresholds().z_severe
    assert row(ev, "a", 1)["own_state"] == 2 and row(ev, "b", 1)["own_state"] == 1
    alone = build_metric_evidence(None, resources({("b", "cpu"): stressed[("b", "cpu")]}), BASE, SLICES)
    assert row(alone, "b", 1)["own_state"] == 2


def _edge_signals(delayed_edges: set[tuple[str, str]], edges: list[tuple[str, str]], step: float = 10.0):
    rng = np.random.default_rng(2)
    rows = []
    for t in np.arange(step, 900.0 + step, step):
        for src, dst in edges:
            dest_ms = 20 + rng.normal(0, 0.5)
            late = 200.0 if (src, dst) in delayed_edges and t > 780 else 0.0
            for reporter, ms in (("destination", dest_ms), ("source", dest_ms + 1 + late + rng.normal(0, 0.2))):
                rows.append({"time": t, "source": src, "destination": dst, "reporter": reporter, "window_s": step,
                             "latency_ms_p50": ms})
    return pd.DataFrame(rows)


def test_a_grown_network_gap_goes_to_the_endpoint_with_the_larger_share_of_its_edges_grown():
    """payment's one edge grew; orders, which calls it, has three more that did not, and its own caller's
    edge to it grew too. Counting grown edges blamed both on orders; by share, the call to payment is
    payment's (all of its edges), the call to orders stays orders' (frontend's other two are fine)."""
    edges = [("frontend", "orders"), ("frontend", "catalogue"), ("frontend", "user"),
             ("orders", "payment"), ("orders", "shipping"), ("orders", "db"), ("orders", "user")]
    signals = _edge_signals({("orders", "payment"), ("frontend", "orders")}, edges)
    ev = build_metric_evidence(signals, None, BASE, SLICES)
    assert row(ev, "payment", 1)["gap_edges"] == 1 and row(ev, "payment", 1)["own_state"] >= 1
    assert row(ev, "orders", 1)["gap_edges"] == 1
    assert set(ev.loc[ev["gap_edges"] > 0, "service"]) == {"payment", "orders"}
    assert row(ev, "payment", 0)["gap_edges"] == 0  # before the delay


def _stopped_call_signals(sent_after: float | None, checkout_rate_after: float = 5.0) -> pd.DataFrame:
    """frontend -> checkout -> email. From t = 780 email receives nothing; checkout receives
    ``checkout_rate_after`` a second (5 before). ``sent_after``: what checkout's own reports say it sent to
    email after 780 (None: it does not count its calls)."""
    rows = []
    for t in np.arange(10.0, 910.0, 10.0):
        late = t > 780
        for svc, src, rate in (("frontend", "", 5.0), ("checkout", "frontend", checkout_rate_after if late else 5.0),
                               ("email", "checkout", 0.0 if late else 5.0)):
            rows.append({"time": t, "source": "", "destination": svc, "window_s": 10.0, "requests": rate * 10,
                         "error_ratio": 0.0, "latency_ms_p90": 20.0, "reporter": "destination"})
            if src:  # the edge as the caller reports it: counted only where asked
                sent = rate * 10 if sent_after is None or not late else sent_after * 10
                rows.append({"time": t, "source": src, "destination": svc, "window_s": 10.0,
                             "requests": np.nan if sent_after is None else sent, "error_ratio": np.nan,
                             "latency_ms_p90": 21.0, "reporter": "source"})
    return pd.DataFrame(rows)


def test_requests_that_fell_because_the_one_caller_stopped_calling_are_the_callers_state():
    """checkout still receives its requests but stops calling email (an exception before the call): email's
    drop is not email failing; checkout's state carries it, and both rows say why."""
    ev = build_metric_evidence(_stopped_call_signals(sent_after=None), None, BASE, SLICES)
    email, checkout = row(ev, "email", 2), row(ev, "checkout", 2)
    assert email["rate_ratio"] == pytest.approx(0.0) and email["state"] == 0
    assert checkout["rate_ratio"] == pytest.approx(1.0) and checkout["state"] == 2
    assert "checkout stopped calling it" in email["calls"]
    assert checkout["calls"].startswith("its calls to email stopped")
    assert row(ev, "checkout", 0)["state"] == 0 and row(ev, "checkout", 0)["calls"] == ""  # before the stop
    said = [phrase for _, phrase, source, _ in findings(fuse(None, ev), "checkout") if source == "metrics"]
    assert any(p.startswith("its calls to email stopped") for p in said), said


def test_a_callee_whose_caller_kept_calling_keeps_its_drop():
    """The caller's own reports count its calls and they did not fall: email went down (calls sent, none
    received), so the drop stays email's."""
    ev = build_metric_evidence(_stopped_call_signals(sent_after=5.0), None, BASE, SLICES)
    assert row(ev, "email", 2)["state"] == 2 and row(ev, "email", 2)["calls"] == ""
    assert row(ev, "checkout", 2)["state"] == 0


def test_a_drop_that_follows_the_callers_own_drop_stays_where_it_is():
    """checkout itself received far fewer requests: its callee's drop is no sign of checkout skipping calls."""
    ev = build_metric_evidence(_stopped_call_signals(sent_after=None, checkout_rate_after=0.5), None, BASE, SLICES)
    assert row(ev, "email", 2)["state"] == 2 and row(ev, "email", 2)["calls"] == ""
