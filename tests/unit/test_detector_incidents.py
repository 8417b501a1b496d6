"""The detector as an alert source: firings grouped into incidents, incident recall and false incidents per
mesh-hour, the threshold for a false-incident budget, calibration on the mesh's own reference, one event
per incident, families dropped in training, and leave-one-mesh-out."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from baynet.detector.calibrate import calibrate
from baynet.detector.emit import ServiceScores, group_events, plan_events, send_events
from baynet.detector.features import FEATURES
from baynet.detector.incidents import MeshScores, budget_threshold, incident_metrics, judge
from baynet.detector.models import Block, family_dropout
from baynet.detector.series import ServiceSeries

STEP = 60.0
T0 = 1.79e9
SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _mesh(flags: dict[str, list[int]], fault: tuple[int, int] | None, truth: str = "a") -> MeshScores:
    n = len(next(iter(flags.values())))
    t = T0 + STEP * np.arange(n)
    labels, scores, services = [], [], []
    for svc, f in flags.items():
        y = np.zeros(n, int)
        if fault and svc == truth:
            y[fault[0]:fault[1]] = 1
        labels.append(y)
        scores.append(np.array(f, float) * 0.9)
        services.append(svc)
    return MeshScores("c", STEP, [t] * len(flags), labels, scores, services)


def test_ten_services_firing_in_one_fault_are_one_incident_and_it_is_detected():
    n = 120
    flags = {f"s{i}": [1 if 60 + i // 3 <= k < 66 else 0 for k in range(n)] for i in range(10)}
    flags["a"] = [1 if 61 <= k < 66 else 0 for k in range(n)]
    got = judge(_mesh(flags, (60, 66)), 0.5)
    assert got["faults"] == 1 and got["detected"] == 1 and got["incidents"] == 1 and got["false_incidents"] == 0
    assert got["delays_windows"] == [0.0]


def test_a_detector_that_never_stops_firing_pays_for_every_quiet_stretch():
    n = 600
    faults = [(100, 105), (300, 305), (500, 505)]
    y_fault = {k for lo, hi in faults for k in range(lo, hi)}
    quiet = {"a": [1 if k in y_fault else 0 for k in range(n)], "b": [0] * n}
    loud = {"a": [1] * n, "b": [1] * n}

    def mesh(flags):
        m = _mesh(flags, None)
        m.labels[0] = np.array([1 if k in y_fault else 0 for k in range(n)])
        return m

    good, always = judge(mesh(quiet), 0.5), judge(mesh(loud), 0.5)
    assert good["detected"] == always["detected"] == 3
    assert good["paged"] == 3 and always["paged"] == 0  # one incident open all along: no fault gets its own event
    assert good["false_incidents"] == 0
    # before, between and after the three faults (zones widened by the 3-window gap), each paged again every
    # hour it keeps firing: 97, 190, 190 and 92 minutes -> 2 + 4 + 4 + 2
    assert always["false_incidents"] == 2 + 4 + 4 + 2
    pooled = incident_metrics([mesh(loud)], 0.5)
    assert pooled["false_incidents_per_mesh_hour"] == pytest.approx(12 / pooled["mesh_hours"])


def test_the_budget_threshold_is_the_lowest_within_budget():
    n = 600
    rng = np.random.default_rng(1)
    t = T0 + STEP * np.arange(n)
    y = np.zeros(n, int)
    y[200:205] = 1
    score = np.clip(rng.normal(0.3, 0.1, n), 0, 1)
    score[200:205] = 0.9
    score[[50, 400, 450]] = [0.55, 0.75, 0.65]  # three noise peaks
    mesh = MeshScores("c", STEP, [t], [y], [score], ["a"])
    hours = judge(mesh, 0.5)["normal_hours"]
    th, table = budget_threshold([mesh], 1.5 / hours, [0.5, 0.6, 0.7, 0.8])
    # at 0.6 two peaks stay (0.65, 0.75): 2 > 1.5 false in those hours; at 0.7 one does
    assert th == 0.7 and [r["Thresh"] for r in table] == [0.5, 0.6, 0.7, 0.8]
    assert judge(mesh, th)["detected"] == 1


def _scores(service: str, flags: list[int], start: float = T0, score: float = 0.9) -> ServiceScores:
    times = start + STEP * np.arange(len(flags))
    return ServiceScores(service, times, np.array(flags, float) * score, ["lat_p90"] * len(flags))


class _Model:
    threshold = 0.5
    version = "v1"


class _Store:
    def __init__(self):
        self.data = {}

    def get_json(self, key):
        return self.data.get(key)

    def put_json(self, key, obj):
        self.data[key] = json.loads(json.dumps(obj))


class _Queue:
    def __init__(self):
        self.sent = []

    def send_message(self, QueueUrl, MessageBody):
        self.sent.append(json.loads(MessageBody))


def test_a_zmax_event_is_critical_from_twice_its_threshold_a_probability_model_from_0_9():
    class _ZModel(_Model):
        kind, threshold = "zmax", 40.0

    def severity(model, score):
        queue = _Queue()
        send_events(_Store(), model, [_scores("a", [0, 1, 1], score=score)], namespace="ns", not_before=T0,
                    clear_windows=3, sqs=queue, queue_url="q")
        (event,) = queue.sent
        return event["data"]["severity"]

    assert severity(_ZModel(), 60.0) == "warning" and severity(_ZModel(), 85.0) == "critical"
    assert severity(_Model(), 0.8) == "warning" and severity(_Model(), 0.95) == "critical"


def test_one_event_per_incident_named_after_the_most_upstream_firing_service():
    callees = {"front-end": ["orders"], "orders": ["payment"], "payment": [], "catalogue": []}
    scores = [_scores("payment", [0, 1, 1, 1, 1, 0, 0, 0, 0, 0], score=0.99),
              _scores("orders", [0, 0, 1, 1, 1, 0, 0, 0, 0, 0], score=0.8),
              _scores("front-end", [0, 0, 1, 1, 0, 0, 0, 0, 0, 0], score=0.7)]
    store, queue = _Store(), _Queue()
    events = send_events(store, _Model(), scores, namespace="ns", not_before=0, clear_windows=3, sqs=queue,
                         queue_url="q", group_s=3 * STEP, callees=callees)
    firing = [e for e in events if e["data"]["status"] == "firing"]
    assert len(firing) == 1 and firing[0]["subject"] == "front-end"  # upstream of the others, not the top score
    assert set(firing[0]["data"]["labels"]["also_firing"].split(",")) == {"orders", "payment"}
    resolved = [e for e in events if e["data"]["status"] == "resolved"]
    assert [e["subject"] for e in resolved] == ["front-end"]  # the members' ends are not sent
    assert queue.sent == events
    # ungrouped (group_s None): one event per service, as before
    plain = send_events(_Store(), _Model(), scores, namespace="ns", not_before=0, clear_windows=3, sqs=None,
                        queue_url=None)
    assert sum(e["data"]["status"] == "firing" for e in plain) == 3


def test_a_service_joining_an_open_incident_in_a_later_run_sends_nothing_and_a_late_one_is_new():
    store = _Store()
    first = send_events(store, _Model(), [_scores("orders", [0, 1, 1, 1, 1, 1])], namespace="ns", not_before=0,
                        clear_windows=3, sqs=None, queue_url=None, group_s=3 * STEP)
    assert [e["subject"] for e in first] == ["orders"]
    start = T0 + 6 * STEP
    second = send_events(store, _Model(), [_scores("orders", [1, 1, 1, 1], start=start),
                                           _scores("payment", [0, 1, 1, 1], start=start)],
                         namespace="ns", not_before=0, clear_windows=3, sqs=None, queue_url=None, group_s=3 * STEP)
    assert second == []  # payment joined the open incident (orders still firing)
    assert store.data["detector/state.json"]["ns"]["_incident"]["open"]["members"] == ["payment"]
    later = T0 + 40 * STEP  # everything quiet for long: orders resolves; a new firing is a new incident
    third = send_events(store, _Model(), [_scores("orders", [0, 0, 0, 0], start=later),
                                          _scores("payment", [0, 0, 0, 0], start=later),
                                          _scores("user", [0, 0, 0, 0, 0, 0, 1, 1], start=later)],
                        namespace="ns", not_before=0, clear_windows=3, sqs=None, queue_url=None, group_s=3 * STEP)
    assert [(e["subject"], e["data"]["status"]) for e in third] == [("orders", "resolved"), ("user", "firing")]


def test_a_firing_after_the_open_incident_went_quiet_starts_a_new_one():
    a, _ = plan_events(_scores("a", [0, 1, 1, 0, 0, 0]), 0.5, None, namespace="n", model_version="v")
    b, _ = plan_events(_scores("b", [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 0.5, None, namespace="n", model_version="v")
    out, state = group_events(a + b, None, {}, 3 * STEP)
    # b starts 8 windows after a: its own incident, once a has gone quiet for longer than the gap
    assert [e["subject"] for e in out if e["data"]["status"] == "firing"] == ["a", "b"]
    assert state["open"]["service"] == "b" and state["absorbed"] == []


def test_family_dropout_zeroes_a_family_and_recomputes_the_summaries():
    rng = np.random.default_rng(0)
    X = np.zeros((50, len(FEATURES)))
    for fam, level in (("cpu", 3.0), ("load", 1.0), ("lat_p90", 0.5)):
        X[:, FEATURES.index(f"{fam}_z")] = level + rng.normal(0, 0.01, 50)
        X[:, FEATURES.index(f"{fam}_ewm")] = level
    X[:, FEATURES.index("max_abs_z")] = 3.0
    X[:, FEATURES.index("cpu_per_load_z")] = 2.0
    blocks = [Block(X, np.zeros(50, int), f"s{i}", "c", "g") for i in range(40)]
    copies = family_dropout(blocks, rate=0.5, random_state=3)
    assert copies and all(c.case == "c~drop" for c in copies)
    dropped_cpu = [c for c in copies if not c.X[:, FEATURES.index("cpu_z")].any()]
    assert dropped_cpu
    for c in dropped_cpu:
        assert not c.X[:, FEATURES.index("cpu_ewm")].any() and not c.X[:, FEATURES.index("cpu_per_load_z")].any()
        zs = np.abs(c.X[:, [FEATURES.index(f"{f}_z") for f in ("load", "lat_p90")]])
        assert np.allclose(c.X[:, FEATURES.index("max_abs_z")], zs.max(axis=1))
    assert np.all(blocks[0].X[:, FEATURES.index("cpu_z")] > 2)  # the originals are untouched


class _ByLevel:
    """A stand-in model: the score is the window's largest |z| squashed (what a trained model roughly is)."""

    threshold = 0.3

    def score(self, blocks):
        i = FEATURES.index("max_abs_z")
        return [1 - np.exp(-b.X[:, i]) for b in blocks]


