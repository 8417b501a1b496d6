"""`baynet bundle replay` and `baynet bundle export` through the real path: Tempo-compatible server, Debian's
Prometheus backfilled with promtool, moto SQS, the incident flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack, prometheus_available
from tests.conftest import ROOT, SHARED, require

pytestmark = pytest.mark.integration
RCD = SHARED / "datasets" / "rcd-sockshop"


def baynet(*args, env=None, check=True):
    done = subprocess.run([sys.executable, "-m", "baynet.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def test_export_from_the_local_stack_then_replay_gives_the_same_ranking(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from flows.incident import incident_rca
    from prefect.settings import PREFECT_API_URL

    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900,
                        after_s=300, rate_per_s=0.5)
    paths = write_incident(incident, tmp_path / "incident")
    saved = dict(os.environ)
    try:
        with LocalStack(tmp_path / "live", traces=paths["traces"], openmetrics=paths["openmetrics"]) as st:
            # Istio's series, as a replay renders them: the generator's aggregates (beside a trace sample)
            # would come back as Istio histograms that only approximate their quantiles, and every trace
            os.environ.update({**st.env, "BAYNET_AGGREGATES": "istio"})
            original = incident_rca(json.dumps(incident.event))
            env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
            bundle = tmp_path / "bundle"
            done = baynet("bundle", "export", "--event", paths["event"], "--out", bundle, env=env)
            assert "spans" in done.stdout and "signals" in done.stdout
            # Exporting again over the bundle is refused: nothing is overwritten.
            again = baynet("bundle", "export", "--event", paths["event"], "--out", bundle, env=env, check=False)
            assert again.returncode == 2 and "not empty" in again.stderr
    finally:
        os.environ.clear()
        os.environ.update(saved)
    summary = json.loads(baynet("bundle", "check", bundle, "--json").stdout)
    assert summary["traces"] > 100 and summary["rows"]["signals.csv"] > 0 and summary["rows"]["topology.csv"] > 0
    assert not summary["has_truth"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    replayed = json.loads(baynet("bundle", "replay", bundle, "--json", "--workdir", tmp_path / "replay",
                                 env=env).stdout)
    assert replayed["fetch"]["sources"] == ["traces", "metrics"] == original["fetch"]["sources"]
    assert [r["service"] for r in replayed["ranking"]] == [r["service"] for r in original["ranking"]]
    assert replayed["ranking"][0]["service"] == incident.fault_service
    assert replayed["propagation_path"] == original["path"]


@pytest.mark.slow  # the metrics-only flow is covered by test_faults (Tempo unreachable); this adds 1 s data
def test_a_metrics_only_bundle_replays_through_prometheus(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    require((RCD / "user-cpu" / "1").is_dir(), f"RCD Sock Shop data at {RCD}")
    from prefect.settings import PREFECT_API_URL

    from baynet.lab.datasets.convert import rcd_bundle

    bundle = rcd_bundle(RCD / "user-cpu" / "1", tmp_path / "user-cpu-1")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = baynet("bundle", "replay", bundle, "--json", env=env)
    summary = json.loads(done.stdout)
    assert summary["fetch"]["sources"] == ["metrics"] and summary["fetch"]["evidence_complete"] is False
    assert summary["replay"]["metric_step_s"] == 1.0 and summary["replay"]["metric_series"] > 20
    assert summary["ranking"][0]["service"] == "user"  # its CPU, read back through PromQL
    assert "cpu +" in summary["ranking"][0]["evidence"]


def _network_delay_bundle(out, delayed: str = "payment", delay_ms: float = 200.0, seed: int = 3,
                          step: float = 15.0, history: float = 1500.0):
    """A metrics-only bundle: per call edge and ``step`` window, both reporters' p50, for ``history`` seconds
    before the event. From the fault on, the calls to ``delayed`` wait ``delay_ms`` on the network: its
    callers see it (source reporter and their own latency), its own sidecar does not."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    own = {"payment": 20.0, "shipping": 15.0, "catalogue": 10.0, "orders": 30.0, "front-end": 5.0}
    calls = {"front-end": ["orders", "catalogue"], "orders": ["payment", "shipping"]}
    event_t = 1_700_000_000.0
    fault_start = event_t - max(180.0, step)
    rows = []
    for t in np.arange(event_t - history, event_t + step, step):
        late = delay_ms if t > fault_start else 0.0
        lat: dict[str, float] = {}

        def latency(svc: str) -> float:  # the service's own sidecar view, its calls included
            if svc not in lat:
                lat[svc] = own[svc] * rng.lognormal(0, 0.05) + sum(
                    latency(c) + 1.0 + (late if c == delayed else 0.0) for c in calls.get(svc, []))
            return lat[svc]

        for src, dst in [("", "front-end")] + [(a, b) for a, bs in calls.items() for b in bs]:
            dest_ms = latency(dst)
            src_ms = dest_ms + 1.0 + (late if dst == delayed else 0.0) + rng.normal(0, 0.3)
            for reporter, ms in (("destination", dest_ms), ("source", src_ms)):
                if reporter == "source" and not src:
                    continue
                rows.append({"time": t, "source": src, "destination": dst, "window_s": step, "requests": 60,
                             "error_ratio": 0.0, "latency_ms_p50": ms, "latency_ms_p90": ms * 1.6,
                             "latency_ms_p99": ms * 2.2, "destination_version": "", "reporter": reporter})
    out.mkdir(parents=True)
    (out / "bundle.json").write_text(json.dumps({"format": 1}) + "\n")
    (out / "event.json").write_text(json.dumps({"id": f"netdelay-{delayed}", "service": "front-end",
                                                "event_type": "latency", "timestamp": event_t,
                                                "namespace": "sock-shop"}) + "\n")
    pd.DataFrame(rows).to_csv(out / "signals.csv", index=False)
    return out


