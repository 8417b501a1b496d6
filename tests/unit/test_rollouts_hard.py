"""Version-aware evidence (a fresh pod's warm-up, a leak within new pods, the new version slower than the old
in the same windows) and the hard rollout family that measures it."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from baynet.evidence.changes import ChangeParams, canary, version_latency
from baynet.evidence.metrics import build_metric_evidence, fresh_pod_trends, settled_noise, without_warmup


def pod_rows(pod, service, t0, values, metric="cpu_cores", step=15.0):
    return [{"time": t0 + step * i, "service": service, "metric": metric, "value": v, "pod": pod}
            for i, v in enumerate(values)]


def test_a_fresh_pods_warm_up_is_measured_on_the_pod_and_left_out_a_leak_is_kept():
    rng = np.random.default_rng(1)
    settled = 0.2 + rng.normal(0, 0.003, 12)
    warm = settled + 0.3 * np.exp(-np.arange(12) * 15 / 20)      # burns CPU at first, settles
    leak = settled + 0.01 * np.arange(12)                          # grows from its first point
    old = 0.2 + rng.normal(0, 0.003, 40)
    frame = pd.DataFrame(pod_rows("a-v1", "a", 0, old) + pod_rows("a-v2", "a", 600, warm)
                         + pod_rows("b-v2", "b", 600, leak) + pod_rows("c-v2", "c", 600, settled[:2]))
    kept = without_warmup(frame, baseline_start=0.0)
    warm_kept = kept[kept["pod"] == "a-v2"]["value"].to_numpy()
    assert 1 <= 12 - len(warm_kept) <= 6                 # its first, hot points went ...
    assert warm_kept.max() < 0.2 + 0.3 * math.exp(-1)    # ... and what is left is near the settled level
    assert len(kept[kept["pod"] == "b-v2"]) == 12        # a leak never runs above its later points: all kept
    assert len(kept[kept["pod"] == "a-v1"]) == 40        # a pod running since before the baseline: untouched
    assert kept[kept["pod"] == "c-v2"].empty             # two points cannot be told from a warm-up yet


def test_a_leak_grows_within_its_pod_a_steady_pod_does_not():
    rng = np.random.default_rng(2)
    steady = 300e6 * (1 + rng.normal(0, 0.003, 16))
    leaking = steady * (1 + 0.002 * np.arange(16))  # +3 % over four minutes: under the service's 5 % floor
    frame = pd.DataFrame(pod_rows("x-v2", "x", 0, steady, "memory_bytes")
                         + pod_rows("y-v2", "y", 0, leaking, "memory_bytes")
                         + pod_rows("z-v1", "z", -600, steady, "memory_bytes", 60.0))  # the data begin here
    frame["window"] = np.minimum(((frame["time"] - 60) // 60).astype(int), 2)
    z = fresh_pod_trends(frame, baseline_start=-600.0, n=3).set_index(["service", "window"])["z"]
    assert z[("y", 2)] > 6 and z[("y", 2)] > z[("y", 0)]
    assert abs(z[("x", 2)]) < 3


def test_at_one_minute_a_new_pods_two_points_are_judged_with_its_settled_pods_spread():
    """One-minute data: a pod born during the incident has two points. Its settled pods' spread (many
    points, the same step) tells a leak (the second point above the first) from a warm-up (below it)."""
    rng = np.random.default_rng(4)
    baseline_start = 30.0  # the data begin one step later: the v1 pods report from there, and are settled
    rows = []
    for k in range(4):
        rows += pod_rows(f"m-v1-{k}", "m", 60.0, 330e6 + rng.normal(0, 0.5e6, 16), "memory_bytes", 60.0)
        rows += pod_rows(f"c-v1-{k}", "c", 60.0, 0.025 + rng.normal(0, 0.001, 16), "cpu_cores", 60.0)
    rows += pod_rows("m-v2-0", "m", 900.0, [338e6, 355e6], "memory_bytes", 60.0)   # a leak: +17 MB a minute
    rows += pod_rows("c-v2-0", "c", 900.0, [0.058, 0.034], "cpu_cores", 60.0)      # a warm-up, still settling
    frame = pd.DataFrame(rows)
    pooled = settled_noise(frame, baseline_start)
    assert set(pooled) == {("m", "memory_bytes"), ("c", "cpu_cores")}  # from the v1 pods alone
    assert 0.2e6 < pooled[("m", "memory_bytes")] < 1e6
    kept = without_warmup(frame, baseline_start, pooled)
    assert len(kept[kept["pod"] == "m-v2-0"]) == 2       # growing: both points stay in the level
    assert kept[kept["pod"] == "c-v2-0"].empty           # decaying: not told from a warm-up yet
    assert len(kept[kept["pod"].str.contains("v1")]) == 8 * 16
    frame["window"] = np.where(frame["time"] >= 900.0, np.where(frame["time"] >= 960.0, 1, 0), -1)
    trends = without_warmup(frame, baseline_start, pooled, keep_short=True)
    z = fresh_pod_trends(trends, baseline_start, 2, pooled).set_index(["service", "window"])["z"]
    assert z[("m", 1)] > 10                               # 17 MB against a spread of ~0.5 MB
    assert ("c", 1) not in z.index or z[("c", 1)] < 3
    assert fresh_pod_trends(trends, baseline_start, 2).empty  # its own spread: two points are too few


def _latency_rows(service, version, times, ms, requests=20.0):
    return [{"time": t, "source": "front", "destination": service, "window_s": 15.0, "requests": requests,
             "error_ratio": 0.0, "latency_ms_p50": m, "destination_version": version, "reporter": "destination"}
            for t, m in zip(times, ms)]


@pytest.mark.parametrize("counted", [True, False])
def test_a_new_version_slower_than_the_old_in_the_same_windows_is_severe_a_cold_start_is_not(counted):
    rng = np.random.default_rng(3)
    before = np.arange(15, 601, 15.0)
    during = np.arange(615, 781, 15.0)
    rows = []
    for svc, v2_ms in (("slow", 10 * 1.6 * np.exp(rng.normal(0, 0.05, len(during)))),
                       # a fresh pod at each step (every 60 s) answers x2.5 slower, settling in ~20 s
                       ("cold", 10 * (1 + 1.5 * np.exp(-((during - 615) % 60) / 10))
                        * np.exp(rng.normal(0, 0.05, len(during))))):
        rows += _latency_rows(svc, "v1", before, 10 * np.exp(rng.normal(0, 0.05, len(before))))
        rows += _latency_rows(svc, "v1", during, 10 * np.exp(rng.normal(0, 0.05, len(during))))
        rows += _latency_rows(svc, "v2", during, v2_ms)
    sig = pd.DataFrame(rows)
    if not counted:
        sig["requests"] = np.nan
    slices = [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]
    result = canary(sig, slices)
    slow, cold = (result[result["service"] == s] for s in ("slow", "cold"))
    assert (slow["canary_z"] >= ChangeParams().canary_z).all() and len(slow) == 3
    assert (cold["canary_z"] < ChangeParams().canary_z).all()
    assert "v2 answers in 16 ms against v1 10 ms" in slow.iloc[-1]["canary"]


def test_version_latency_needs_the_old_versions_own_history():
    sig = pd.DataFrame(_latency_rows("a", "v1", [615.0, 630.0], [10.0, 10.0])
                       + _latency_rows("a", "v2", [615.0, 630.0], [30.0, 30.0]))
    sig["requests"] = 1.0
    first = sig.groupby(["destination", "destination_version"])["time"].min()
    # two points of the old version before the new one: no spread to judge against, so no verdict
    assert version_latency(sig, [(600.0, 660.0)], first).empty


def test_metric_evidence_names_the_versions_in_the_canary_column():
    sig = pd.DataFrame(_latency_rows("a", "v1", np.arange(15, 781, 15.0), [10.0] * 52)
                       + _latency_rows("a", "v2", np.arange(615, 781, 15.0), [25.0] * 12))
    sig.loc[sig["destination_version"] == "v1", "latency_ms_p50"] *= np.exp(
        np.random.default_rng(4).normal(0, 0.03, 52))
    ev = build_metric_evidence(sig, None, (0.0, 600.0), [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)])
    row = ev[(ev["service"] == "a") & (ev["window"] == 2)].iloc[0]
    assert row["own_state"] == 2 and row["canary"].startswith("v2 answers in 25 ms against v1 10 ms")


@pytest.mark.parametrize("times, level", [(1.25, 1), (1.6, 2)])
def test_a_new_version_a_few_spreads_slower_is_anomalous_many_spreads_severe(times, level):
    """The canary's deviation is graded as every deviation: from 3 spreads anomalous, from 6 severe (the
    spread of a ratio is floored at 5 % twice over: x1.25 is ~3.2 spreads, x1.6 ~6.8)."""
    sig = pd.DataFrame(_latency_rows("a", "v1", np.arange(15, 781, 15.0), [10.0] * 52)
                       + _latency_rows("a", "v2", np.arange(615, 781, 15.0), [10.0 * times] * 12))
    ev = build_metric_evidence(sig, None, (0.0, 600.0), [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)])
    rows = ev[(ev["service"] == "a") & (ev["window"] >= 0)]
    assert (rows["canary_z"] >= ChangeParams().canary_z).all() and (rows["own_state"] == level).all()


def test_the_hard_rollout_generator_is_deterministic_and_records_what_it_did(tmp_path):
    from baynet.bundles.read import load_bundle
    from baynet.lab.datasets.rollouts import EFFECTS, STEPS, hard_rollout_bundle

    a = hard_rollout_bundle(tmp_path / "a", "sock-shop", 7)
    b = hard_rollout_bundle(tmp_path / "b", "sock-shop", 7)
    c = hard_rollout_bundle(tmp_path / "c", "sock-shop", 7, counts=False)
    for name in ("signals.csv", "resources.csv", "changes.csv", "logs.csv", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    truth = json.loads((a / "truth.json").read_text())
    assert truth["effect"] in EFFECTS and truth["counts"] is True and 2 <= truth["changed"] <= 6
    bundle = load_bundle(a)
    changes = bundle.changes
    assert len(changes) == truth["changed"] and truth["root_cause"] in set(changes["service"])
    assert changes["time"].max() - changes["time"].min() <= 600  # within ten minutes of one another
    # the bad service's new version takes its calls step by step (1/5, 2/5, ...)
    sig = bundle.signals[bundle.signals["destination"] == truth["root_cause"]]
    start = float(changes.loc[changes["service"] == truth["root_cause"], "time"].iloc[0])
    after = sig[sig["time"] > start + 15]
    share = after.groupby("destination_version")["requests"].sum()
    assert 0 < share["v2"] / share.sum() < STEPS[-1]
    assert bundle.resources["pod"].str.contains("-v2-").any()
    assert bundle.event.unix - start == pytest.approx(truth["alert_after_s"], abs=0.1)
    # log lines come from the pods that served: the pods resources.csv names
    logs = bundle.logs
    assert set(logs.loc[logs["service"] == truth["root_cause"], "pod"]) <= set(bundle.resources["pod"])
    assert (logs["level"] == "INFO").any()  # a sampled access log: every busy service is known to the logs
    # the variant without counts is the same incident, its requests blank
    nocounts = load_bundle(c)
    assert nocounts.signals["requests"].isna().all()
    assert len(nocounts.signals) == len(bundle.signals)
    assert not json.loads((c / "truth.json").read_text())["counts"]


def test_a_rollouts_harmless_noise_is_the_fresh_and_the_draining_pods_own():
    """After canary step k the new version runs k pods and only the newest is cold, and one of the old
    version's 5 - k + 1 pods drains: the warm-up slows the calls that pod serves and the drain fails the calls
    it serves, not every call of the version."""
    import random

    from baynet.lab.datasets.rollouts import _HardMesh, _Rollout

    leaf = "carts-db"  # a service without callees: a call's latency is its own work
    mesh = _HardMesh("sock-shop", {leaf: _Rollout(0.0, 100.0)}, bad="none", effect="latency", size=0.0,
                     rng=random.Random(3))
    mesh.cold[leaf] = (9.0, 20.0)     # a fresh pod x10 slower, warm within a minute or two
    mesh.drain[leaf] = (1.0, 60.0)    # a draining pod that fails every call it serves
    for t in np.linspace(300.0, 301.0, 20000):  # step 4 of 5 has just begun: four v2 pods, two v1 (one draining)
        mesh.call(leaf, "carts", float(t))
    calls = pd.DataFrame(mesh.calls, columns=["t", "source", "destination", "version", "failed", "ms"])
    v2, v1 = calls[calls["version"] == "v2"], calls[calls["version"] == "v1"]
    assert abs(len(v2) / len(calls) - 0.8) < 0.02
    mean_ms = v1.loc[~v1["failed"], "ms"].median()
    cold = v2["ms"] > 5 * mean_ms
    assert abs(cold.mean() - 1 / 4) < 0.03     # the fresh pod's share of the new version's calls
    assert abs(v1["failed"].mean() - 1 / 2) < 0.05  # the draining pod's share of the old version's
    # the pods born at earlier steps have warmed up by now ...
    assert v2.loc[~cold, "ms"].median() == pytest.approx(mean_ms, rel=0.1)
    # ... while the newest pod, born at the step itself, answers about x10 slower
    assert v2.loc[cold, "ms"].median() == pytest.approx(10 * mean_ms, rel=0.15)


def test_a_clear_bad_version_is_found_among_harmless_rollouts_with_and_without_counts(tmp_path):
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle
    from baynet.lab.datasets.rollouts import hard_rollout_bundle

    seed = next(s for s in range(1, 60) if _is_clear_latency(s))
    for counts in (True, False):
        out = hard_rollout_bundle(tmp_path / f"r{counts}", "sock-shop", seed, counts=counts)
        truth = json.loads((out / "truth.json").read_text())
        result = analyse_bundle(load_bundle(out))
        assert result.ranking[0]["service"] == truth["root_cause"], (seed, counts, result.ranking[:3])
        assert "v2 answers in" in result.ranking[0]["evidence"]


def _is_clear_latency(seed: int) -> bool:
    """The generator's draw for ``seed``, read back without writing a bundle."""
    import random

    from baynet.lab.datasets.rollouts import CLEAR, EFFECT_RANGES, EFFECTS
    from baynet.lab.generator import MESHES

    rng = random.Random(seed)
    spec = MESHES["sock-shop"]
    eligible = [s for s in sorted(spec["services"]) if s != spec["entry"]]
    changed = rng.sample(eligible, min(len(eligible), rng.randint(2, 6)))
    rng.choice(changed)
    effect = rng.choice(EFFECTS)
    lo, hi = EFFECT_RANGES[effect]
    size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return effect == "latency" and size >= 2 * CLEAR[effect]