def test_calibration_raises_the_threshold_on_a_noisy_mesh_and_keeps_it_on_a_quiet_one():
    rng = np.random.default_rng(5)

    def series(noise_bursts: bool) -> list[ServiceSeries]:
        out = []
        for svc in ("a", "b", "c"):
            t = T0 + STEP * np.arange(200)
            v = 10 + rng.normal(0, 0.5, 200)
            if noise_bursts:  # sustained bursts (a one-window spike is denoised away) in the half that is
                # scored: bursts in the other half would be part of its normal range (its 99th percentile)
                for at in 100 + rng.choice(90, 4, replace=False):
                    v[at:at + 4] += rng.choice([4, 8, 16])
            frame = pd.DataFrame({"cpu": v}, index=t)
            out.append(ServiceSeries(svc, frame, frame.iloc[-10:]))
        return out

    quiet = calibrate(_ByLevel(), series(False), STEP, budget=1.0)
    noisy = calibrate(_ByLevel(), series(True), STEP, budget=1.0)
    assert noisy.threshold > quiet.threshold >= _ByLevel.threshold
    assert noisy.windows == 100 and noisy.false_incidents <= 1.0 * noisy.hours and "raised" in noisy.reason
    short = calibrate(_ByLevel(), [ServiceSeries("a", pd.DataFrame({"cpu": [1.0] * 10}), pd.DataFrame())],
                      STEP, budget=1.0)
    assert short.threshold == _ByLevel.threshold and "trained threshold stands" in short.reason