def test_network_delay_metrics_only_the_flow_reads_each_edge_from_both_reporters(tmp_path, prefect_harness):
    """No traces: the flow's metric map sees latency per service, where the delay shows on the callers; the
    edge gaps it reads from Istio (caller-reported minus callee-reported) put it on the delayed service."""
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    bundle = _network_delay_bundle(tmp_path / "netdelay")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    assert summary["fetch"]["sources"] == ["metrics"]
    top = summary["ranking"][0]
    assert top["service"] == "payment", summary["ranking"][:3]
    assert "network gap" in top["evidence"]
    # the caller, whose own latency rose by the same amount, is not blamed for the gap
    orders = next(r for r in summary["ranking"] if r["service"] == "orders")
    assert "network gap" not in orders["evidence"]


def test_five_minute_metrics_read_live_reach_back_for_their_baseline(tmp_path, prefect_harness):
    """At a 5-minute step the slices widen to whole steps and cover the configured 600 s baseline: the flow
    reads Prometheus from ten steps before them (``read_from``), judges against that baseline, and ranks
    first what the in-process analysis of the same bundle ranks first."""
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle

    bundle = _network_delay_bundle(tmp_path / "five-minutes", step=300.0, history=7200.0)
    here = analyse_bundle(load_bundle(bundle))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    assert summary["replay"]["metric_step_s"] == 300.0
    assert summary["ranking"][0]["service"] == here.ranking[0]["service"], summary["ranking"][:3]
    assert "+" in summary["ranking"][0]["evidence"], summary["ranking"][0]  # judged: "metric latency +57 sd"
    assert any("metric baseline 3000 s" in n for n in summary["fetch"].get("notes", [])), summary["fetch"]