def test_the_rollouts_command_writes_the_hard_family_by_default_and_refuses_bad_seeds(tmp_path):
    from typer.testing import CliRunner

    from baynet.cli.main import app

    runner = CliRunner()
    done = runner.invoke(app, ["bundle", "rollouts", str(tmp_path / "h"), "--seeds", "1-2"])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "sock-shop-hard-1", "sock-shop-hard-1-nocounts", "sock-shop-hard-2", "sock-shop-hard-2-nocounts"]
    again = runner.invoke(app, ["bundle", "rollouts", str(tmp_path / "h"), "--seeds", "1"])
    assert again.exit_code == 2 and "sock-shop-hard-1 exists" in again.output
    bad = runner.invoke(app, ["bundle", "rollouts", str(tmp_path / "x"), "--seeds", "5-2"])
    assert bad.exit_code == 2 and "'5-2'" in bad.output


def test_a_canary_is_judged_alone_against_the_service_before_its_dilution_does_not_hide_it():
    # a fifth of the calls on v2, each failing a fifth of the time: +4 % on the service, +20 % on v2
    rng = np.random.default_rng(5)
    rows = []
    for t in np.arange(15, 781, 15.0):
        rows += [{"time": t, "source": "front", "destination": "a", "window_s": 15.0, "requests": 80.0,
                  "error_ratio": rng.binomial(80, 0.002) / 80, "latency_ms_p50": 10.0,
                  "destination_version": "v1", "reporter": "destination"}]
        if t > 600:
            rows += [{"time": t, "source": "front", "destination": "a", "window_s": 15.0, "requests": 20.0,
                      "error_ratio": rng.binomial(20, 0.2) / 20, "latency_ms_p50": 10.0,
                      "destination_version": "v2", "reporter": "destination"}]
    sig = pd.DataFrame(rows)
    slices = [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]
    ev = build_metric_evidence(sig, None, (0.0, 600.0), slices)
    incident = ev[ev["window"] >= 0]
    assert (incident["error_up"] > 0.1).all()  # v2 against the service before, not the diluted mix
    assert (incident["state"] >= 1).all()