def test_services_without_traffic_in_the_reference_are_named_in_the_calibration():
    """A load generator switched off after the experiment (or running another mix) leaves services whose
    reference served no request: every request of theirs in the scored stretch is then an outlier, and the
    calibration names them instead of passing it."""
    rng = np.random.default_rng(4)
    t = T0 + STEP * np.arange(120)

    def service(name: str, ref_load: float, obs_load: bool = True) -> ServiceSeries:
        ref = pd.DataFrame({"cpu": 1 + rng.normal(0, 0.05, 120), "load": np.full(120, ref_load)}, index=t)
        obs = pd.DataFrame({"cpu": 1 + rng.normal(0, 0.05, 30),
                            "load": rng.uniform(0.1, 2, 30) if obs_load else np.zeros(30)},
                           index=t[-1] + STEP * np.arange(1, 31))
        return ServiceSeries(name, ref, obs)

    from baynet.detector.calibrate import idle_services

    mesh = [service("gateway", 1.0), service("booking", 0.0), service("unused", 0.0, obs_load=False),
            ServiceSeries("db", pd.DataFrame({"cpu": np.ones(120)}, index=t), pd.DataFrame({"cpu": np.ones(3)}))]
    assert idle_services(mesh) == ["booking"]  # not the one idle in both, nor one that publishes no load
    cal = calibrate(_ByLevel(), mesh, STEP, budget=1.0)
    assert cal.idle_services == ["booking"] and cal.busy_services == 2
    assert "1 of 2 services with requests in the scored stretch served none in the reference" in cal.reason
    assert calibrate(_ByLevel(), [service("gateway", 1.0)], STEP, budget=1.0).idle_services == []


