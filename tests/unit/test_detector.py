"""The detector's parts on small data: denoising, features, mRMR, the threshold table, the model store
and the event hand-off (plan -> CloudEvents -> the incident flow's parser)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from baynet.detector.denoise import calibrate, denoise
from baynet.detector.emit import ServiceScores, plan_events
from baynet.detector.features import FEATURES, service_features
from baynet.detector.models import (Block, DetectorModel, choose_threshold, format_table, load_model, save_model,
                                    threshold_table, torch_available, train_detector)
from baynet.detector.mrmr import mrmr_order
from baynet.detector.series import ServiceSeries
from baynet.events import parse_message

RNG = np.random.default_rng(3)


# --- denoising -------------------------------------------------------------------------------------

def test_a_single_window_burst_is_replaced_by_the_window_median():
    ref = 100 + RNG.normal(0, 1, 300)
    p = calibrate(ref)
    x = 100 + RNG.normal(0, 1, 60)
    x[30] = 400.0
    out = denoise(x, p)
    assert out[30] < 110 and x[30] == 400.0
    assert np.array_equal(np.delete(out, 30), np.delete(x, 30))  # nothing else touched


def test_a_shift_passes_through_one_window_late():
    ref = 100 + RNG.normal(0, 1, 300)
    p = calibrate(ref)
    x = np.concatenate([100 + RNG.normal(0, 1, 30), 300 + RNG.normal(0, 1, 30)])
    out = denoise(x, p)
    assert out[30] < 110          # the first shifted window is held back as a possible burst ...
    assert np.all(out[31:] > 290)  # ... and from the second on the shift is kept


def test_a_stable_oscillation_is_left_alone():
    t = np.arange(400)
    ref = 100 + 20 * np.sin(t / 3)
    p = calibrate(ref)
    x = 100 + 20 * np.sin(np.arange(200) / 3 + 0.5)
    assert np.mean(denoise(x, p) != x) <= 0.02  # the threshold is a high quantile of the same rhythm
    x[100] = 180.0  # a burst on top of the rhythm is still cut
    assert denoise(x, p)[100] < 125


def test_window_and_threshold_follow_the_series_volatility():
    volatile = calibrate(np.abs(50 + RNG.normal(0, 20, 500)))
    steady = calibrate(1000 + RNG.normal(0, 0.5, 500))
    assert volatile.window < steady.window
    assert volatile.threshold > steady.threshold
    assert steady.threshold >= 0.05  # the absolute floor


# --- features ---------------------------------------------------------------------------------------

def _series(values: dict[str, np.ndarray], n_ref: int = 200, start: float = 1.7e9) -> ServiceSeries:
    n = len(next(iter(values.values())))
    idx = start + np.arange(n, dtype=float)
    df = pd.DataFrame(values, index=idx)
    return ServiceSeries("svc", df.iloc[:n_ref], df.iloc[n_ref:])


def test_features_rise_with_an_anomaly_and_ignore_time_and_absent_families():
    cpu = np.concatenate([0.5 + RNG.normal(0, 0.02, 260), 0.95 + RNG.normal(0, 0.02, 40)])
    mem = 3e8 + RNG.normal(0, 1e6, 300)
    s = _series({"cpu": cpu, "mem": mem})
    f = service_features(s)
    assert list(f.columns) == list(FEATURES) and len(f) == 100
    assert f["cpu_z"].iloc[-30:].min() > 2 > f["cpu_z"].iloc[:50].abs().max()
    assert (f[[c for c in FEATURES if c.startswith("lat_p99")]] == 0).all().all()  # family not published
    later = service_features(_series({"cpu": cpu, "mem": mem}, start=1.9e9))
    assert np.allclose(f.to_numpy(), later.to_numpy())  # the clock position changes nothing


def test_a_mostly_zero_reference_does_not_make_every_small_value_extreme():
    # an idle call edge: zero in most windows, a fraction of a millisecond now and then (the MAD is 0)
    ref = np.where(RNG.random(300) < 0.3, RNG.uniform(0.0002, 0.001, 300), 0.0)
    obs = np.array([0.0004, 0.0, 0.0008, 0.75, 0.75])  # two normal blips, then 750 ms of injected delay
    s = ServiceSeries("svc", pd.DataFrame({"net_lat": ref}), pd.DataFrame({"net_lat": obs}, index=1e9 + np.arange(5)))
    z = service_features(s)["net_lat_z"].to_numpy()  # compressed: log1p(|robust z|)
    assert z[0] < np.log1p(6) and z[2] < np.log1p(6)  # blips stay within a few scale units
    assert z[4] > np.log1p(100)  # the delay is far out
    assert z[4] - z[2] > 4  # and far apart from the blips (a 1e-9 scale put both near 13)




def test_a_tail_the_reference_shows_is_normal_and_a_fault_beyond_it_is_not():
    # a p99 latency on histogram buckets: 5 ms in 90 % of windows (with interpolation jitter far below a
    # bucket), the next bucket (8.5 ms) in the rest -- the MAD only sees the jitter
    ref = np.where(RNG.random(600) < 0.1, 0.0085, 0.00496 + RNG.normal(0, 1e-7, 600))
    obs = np.array([0.00496, 0.0085, 0.0085, 0.0085, 0.9, 0.9, 0.9])  # the next bucket, then a 900 ms fault
    s = ServiceSeries("svc", pd.DataFrame({"lat_p99": ref}),
                      pd.DataFrame({"lat_p99": obs}, index=1e9 + np.arange(obs.size)))
    z = np.expm1(np.abs(service_features(s)["lat_p99_z"].to_numpy()))
    assert z[3] < 6  # the bucket the reference visits one window in ten (70 MAD-spreads on the MAD alone)
    assert z[6] > 300  # the fault is still far beyond anything the reference held
# --- mRMR -------------------------------------------------------------------------------------------

def test_mrmr_prefers_a_new_signal_over_a_copy_of_the_first():
    n = 3000
    a, b = RNG.normal(size=n), RNG.normal(size=n)
    y = ((a + 0.8 * b) > 0.5).astype(int)
    copy_of_a = a + RNG.normal(0, 0.01, n)
    X = np.column_stack([a, copy_of_a, b, RNG.normal(size=n), np.ones(n)])
    order, relevance = mrmr_order(X, y, 3)
    assert order[0] in (0, 1)
    assert order[1] == 2  # b adds information; the copy of a adds none
    assert 4 not in order and relevance[4] == 0  # a constant is never selected
    with pytest.raises(ValueError, match="both classes"):
        mrmr_order(X, np.zeros(n, int), 3)


# --- threshold table ----------------------------------------------------------------------------------

def test_threshold_table_counts_and_choice():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, -1])
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.3, 0.1, 0.1, 0.1, 0.1, 0.99])
    table = threshold_table(y, p, (0.25, 0.5, 0.75))
    row = table.set_index("Thresh").loc[0.5]
    assert row["Prec"] == pytest.approx(3 / 4) and row["Rec"] == pytest.approx(3 / 4)
    assert row["Acc"] == pytest.approx(8 / 10)  # the unknown (-1) window is not counted
    high = table.set_index("Thresh").loc[0.75]
    assert high["Prec"] == 1.0 and high["Rec"] == 0.5
    assert choose_threshold(table) == 0.5
    flat = pd.DataFrame({"Thresh": [0.05, 0.5, 0.95], "Prec": 0.0, "Rec": 0.0, "F1": [0.841, 0.847, 0.848],
                         "Acc": 0.0})
    assert choose_threshold(flat) == 0.05  # a flat table: the lowest of the near-best rows, for recall
    assert choose_threshold(flat.assign(F1=[0.80, 0.847, 0.848])) == 0.5
    text = format_table(table, 0.5)
    assert text.splitlines()[0] == "| Thresh | Prec | Rec | F1 | Acc |" and "0.50 ←" in text


# --- training and the model store ---------------------------------------------------------------------

def _blocks(n_groups: int = 4) -> list[Block]:
    blocks = []
    for g in range(n_groups):
        for svc in range(3):
            X = RNG.normal(0, 0.3, (120, len(FEATURES)))
            y = np.zeros(120, int)
            if svc == 0:
                y[80:] = 1
                X[80:, FEATURES.index("cpu_z")] += 3
                X[80:, FEATURES.index("max_abs_z")] += 3
            blocks.append(Block(X, y, f"s{svc}", f"case{g}", f"g{g}"))
    return blocks


def test_training_selects_informative_features_and_the_store_round_trips(tmp_path):
    from baynet.artifacts import LocalStore

    blocks = _blocks()
    model = train_detector(blocks, "gbm", ks=(2, 4))
    assert {"cpu_z", "max_abs_z"} & set(model.features)
    assert 0 < model.threshold < 1 and len(model.table) == 19
    store = LocalStore(tmp_path)
    save_model(store, model)
    loaded = load_model(store)
    assert loaded.version == model.version and loaded.features == model.features
    assert np.allclose(np.concatenate(loaded.score(blocks)), np.concatenate(model.score(blocks)))
    stored_table = store.get(f"detector/models/{model.version}/threshold_table.md").decode()
    assert stored_table.startswith("| Thresh | Prec | Rec | F1 | Acc |")
    preds = np.concatenate(loaded.score(blocks)) >= loaded.threshold
    y = np.concatenate([b.y for b in blocks])
    assert (preds == y).mean() > 0.95
    with pytest.raises(FileNotFoundError, match="not in the artifact store"):
        load_model(store, "nope")


def test_gradient_boosting_gives_the_rare_class_its_share_of_bins_without_the_slow_path(monkeypatch):
    import sklearn.ensemble._hist_gradient_boosting.binning as binning

    from baynet.detector.models import GradientBoosting

    def slow(*_a, **_k):
        raise AssertionError("scikit-learn's per-edge weighted percentile was called")

    monkeypatch.setattr(binning, "_weighted_percentile", slow)
    n_neg, n_pos = 5700, 300  # 5 % positives, in their own range of the one feature
    X = np.zeros((n_neg + n_pos, len(FEATURES)))
    X[:n_neg, 0], X[n_neg:, 0] = RNG.uniform(0, 1, n_neg), RNG.uniform(2, 3, n_pos)
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    gb = GradientBoosting(max_iter=5).fit([Block(X, y, "s", "c", "g")], [0])
    edges = gb.model._bin_mapper.bin_thresholds_[0]
    assert gb.model.class_weight == "balanced" and len(edges) > 200
    assert 0.35 < np.mean(edges > 1.5) < 0.65  # unweighted quantiles would give the positives ~5 % of edges


@pytest.mark.skipif(not torch_available(), reason="torch extra not installed")
def test_lstm_learns_the_same_small_problem():
    blocks = _blocks(3)
    model = train_detector(blocks, "lstm", ks=(2,), inner_folds=2)
    p = np.concatenate(model.score(blocks))
    y = np.concatenate([b.y for b in blocks])
    assert p[y == 1].mean() > p[y == 0].mean() + 0.3
    again = DetectorModel.from_bytes(model.to_bytes())
    assert np.allclose(np.concatenate(again.score(blocks)), p, atol=1e-6)


# --- events -------------------------------------------------------------------------------------------

def _scores(flags: list[int], start: float = 1.79e9, step: float = 60.0) -> ServiceScores:
    times = start + step * np.arange(len(flags))
    return ServiceScores("vets-service", times, np.array(flags, float) * 0.9 + 0.05, ["lat_p90"] * len(flags))


def test_events_fire_once_resolve_after_clear_windows_and_are_deterministic():
    s = _scores([0, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    events, state = plan_events(s, 0.5, None, namespace="petclinic", model_version="v1", clear_windows=3)
    assert [e["data"]["status"] for e in events] == ["firing", "resolved"]
    firing, resolved = events
    assert firing["data"]["timestamp"] == firing["time"]
    assert firing["data"]["labels"]["onset"].startswith("2026-")
    assert firing["id"] != resolved["id"]
    again, _ = plan_events(s, 0.5, None, namespace="petclinic", model_version="v1", clear_windows=3)
    assert [e["id"] for e in again] == [firing["id"], resolved["id"]]  # a re-sent event is a duplicate
    nothing, _ = plan_events(s, 0.5, state, namespace="petclinic", model_version="v1", clear_windows=3)
    assert nothing == []  # windows already seen by an earlier run
    for ev in events:  # what the incident flow's parser makes of them
        (parsed,) = parse_message(json.dumps(ev))
        assert parsed.service == "vets-service" and parsed.namespace == "petclinic"
        assert parsed.event_type == "latency" and parsed.id == ev["id"]
    assert parse_message(json.dumps(resolved))[0].status == "resolved"


def test_a_firing_event_carries_the_latest_anomalous_window_and_state_spans_runs():
    s = _scores([0, 1, 1, 1, 1, 1])
    events, state = plan_events(s, 0.5, None, namespace="default", model_version="v1")
    assert len(events) == 1 and state["onset"] == s.times[1]
    assert events[0]["data"]["timestamp"] == events[0]["time"]
    assert events[0]["time"].startswith("2026-") and events[0]["data"]["labels"]["onset"] < events[0]["time"]
    later = _scores([1, 0, 0, 0], start=float(s.times[-1]) + 60)
    events2, state2 = plan_events(later, 0.5, state, namespace="default", model_version="v1")
    assert [e["data"]["status"] for e in events2] == ["resolved"] and state2["onset"] is None
    assert events2[0]["data"]["labels"]["onset"] == events[0]["data"]["labels"]["onset"]


# --- dataset adapters on hand-made files ------------------------------------------------------------

def _nezha_day(root, stamps_shift: int = 0, text_shift_days: int = 0):
    from datetime import UTC, datetime, timedelta

    day = root / "2022-08-22"
    (day / "metric").mkdir(parents=True)
    t0 = int(datetime(2022, 8, 22, 3, 0, tzinfo=UTC).timestamp())
    (day / "fault_list.json").write_text(json.dumps({"03": [{"inject_time": "x", "inject_timestamp": str(t0 + 1800),
                                                             "inject_pod": "cart-abc12345-xyz12",
                                                             "inject_type": "cpu_contention"}]}))
    rows = []
    for i in range(400):
        ts = t0 + 60 * i
        text = (datetime.fromtimestamp(ts, UTC) + timedelta(days=text_shift_days)).strftime("%Y-%m-%d %H:%M:%S")
        cpu = 90.0 if t0 + 1800 <= ts < t0 + 2100 else 10.0 + (i % 3)
        rows.append(f"{text}.1 +0000 UTC m=+1,{ts + stamps_shift},cart-abc12345-xyz12,{cpu},1.0")
    (day / "metric" / "cart-abc12345-xyz12_metric.csv").write_text(
        "Time,TimeStamp,PodName,CpuUsageRate(%),MemoryUsage(Mi)\n" + "\n".join(rows) + "\n")
    for name, extra in (("source_50", 0.1), ("destination_50", 0.0)):  # callers see 100 ms more in the fault
        lines = [f"{datetime.fromtimestamp(t0 + 60 * i, UTC):%Y-%m-%d %H:%M:%S}.2 +0000 UTC,{t0 + 60 * i},"
                 f"{0.005 + (extra if t0 + 1800 <= t0 + 60 * i < t0 + 2100 else 0.0)}" for i in range(400)]
        (day / "metric" / f"{name}.csv").write_text("time,timestamp,front_cart\n" + "\n".join(lines) + "\n")
    return root


def test_nezha_adapter_trusts_the_time_column_that_lies_in_the_day(tmp_path, caplog):
    from baynet.lab.detector.datasets import nezha_cases

    (case,) = nezha_cases(_nezha_day(tmp_path / "a", stamps_shift=200_000_000))
    assert "TimeStamp disagrees with Time" in caplog.text
    (svc,) = case.services
    (fault,) = case.faults
    assert svc.service == "cart" and fault.end - fault.start == 5
    assert (svc.observed["cpu"].iloc[fault.start:fault.end] == 90).all()
    gap = svc.observed["net_lat"].to_numpy()  # the incoming edge's caller-minus-callee latency
    assert np.allclose(gap[fault.start:fault.end], 0.1) and np.allclose(np.delete(gap, range(fault.start, fault.end)), 0)


def test_nezha_adapter_reads_error_rates_from_pods_or_the_entry_service(tmp_path):
    from datetime import UTC, datetime

    from baynet.lab.detector.datasets import nezha_cases

    root = _nezha_day(tmp_path / "e")
    metric = root / "2022-08-22" / "metric"
    t0 = int(datetime(2022, 8, 22, 3, 0, tzinfo=UTC).timestamp())
    # the entry service's own success rate, 60 % during the fault; a pod-level rate that is 0 throughout
    # (not measured, as in Online Boutique) must not hide it
    lines = [f"{datetime.fromtimestamp(t0 + 60 * i, UTC):%Y-%m-%d %H:%M:%S}.3 +0000 UTC,{t0 + 60 * i},Cart,"
             f"{60 if t0 + 1800 <= t0 + 60 * i < t0 + 2100 else 100},0.2" for i in range(400)]
    (metric / "front_service.csv").write_text("Time,TimeStamp,ServiceName,SuccessRate(%),LatencyP50(s)\n"
                                              + "\n".join(lines) + "\n")
    pod = metric / "cart-abc12345-xyz12_metric.csv"
    raw = pd.read_csv(pod)
    raw["PodSuccessRate(%)"] = 0.0
    raw.to_csv(pod, index=False)
    (case,) = nezha_cases(root)
    (svc,) = case.services
    (fault,) = case.faults
    err = svc.observed["errors"].to_numpy()
    assert np.allclose(err[fault.start:fault.end], 0.4) and np.allclose(np.delete(err, range(fault.start, fault.end)), 0)
    assert np.allclose(svc.observed["lat_p50"], 0.2) and svc.reference["errors"].notna().all()
    # a pod that does measure its success rate wins over the entry-service file
    raw["PodSuccessRate(%)"] = np.where(raw["CpuUsageRate(%)"] == 90.0, 75.0, 100.0)
    raw.to_csv(pod, index=False)
    (case,) = nezha_cases(root)
    err = case.services[0].observed["errors"].to_numpy()
    assert np.allclose(err[fault.start:fault.end], 0.25) and np.allclose(np.delete(err, range(fault.start, fault.end)), 0)


def test_nezha_adapter_joins_a_replaced_pod_into_one_service(tmp_path, caplog):
    from baynet.lab.detector.datasets import nezha_cases

    root = _nezha_day(tmp_path / "r")
    metric = root / "2022-08-22" / "metric"
    raw = pd.read_csv(metric / "cart-abc12345-xyz12_metric.csv")
    half = len(raw) // 2  # the pod was replaced half-way through the day; the new one has another name
    raw.iloc[:half].to_csv(metric / "cart-abc12345-xyz12_metric.csv", index=False)
    raw.iloc[half:].assign(PodName="cart-abc12345-new99").to_csv(metric / "cart-abc12345-new99_metric.csv",
                                                                index=False)
    (case,) = nezha_cases(root)
    (svc,) = case.services
    (fault,) = case.faults
    assert svc.service == "cart" and len(svc.observed) + len(svc.reference) == len(raw) and case.step_s == 60.0
    assert (svc.observed["cpu"].iloc[fault.start:fault.end] == 90).all() and fault.end - fault.start == 5
    fl = json.loads((root / "2022-08-22" / "fault_list.json").read_text())
    fl["03"].append({**fl["03"][0], "inject_pod": "ghost-abc12345-xyz12", "inject_timestamp": fl["03"][0]["inject_timestamp"]})
    (root / "2022-08-22" / "fault_list.json").write_text(json.dumps(fl))
    (case,) = nezha_cases(root)
    assert len(case.faults) == 1 and "no metrics for injected service(s) ghost" in caplog.text


def test_nezha_adapter_refuses_a_file_with_no_believable_time(tmp_path):
    from baynet.lab.detector.datasets import DatasetError, nezha_cases

    with pytest.raises(DatasetError, match="no time column lies within day 2022-08-22"):
        nezha_cases(_nezha_day(tmp_path / "b", stamps_shift=200_000_000, text_shift_days=400))


# --- metric maps and the CLI's refusals -----------------------------------------------------------------

def test_metric_maps_presets_files_and_errors(tmp_path):
    from baynet.families import FAMILIES, MetricMapError, load_metric_map

    for preset in ("istio-cadvisor", "gala-gopher"):
        mapping = load_metric_map(preset)
        assert set(mapping) <= set(FAMILIES) and {"cpu", "mem", "lat_p99"} <= set(mapping)
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"cpu": 'sum by (service) (rate(cpu_seconds{ns="$namespace"}[$window]))'}))
    assert list(load_metric_map(str(good))) == ["cpu"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"disk": "x"}))
    with pytest.raises(MetricMapError, match="unknown family 'disk'"):
        load_metric_map(str(bad))
    with pytest.raises(MetricMapError, match="neither a preset"):
        load_metric_map("no-such-map")


def test_detect_eval_refuses_unknown_datasets_and_paths(tmp_path):
    from typer.testing import CliRunner

    from baynet.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["detect", "eval", "nosuch", str(tmp_path), "--models", "gbm"])
    assert res.exit_code == 2 and "unknown dataset 'nosuch'" in res.output
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(tmp_path), "--models", "gbm"])
    assert res.exit_code == 2 and "no <service>-<fault>/<rep> directories" in res.output
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(tmp_path), "--models", "svm"])
    assert res.exit_code == 2 and "unknown model 'svm'" in res.output
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(tmp_path), "--models", "gbm", "--hold-out", "pod"])
    assert res.exit_code == 2 and "unknown --hold-out 'pod'" in res.output
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(tmp_path), "--models", "gbm", "--transfer"])
    assert res.exit_code == 2 and "--transfer needs at least one --also-train" in res.output
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(tmp_path), "--models", "gbm",
                              "--also-train", "nezha"])
    assert res.exit_code == 2 and "--also-train wants DATASET=PATH, got 'nezha'" in res.output


def _rcd_layout(root, reps: int = 2):
    """A tiny RCD-layout dataset: two services, CPU faults, 1 s rows."""
    for target in ("carts", "user"):
        for rep in range(1, reps + 1):
            d = root / f"{target}-cpu" / str(rep)
            d.mkdir(parents=True)
            for name, t0, faulty in (("normal", 1.65e9, False), ("anomalous", 1.66e9, True)):
                n = 120
                cols = {"time": t0 + np.arange(n)}
                for svc in ("carts", "user", "front-end"):
                    busy = faulty and svc == target
                    cols[f"{svc}_cpu"] = (95.0 if busy else 5.0) + RNG.normal(0, 0.5, n)
                    cols[f"{svc}_mem"] = 2e8 + RNG.normal(0, 1e5, n)
                    cols[f"{svc}_lat_90"] = 0.01 + RNG.normal(0, 0.001, n) + (0.02 if busy else 0)
                pd.DataFrame(cols).to_csv(d / f"{name}.csv", index=False)
    return root


def test_detect_eval_json_and_train_store_a_version(tmp_path):
    from typer.testing import CliRunner

    from baynet.cli.main import app

    data = _rcd_layout(tmp_path / "rcd")
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(data), "--json", "--models", "gbm", "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    m = result["models"]["gbm"]
    for key in ("precision", "recall", "f1", "accuracy", "event_recall", "median_delay_windows"):
        assert key in m
    assert result["groups"] == ["carts", "user"] and m["events"] == 4
    assert m["event_recall"] == 1.0 and m["f1"] > 0.8  # a CPU jump of 90 points on an unseen service
    other = _rcd_layout(tmp_path / "other", reps=1)
    res = runner.invoke(app, ["detect", "train", "rcd-sockshop", str(data), "--artifacts", str(tmp_path / "a"), "-q",
                              "--also-train", f"rcd-sockshop={other}"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("| Thresh | Prec | Rec | F1 | Acc |")
    latest = json.loads((tmp_path / "a" / "detector" / "models" / "latest.json").read_text())
    assert (tmp_path / "a" / "detector" / "models" / latest["version"] / "model.pkl").stat().st_size > 0
    from baynet.artifacts import LocalStore

    stored = load_model(LocalStore(tmp_path / "a"))
    assert stored.trained_on["groups"] == ["carts", f"rcd-sockshop={other}:carts", f"rcd-sockshop={other}:user", "user"]


def test_false_alarms_count_runs_of_flags_on_normal_windows():
    from baynet.lab.detector.evaluate import _false_alarms

    y = np.array([0, 0, 0, 0, 1, 1, 0, 0, -1, 0])
    pred = np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], bool)  # runs on normal windows: [0-1], [3], [6], [9]
    alarms, hours = _false_alarms([Block(np.zeros((10, 1)), y, "s", "c", "g")], [pred], {"c": 60.0})
    assert alarms == 4 and hours == pytest.approx(7 / 60)


def test_detect_eval_holds_out_services_and_trains_on_another_dataset(tmp_path):
    from typer.testing import CliRunner

    from baynet.cli.main import app

    data, other = _rcd_layout(tmp_path / "rcd"), _rcd_layout(tmp_path / "other")
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(data), "--json", "--models", "gbm", "-q",
                              "--hold-out", "service"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    m = result["models"]["gbm"]
    assert result["hold_out"] == "service" and result["groups"] == ["carts", "front-end", "user"]
    held = [set(f["held_out"]) for f in m["folds"]]
    assert all(len(h) == 1 for h in held) and set().union(*held) == set(result["groups"])  # each once
    assert m["events"] == 4 and m["event_recall"] == 1.0 and m["false_alarms_per_service_hour"] is not None
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(data), "--json", "--models", "gbm", "-q",
                              "--also-train", f"rcd-sockshop={other}", "--transfer"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    m = result["models"]["gbm"]
    assert result["transfer"] and result["folds"] == 1 and result["also_trained_on"] == {f"rcd-sockshop={other}": 4}
    assert m["events"] == 4 and m["event_recall"] == 1.0 and m["f1"] > 0.8  # learnt on the other copy only


def test_service_names_drop_pod_hashes_and_statefulset_ordinals():
    from baynet.lab.datasets.nezha import service_of

    assert service_of("frontend-579b9bff58-t2dbm") == "frontend"
    assert service_of("ts-order-service-7b5c8d9f4-abcde") == "ts-order-service"  # hyphens inside the name
    assert service_of("redis-cart-0") == "redis-cart"  # a StatefulSet pod keeps its whole name
    assert service_of("mongo") == "mongo"