def test_eval_bundles_breaks_scores_down_by_a_truth_field(tmp_path):
    from baynet.lab.bundle_eval import evaluate_bundles
    from baynet.lab.datasets.rollouts import hard_rollout_bundles

    out = tmp_path / "h"
    hard_rollout_bundles(out, seeds=(1, 2, 3))
    result = evaluate_bundles([out], by=("counts", "effect", "no_such_field"))
    parts = result["by_field"]
    assert set(parts["counts"]) == {"true", "false"}
    assert parts["counts"]["true"]["n"] == parts["counts"]["false"]["n"] == 3
    truths = [json.loads((p / "truth.json").read_text()) for p in sorted(out.iterdir())]
    assert set(parts["effect"]) == {t["effect"] for t in truths}
    hits = sum(c["rank"] == 1 for c in result["cases"])
    assert sum(v["AC@1"] * v["n"] for v in parts["effect"].values()) == pytest.approx(hits)
    assert "latest_change" in parts["counts"]["true"]["baselines"]
    assert list(parts["no_such_field"]) == ["(none)"]  # every bundle, under (none)
    assert parts["no_such_field"]["(none)"]["n"] == 6
    assert parts["no_such_field"]["(none)"]["AC@1"] == pytest.approx(result["overall"]["AC@1"])