def test_calibration_over_several_recordings_of_a_mesh_adds_up_their_hours_and_false_incidents():
    """Short recordings (an evaluation's cases) allow no false incident each: judged one by one, a burst in
    one raises that one's threshold only; pooled, the burst counts against the hours of all of them."""
    rng = np.random.default_rng(9)

    def recording(burst: bool) -> list[ServiceSeries]:
        t = T0 + STEP * np.arange(60)
        v = 10 + rng.normal(0, 0.5, 60)
        if burst:
            v[45:50] += 16
        frame = pd.DataFrame({"cpu": v}, index=t)
        return [ServiceSeries("a", frame, frame.iloc[-5:])]

    from baynet.detector.calibrate import calibrate_recordings

    recordings = [(recording(k == 0), STEP) for k in range(4)]
    alone = [calibrate(_ByLevel(), series, step, budget=1.0) for series, step in recordings]
    pooled = calibrate_recordings(_ByLevel(), recordings, budget=1.0)
    assert alone[0].threshold > max(c.threshold for c in alone[1:])
    assert pooled.windows == sum(c.windows for c in alone) == 4 * 30
    assert pooled.hours == pytest.approx(4 * 30 * STEP / 3600)
    # 2 h of reference allow 2 false incidents, where half an hour allowed none: the pooled bar is below
    # what the burst's recording alone needed, and no higher than the quiet ones' own
    assert pooled.false_incidents <= 2 and "in 2.00 h" in pooled.reason
    assert pooled.threshold < alone[0].threshold and pooled.threshold <= max(c.threshold for c in alone[1:])


def test_zmax_scores_in_robust_spreads_and_calibrates_on_its_own_grid(tmp_path):
    """The model that learns nothing: its score is the window's largest |z|, its threshold comes from the
    budget on the training windows, it is stored and loaded like the others, and calibration raises it
    along the z grid, not the probability one."""
    from baynet.artifacts import LocalStore
    from baynet.lab.detector.datasets import rcd_cases
    from baynet.detector.models import Z_THRESHOLDS, blocks_from_cases, load_model, save_model, train_detector
    from tests.unit.test_detector import _rcd_layout

    cases = rcd_cases(_rcd_layout(tmp_path / "rcd"))
    blocks = blocks_from_cases(cases)
    model = train_detector(blocks, "zmax", false_budget=1.0)
    assert model.kind == "zmax" and model.features == ["max_abs_z"] and model.threshold in Z_THRESHOLDS
    scores = model.score(blocks)
    for b, s in zip(blocks, scores):
        assert np.allclose(s, np.expm1(b.X[:, FEATURES.index("max_abs_z")]))
        if (b.y == 1).any():  # a 90-point CPU jump is far beyond the threshold; the quiet windows are not
            assert np.median(s[b.y == 1]) > 10 * model.threshold > 10 * np.median(s[b.y == 0])
    save_model(LocalStore(tmp_path / "art"), model)
    again = load_model(LocalStore(tmp_path / "art"))
    assert again.kind == "zmax" and all(np.array_equal(a, b) for a, b in zip(again.score(blocks), scores))
    cal = calibrate(model, cases[0].services, cases[0].step_s, budget=1.0)
    assert cal.threshold in Z_THRESHOLDS and cal.threshold >= model.threshold