def test_replay_of_a_bad_bundle_exits_2_naming_the_problem(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "event.json").write_text('{"service": ""}')
    done = baynet("bundle", "replay", tmp_path / "b", check=False)
    assert done.returncode == 2 and "event.json" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_rollout_replayed_the_flow_reads_versions_from_istio_and_blames_the_new_one(tmp_path, prefect_harness):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    from baynet.lab.datasets.rollouts import rollout_bundle

    bundle = rollout_bundle(tmp_path / "rollout", "sock-shop", "user", seed=5)
    (bundle / "changes.csv").unlink()  # the flow must find the deployments in destination_version alone
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    top = summary["ranking"][0]
    assert top["service"] == "user"
    assert "v2 error ratio" in top["evidence"] and "in the same" in top["evidence"]  # the versions named
    assert any(c.startswith("user: version v2 first serves calls") for c in summary["fetch"]["changes"])
    # Harmless rollouts seen beside it (one may serve too few calls in the window to show) are not blamed.
    assert len(summary["fetch"]["changes"]) >= 2


def test_a_ranking_on_a_version_too_young_to_tell_looks_again_through_the_flow(tmp_path, prefect_harness):
    """The flow, as the bundle analysis: its top-ranked service runs a version two 15 s windows old, so the
    run waits for (here: finds, the incident being past) one window more, reads again and ranks again,
    recording the first look."""
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    from baynet.lab.datasets.rollouts import hard_rollout_bundle

    bundle = hard_rollout_bundle(tmp_path / "hard", "sock-shop", 20)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    looked = summary["fetch"]["looked_again"]
    assert looked["after_s"] == 15.0 and looked["first_look"][0]["service"] == "carts-db"
    assert "carts-db's v2 had served in 2 of the data's 15 s windows" in looked["because"]
    assert sum(n.startswith("looked again 15 s later") for n in summary["fetch"]["notes"]) == 1


def test_a_first_look_that_saw_nothing_of_its_own_looks_a_slice_later_through_the_flow(tmp_path, prefect_harness):
    """The flow, as the bundle analysis: at the alert no service's own work looks anomalous through
    Prometheus and the Loki-compatible server either; the run reads a slice later, where the bad catalogue
    v2's logged exceptions have reached their threshold, and keeps that look."""
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from prefect.settings import PREFECT_API_URL

    from baynet.analysis.look_again import QUIET
    from baynet.lab.datasets.rollouts import hard_rollout_bundle

    bundle = hard_rollout_bundle(tmp_path / "hard", "sock-shop", 41)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    looked = summary["fetch"]["looked_again"]
    assert looked["after_s"] == 60.0 and looked["because"] == QUIET
    assert summary["ranking"][0]["service"] == "catalogue" != looked["first_look"][0]["service"]
    assert sum(n.startswith("looked again 60 s later") for n in summary["fetch"]["notes"]) == 1


def test_a_train_ticket_code_fault_with_logs_replays_to_the_in_process_ranking(tmp_path, prefect_harness):
    """The real path with all three sources: the spans through the Tempo-compatible server, the metrics
    backfilled into Prometheus, the log lines pushed into the Loki-compatible server; the flow finds the
    code fault in the logs and ranks as the in-process analysis of the same bundle does."""
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    tt = SHARED / "datasets" / "nezha" / "trainticket"
    require(tt.is_dir(), f"the Train-Ticket dataset at {tt}")
    from prefect.settings import PREFECT_API_URL

    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle
    from baynet.lab.datasets.convert import _read_metric_day, nezha_bundle
    from baynet.lab.datasets.nezha import list_cases

    case = next(c for c in list_cases(tt) if c.trace_files and c.fault_type == "return")
    bundle = nezha_bundle(case, tt, tmp_path / "tt-return", metrics_day=_read_metric_day(tt / case.day / "metric"))
    assert (bundle / "logs.csv").is_file()
    in_process = analyse_bundle(load_bundle(bundle))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    summary = json.loads(baynet("bundle", "replay", bundle, "--json", env=env).stdout)
    assert set(summary["fetch"]["sources"]) >= {"traces", "metrics", "logs"}, summary["fetch"]
    assert summary["ranking"][0]["service"] == in_process.ranking[0]["service"] == case.truth
    assert "log" in summary["ranking"][0]["evidence"].lower()  # found in its lines, not its spans
    assert [r["service"] for r in summary["ranking"][:3]] == [r["service"] for r in in_process.ranking[:3]]
