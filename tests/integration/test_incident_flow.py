"""The real incident flow on the real local stack (moto SQS/S3, Tempo replay, Prometheus) under a Prefect
test harness, checked through the Prefect API."""

import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

STEPS = {"parse-anomaly", "query-tempo", "read-topology", "diff-topology", "load-model",
         "analyse", "store-artifacts"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prefect_harness):
    work = tmp_path_factory.mktemp("stack")
    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, after_s=300)
    paths = write_incident(incident, work / "incident")
    saved = dict(os.environ)
    with LocalStack(work, traces=paths["traces"], openmetrics=paths["openmetrics"], max_receive_count=2) as st:
        os.environ.update(st.env)
        os.environ["BAYNET_SQS_WAIT_SECONDS"] = "1"
        os.environ["BAYNET_TEMPO_MAX_RETRIES"] = "0"
        yield st, incident, paths
    os.environ.clear()
    os.environ.update(saved)


def event_body(incident, **extra):
    return json.dumps({**incident.event, **extra})


def flow_state(message):
    from flows.incident import incident_rca

    return incident_rca(message, return_state=True)


def task_runs(flow_run_id, timeout_s=20.0):
    """The flow run's task runs by name, once each has reached a final state: task runs report their
    states to the API asynchronously (as events), so right after the flow ends some may still read Pending."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if all(r.state is not None and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {re.sub(r"-[0-9a-f]{3}$", "", r.name): r for r in runs}  # "query-tempo-5bf" -> "query-tempo"


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_queue_to_ranking_with_malformed_messages_dead_lettered(stack):
    from baynet.cli.common import incident_runner
    from baynet.consumer import run_consumer
    from baynet.settings import Settings

    st, incident, _ = stack
    bad = ["not json", json.dumps({"event_type": "latency"}), json.dumps({"service": "a", "event_type": "b",
                                                                         "timestamp": "2999-01-01T00:00:00Z"}),
           json.dumps({"Type": "Notification", "Message": "{}"}), json.dumps({"service": "x" * 300})]
    for body in bad + [event_body(incident)]:
        st.sqs.send_message(QueueUrl=st.queue_url, MessageBody=body)
    # Prefect re-configures the root logger when a flow starts, so listen on our logger itself.
    records = Records()
    logging.getLogger("baynet.sqs").addHandler(records)
    try:
        outcomes = run_consumer(Settings(), incident_runner, max_messages=6, idle_polls=2)
    finally:
        logging.getLogger("baynet.sqs").removeHandler(records)
    assert sorted(o.result for o in outcomes) == ["analysed"] + ["dead-lettered"] * 5
    dead = st.sqs.receive_message(QueueUrl=st.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    assert len(dead["Messages"]) == 5
    assert all(m["MessageAttributes"]["baynet-reason"]["StringValue"] for m in dead["Messages"])
    assert sum("dead-letter" in m for m in records.messages) == 5

    event_id = next(o.event_ids[0] for o in outcomes if o.result == "analysed")
    base = st.workdir / "artifacts" / "incidents" / event_id
    for name in ("ranking.json", "ranking.csv", "posteriors.csv", "evidence.csv", "topology.json",
                 "topology_diff.json", "topology_diff.md", "model.json", "structure.html", "_COMPLETE"):
        assert (base / name).exists(), name
    summary = json.loads((base / "ranking.json").read_text())
    assert summary["ranking"][0]["service"] == "payment"
    assert "failed" in {e["why"] for e in summary["ranking"][0]["exemplars"]}  # traces that show it
    assert summary["propagation_path"][0] == "payment" and summary["propagation_path"][-1] == "front-end"
    # the incident's update is in the model's log (create-only, keyed by event time and id)
    updates = list((st.workdir / "artifacts" / "model" / "default" / "log").glob(f"*-{event_id}.json"))
    assert len(updates) == 1 and json.loads(updates[0].read_text())["event_id"] == event_id
    # In the Prefect UI the run is found by its incident: named after it, tagged with service and namespace
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (run,) = [r for r in client.read_flow_runs(limit=200) if event_id in json.dumps(r.parameters)]
    assert run.name.startswith(f"front-end {incident.event['event_type']} ") and run.name.endswith(f"({event_id})")
    assert {"service:front-end", "namespace:default"} <= set(run.tags)
    assert (st.workdir / "artifacts" / "model" / "default" / "latest.json").exists()
    topo = json.loads((base / "topology.json").read_text())
    if st.prometheus:
        assert topo["source"].startswith("prometheus")


def test_flow_run_visible_in_prefect_with_tasks_and_artifacts(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    _, incident, _ = stack
    state = flow_state(event_body(incident, id=f"ui-{uuid.uuid4().hex[:8]}"))
    assert state.is_completed()
    runs = task_runs(state.state_details.flow_run_id)
    assert STEPS <= set(runs) and all(r.state.is_completed() for r in runs.values())
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in arts}
    assert by_key["rca-ranking-front-end"].type == "table"
    assert "payment" in json.dumps(by_key["rca-ranking-front-end"].data)
    assert by_key["topology-diff-default"].type == "markdown"
    assert "structure.html" in str(by_key["rca-report-front-end"].data)  # the link artifact


def test_tempo_503_is_retried_by_the_task(stack):
    st, incident, _ = stack
    st.tempo.inject("/api/search", 503, "Query Frontend not ready: 1 of 1 querier down", times=1)
    state = flow_state(event_body(incident, id=f"retry-{uuid.uuid4().hex[:8]}"))
    assert state.is_completed()
    run = task_runs(state.state_details.flow_run_id)["query-tempo"]
    assert run.run_count == 2 and run.state.is_completed()


def test_tempo_400_is_not_retried(stack):
    st, incident, _ = stack
    st.tempo.inject("/api/search", 400, "invalid TraceQL query: parse error", times=1)
    state = flow_state(event_body(incident, id=f"bad-{uuid.uuid4().hex[:8]}"))
    assert state.is_failed()
    run = task_runs(state.state_details.flow_run_id)["query-tempo"]
    assert run.run_count == 1 and run.state.is_failed()


def test_artifacts_to_s3(stack, monkeypatch):
    st, incident, _ = stack
    s3 = st.moto.client("s3")
    s3.create_bucket(Bucket="baynet-artifacts")
    monkeypatch.setenv("BAYNET_S3_BUCKET", "baynet-artifacts")
    monkeypatch.setenv("BAYNET_S3_SSE", "AES256")
    event_id = f"s3-{uuid.uuid4().hex[:8]}"
    assert flow_state(event_body(incident, id=event_id)).is_completed()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="baynet-artifacts")["Contents"]}
    assert f"baynet/incidents/{event_id}/ranking.json" in keys and f"baynet/incidents/{event_id}/_COMPLETE" in keys
    head = s3.head_object(Bucket="baynet-artifacts", Key=f"baynet/incidents/{event_id}/structure.html")
    assert head["ServerSideEncryption"] == "AES256"


def test_prefect_deploy_accepts_prefect_yaml(stack):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(prefect + ["work-pool", "create", "baynet", "--type", "process"], env=env, cwd=ROOT,
                   capture_output=True, text=True, timeout=120)
    proc = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
        assert {"incident-rca", "topology-refresh", "detect-anomalies", "backfill", "confirm-root-cause"} <= names
        for name in ("topology-refresh/topology-refresh", "detect-anomalies/detect-anomalies"):
            scheduled = client.read_deployment_by_name(name)
            assert scheduled.schedules and scheduled.schedules[0].schedule.interval.total_seconds() == 300


def test_failed_validation_stops_the_run_with_a_report_and_no_retry(stack, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from baynet import evidence

    _, incident, _ = stack
    real = evidence.build_evidence

    def corrupt(*args, **kwargs):
        ev, edges = real(*args, **kwargs)
        return ev.assign(error_ratio=1.5), edges  # an impossible share

    monkeypatch.setattr("baynet.evidence.traces.build_evidence", corrupt)
    state = flow_state(event_body(incident, id=f"invalid-{uuid.uuid4().hex[:8]}"))
    assert state.is_failed()
    run = task_runs(state.state_details.flow_run_id)["analyse"]
    assert run.run_count == 1 and run.state.is_failed()
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    report = next(a for a in arts if a.key == "validation-evidence")
    assert "error_ratio" in report.data and "1.5" in report.data


def test_credentials_never_reach_logs_or_artifacts(stack, monkeypatch):
    st, incident, _ = stack
    planted = "planted-s3cr3t-4f9a1c"
    monkeypatch.setenv("BAYNET_TEMPO_TOKEN", planted)
    monkeypatch.setenv("BAYNET_TEMPO_PASSWORD", planted + "-pw")
    records = Records()
    records.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("", "prefect", "baynet", "tasks", "flows", "httpx", "httpcore")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
        lg.setLevel(logging.DEBUG)
    try:
        state = flow_state(event_body(incident, id=f"secret-{uuid.uuid4().hex[:8]}"))
    finally:
        for lg, level in zip(loggers, old_levels):
            lg.removeHandler(records)
            lg.setLevel(level)
    assert state.is_completed() and len(records.messages) > 20
    assert not [m for m in records.messages if planted in m]
    for path in (st.workdir / "artifacts").rglob("*"):
        if path.is_file():
            assert planted not in path.read_text(errors="ignore"), path


def test_confirm_root_cause_flow_stores_the_confirmation_and_the_model_learns(stack):
    """The confirm-root-cause flow (what its deployment runs from the Prefect UI) on an incident the
    stack analysed: stored with who and when, the confirmed service's prior rises; a service that was not
    analysed fails the run, naming it."""
    from baynet.artifacts import LocalStore
    from baynet.state import ModelLog
    from flows.confirm import confirm_root_cause

    st, incident, _ = stack
    assert flow_state({**incident.event, "id": "confirm-me"}).is_completed()
    store = LocalStore(st.workdir / "artifacts")
    before = ModelLog(store, "default").current().prior("payment")
    record = confirm_root_cause("confirm-me", "payment", by="sre-on-call", note="card processor down")
    assert record["by"] == "sre-on-call" and record["root_cause"] == "payment"
    assert json.loads((st.workdir / "artifacts" / "incidents" / "confirm-me" / "confirmation.json").read_text()
                      )["note"] == "card processor down"
    assert ModelLog(store, "default").current().prior("payment") > before
    state = confirm_root_cause("confirm-me", "no-such-service", return_state=True)
    assert state.is_failed() and "'no-such-service' is not among" in state.message + str(state.result(
        raise_on_failure=False))