def test_at_one_minute_the_least_spans_three_steps_so_a_cold_start_window_is_not_a_slow_version():
    """One-minute data in one-minute slices: a slice is one window. A fresh pod's cold start at each canary
    step fills every other window (x2); a lasting slowdown (x1.6) fills all. The least over the three steps
    ending at the slice's end leaves the cold start out and keeps the slowdown."""
    rng = np.random.default_rng(5)
    before, during = np.arange(60, 601, 60.0), np.arange(660, 901, 60.0)
    rows = []
    for svc, factor in (("slow", np.full(len(during), 1.6)), ("cold", np.array([1.0, 2.0, 1.0, 2.0, 1.0]))):
        rows += _latency_rows(svc, "v1", before, 10 * np.exp(rng.normal(0, 0.01, len(before))))
        rows += _latency_rows(svc, "v1", during, 10 * np.exp(rng.normal(0, 0.01, len(during))))
        rows += _latency_rows(svc, "v2", during, 10 * factor * np.exp(rng.normal(0, 0.01, len(during))))
    sig = pd.DataFrame(rows).assign(window_s=60.0)
    first = sig.groupby(["destination", "destination_version"])["time"].min()
    slices = [(780.0, 840.0), (840.0, 900.0)]   # the first ends on a cold start
    z = version_latency(sig, slices, first).set_index(["service", "window"])["canary_z"]
    assert z[("slow", 0)] >= 2 * ChangeParams().canary_z and z[("slow", 1)] >= 2 * ChangeParams().canary_z
    assert z[("cold", 0)] < ChangeParams().canary_z and z[("cold", 1)] < ChangeParams().canary_z
    # the slice's own window alone (the rule before) reads the cold start as a version twice as slow
    assert version_latency(sig, slices, first, least_of=1).set_index(["service", "window"]).loc[
        ("cold", 0), "canary_z"] >= 2 * ChangeParams().canary_z