@pytest.mark.skipif(not (SHARED / "nezha" / "trainticket").is_dir(), reason="needs ../shared/datasets")
def test_every_train_ticket_fault_is_placed_where_its_metrics_are():
    from baynet.lab.detector.datasets import nezha_cases

    (day,) = nezha_cases(SHARED / "nezha" / "trainticket")
    # 24 of the 28 are listed with an inject_timestamp 8 h off the clock the metrics (and spans) follow
    assert len(day.faults) == 28
    t0 = min(float(s.observed.index.min()) for s in day.services)
    assert all(float(next(s for s in day.services if s.service == f.service).observed.index[f.start]) >= t0
               for f in day.faults)


def test_detect_eval_leave_mesh_out_prints_one_row_per_held_out_mesh(tmp_path):
    from typer.testing import CliRunner

    from baynet.cli.main import app
    from tests.unit.test_detector import _rcd_layout

    one, two = _rcd_layout(tmp_path / "one"), _rcd_layout(tmp_path / "two")
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(one), "--also-train", f"rcd-sockshop={two}",
                              "--leave-mesh-out", "--models", "gbm", "--json", "-q"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(result["meshes"]) == {"one", "two"} and result["false_budget"] == 1.0
    for held, part in result["meshes"].items():
        assert part["trained_on"] == sorted({"one", "two"} - {held})
        m = part["models"]["gbm"]
        for key in ("incident_recall", "false_incidents_per_mesh_hour", "event_recall", "median_incident_delay_windows"):
            assert key in m
        assert m["faults"] == 4 and m["incident_recall"] == 1.0  # a 90-point CPU jump, learnt on the other copy
        assert set(m["calibration"]) == {"carts-cpu/1", "carts-cpu/2", "user-cpu/1", "user-cpu/2"}
        # one threshold for the held-out mesh, calibrated on all four recordings' references together
        assert len(set(m["thresholds"].values())) == 1
        assert {c["recordings"] for c in m["calibration"].values()} == {4}
    table = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(one), "--also-train", f"rcd-sockshop={two}",
                                "--leave-mesh-out", "--models", "gbm", "-q"])
    rows = [line for line in table.stdout.splitlines() if line.startswith("| one") or line.startswith("| two")]
    assert len(rows) == 2
    alone = runner.invoke(app, ["detect", "eval", "rcd-sockshop", str(one), "--leave-mesh-out", "--models", "gbm"])
    assert alone.exit_code == 2 and "--leave-mesh-out needs" in alone.output


def test_coarsen_averages_rows_per_window_and_keeps_the_fault_where_it_was(tmp_path):
    from baynet.lab.detector.datasets import rcd_cases
    from baynet.detector.series import coarsen
    from tests.unit.test_detector import _rcd_layout

    case = rcd_cases(_rcd_layout(tmp_path / "rcd", reps=1))[0]
    coarse = coarsen(case, 10.0)
    assert coarse.step_s == 10.0 and coarsen(case, 0.5) is case  # never finer than the data
    fine = next(s for s in case.services if s.service == case.faults[0].service)
    s = next(s for s in coarse.services if s.service == fine.service)
    keys = np.floor(fine.observed.index.to_numpy(float) / 10) * 10
    assert np.allclose(s.observed["cpu"].to_numpy(), fine.observed["cpu"].groupby(keys).mean().to_numpy())
    (fault,) = coarse.faults
    t = s.observed.index.to_numpy(float)
    lo, hi = fine.observed.index[case.faults[0].start], fine.observed.index[case.faults[0].end - 1]
    assert t[fault.start] <= lo < t[fault.start] + 10 and t[fault.end - 1] <= hi < t[fault.end - 1] + 10
    assert set(s.labels[fault.start:fault.end]) == {1} and fault.kind == case.faults[0].kind