def test_a_version_compared_in_fewer_than_three_windows_says_it_is_too_soon_to_tell_a_warm_up():
    rng = np.random.default_rng(6)
    old = _latency_rows("a", "v1", np.arange(15, 781, 15.0), 10 * np.exp(rng.normal(0, 0.03, 52)))
    slices = [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]
    for born, soon in ((765.0, True), (705.0, False)):
        sig = pd.DataFrame(old + _latency_rows("a", "v2", np.arange(born, 781, 15.0), [16.0] * 10))
        first = sig.groupby(["destination", "destination_version"])["time"].min()
        said = version_latency(sig, slices, first).set_index("window")["canary"]
        assert said[2].startswith("v2 answers in 16 ms against v1 10 ms")
        assert ("too soon to tell a fresh pod's warm-up" in said[2]) is soon, said[2]
        assert not soon or "v2 15 s old at the window's end" in said[2]


def test_the_wait_for_a_young_version_is_the_windows_it_still_lacks_at_the_datas_step():
    from baynet.evidence.changes import young_version_wait

    old = _latency_rows("a", "v1", np.arange(15, 781, 15.0), [10.0] * 52)
    young = pd.DataFrame(old + _latency_rows("a", "v2", [765.0, 780.0, 795.0], [16.0] * 3))
    wait, why, seen = young_version_wait(young, "a", until=780.0)   # two windows by the window's end: one to come
    assert wait == 15.0 and seen == 2 and why == "a's v2 had served in 2 of the data's 15 s windows"
    assert young_version_wait(young, "a", until=795.0) == (0.0, "", 0)   # three: nothing to wait for
    assert young_version_wait(young, "b", until=780.0) == (0.0, "", 0)   # no such service
    single = pd.DataFrame(old)
    assert young_version_wait(single, "a", until=780.0) == (0.0, "", 0)  # one version: nothing is young


def test_a_ranking_that_rests_on_a_version_too_young_to_tell_looks_again_when_it_can(tmp_path):
    """Seed 20: a harmless carts-db v2 is two 15 s windows old at the alert, x1.4 slower in both (a fresh pod's
    cold start) and comes first; the bad orders-db v2 (x1.9 for a minute) second. One window later the
    ranking is read again (the bundle a window further, as the flow reads after waiting)."""
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle
    from baynet.lab.datasets.rollouts import hard_rollout_bundle
    from baynet.settings import Settings

    bundle = load_bundle(hard_rollout_bundle(tmp_path / "b", "sock-shop", 20))
    truth = json.loads((bundle.path / "truth.json").read_text())["root_cause"]
    once = analyse_bundle(bundle, Settings(look_again_max_s=0))
    assert once.ranking[0]["service"] == "carts-db" and "looked_again" not in once.fetch
    assert "too soon to tell a fresh pod's warm-up" in once.ranking[0]["evidence"]
    twice = analyse_bundle(bundle)
    looked = twice.fetch["looked_again"]
    assert looked["after_s"] == 15.0 and looked["first_look"][0]["service"] == "carts-db"
    assert twice.ranking[0]["service"] == truth == "orders-db"
    assert "Looked again 15 s later" in twice.headline
    capped = analyse_bundle(bundle, Settings(look_again_max_s=10))  # 15 s away: over the limit, said so
    assert capped.ranking[0]["service"] == "carts-db"
    assert any("over BAYNET_LOOK_AGAIN_MAX_S=10" in n for n in capped.notes)
    # no data comes after the alert: the version serves in no new window, and the looking stops there
    end = bundle.event.unix
    dry = dataclasses.replace(bundle, signals=bundle.signals[bundle.signals["time"] <= end])
    stopped = analyse_bundle(dry)
    assert stopped.fetch["looked_again"]["after_s"] == 15.0
    assert any("serves too rarely to wait for" in n for n in stopped.notes)


def test_a_slice_where_the_new_version_served_no_call_has_no_comparison_of_its_own():
    """One-minute data: v2 served in the first two windows only. The last slice's three steps would reach
    back to those two windows; its comparison would be theirs again, counted as a third observation."""
    rng = np.random.default_rng(7)
    before, during = np.arange(60, 661, 60.0), np.arange(720, 901, 60.0)
    rows = _latency_rows("a", "v1", before, 10 * np.exp(rng.normal(0, 0.01, len(before))))
    rows += _latency_rows("a", "v1", during, 10 * np.exp(rng.normal(0, 0.01, len(during))))
    rows += _latency_rows("a", "v2", during[:2], [18.0, 18.0])
    sig = pd.DataFrame(rows).assign(window_s=60.0)
    first = sig.groupby(["destination", "destination_version"])["time"].min()
    slices = [(660.0, 720.0), (720.0, 780.0), (780.0, 840.0), (840.0, 900.0)]
    z = version_latency(sig, slices, first).set_index("window")["canary_z"]
    assert sorted(z.index) == [0, 1]  # the windows v2 served in, once each
    assert z[1] >= ChangeParams().canary_z


def test_the_largest_of_several_fresh_pods_trends_is_read_as_the_largest_of_that_many():
    from scipy import stats
    from baynet.evidence.metrics import largest_of
    assert largest_of(3.0, 1) == 3.0 and largest_of(-1.0, 5) == -1.0
    tail = 1 - (1 - stats.norm.sf(3.0)) ** 5
    assert largest_of(3.0, 5) == pytest.approx(stats.norm.isf(tail), rel=1e-9)
    assert largest_of(3.0, 5) < largest_of(3.0, 2) < 3.0
    # five steady fresh pods: the largest of their trends is no longer read as one pod's
    rng = np.random.default_rng(3)
    rows = []
    for i in range(5):
        rows += pod_rows(f"x-v2-{i}", "x", 0, 300e6 * (1 + rng.normal(0, 0.003, 16)), "memory_bytes")
    rows += pod_rows("z-v1", "z", -600, 300e6 * np.ones(16), "memory_bytes", 60.0)
    frame = pd.DataFrame(rows)
    frame["window"] = np.minimum(((frame["time"] - 60) // 60).astype(int), 2)
    each = [fresh_pod_trends(frame[frame["pod"].isin([f"x-v2-{i}", "z-v1"])], -600.0, 3)
            .set_index(["service", "window"])["z"] for i in range(5)]
    together = fresh_pod_trends(frame, -600.0, 3).set_index(["service", "window"])["z"]
    for w in range(3):
        top = max(e[("x", w)] for e in each)
        assert together[("x", w)] == pytest.approx(largest_of(top, 5))
