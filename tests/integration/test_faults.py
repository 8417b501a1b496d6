"""Faults on the worst day of a mesh, injected on 127.0.0.1 and bounded in time and count: a slow or
failing Tempo, Prometheus down, the queue endpoint restarting, the consumer killed mid-analysis, a crash
while artifacts are written. Each test states the outcome the operator gets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack, MotoServer, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prefect_harness):
    work = tmp_path_factory.mktemp("faults")
    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, after_s=300,
                        rate_per_s=0.5)
    paths = write_incident(incident, work / "incident")
    saved = dict(os.environ)
    with LocalStack(work, traces=paths["traces"], openmetrics=paths["openmetrics"], max_receive_count=3) as st:
        os.environ.update(st.env)
        os.environ["BAYNET_SQS_WAIT_SECONDS"] = "1"
        yield st, incident
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def tempo(stack, monkeypatch):
    """The stack's Tempo with no faults left over; one retry per request unless a test says otherwise."""
    st, _ = stack
    st.tempo.faults.clear()
    monkeypatch.setenv("BAYNET_TEMPO_MAX_RETRIES", "1")
    yield st.tempo
    st.tempo.faults.clear()


def fetched_ids(stack, n=2):
    """Trace ids the flow will fetch (the event service's traces in the incident window), as Tempo's
    search spells them, so a fault can be aimed at one trace whatever the fetch order."""
    from baynet.settings import Settings
    from baynet.tempo.client import TempoClient

    st, incident = stack
    at = incident.event["timestamp"]
    lo = at - Settings().slices * Settings().window_s
    with TempoClient(st.tempo.url) as client:
        found = client.search(f'{{ resource.service.name = "{incident.event["service"]}" }}', int(lo), int(at),
                              limit=n)
    assert len(found) == n
    return [t.trace_id for t in found]


def run_flow(stack, **env):
    from flows.incident import incident_rca

    st, incident = stack
    event_id = f"fault-{uuid.uuid4().hex[:8]}"
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        t0 = time.monotonic()
        state = incident_rca(json.dumps({**incident.event, "id": event_id}), return_state=True)
        took = time.monotonic() - t0
    finally:  # put back what the stack set (e.g. its own Tempo URL), drop what it did not
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    summary = None
    path = st.workdir / "artifacts" / "incidents" / event_id / "ranking.json"
    if path.exists():
        summary = json.loads(path.read_text())
    return state, summary, took


def test_slow_tempo_times_out_is_retried_then_the_trace_is_skipped_as_partial(stack, tempo):
    one, two = fetched_ids(stack)
    tempo.inject(f"/api/traces/{one}", 0, delay_s=1.5, times=2)  # too slow twice: skipped
    tempo.inject(f"/api/traces/{two}", 0, delay_s=1.5, times=1)  # too slow once: the retry reads it
    state, summary, _ = run_flow(stack, BAYNET_TEMPO_TIMEOUT_S="0.5")
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["failed"] == 1 and fetch["retries"] >= 2 and not fetch["evidence_complete"]
    assert any("unreadable after retries" in r for r in fetch["partial_reasons"])
    assert any("Timeout" in n for n in fetch["notes"])
    assert summary["ranking"][0]["service"] == "payment"


def test_time_budget_bounds_a_slow_tempo_and_says_so(stack, tempo):
    tempo.inject("/api/traces/", 0, delay_s=0.3, times=10_000)  # every fetch slow
    state, summary, took = run_flow(stack, BAYNET_TEMPO_BUDGET_S="3")
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["over_budget"] > 0 and fetch["traces_fetched"] >= 1
    assert any("time budget" in r for r in fetch["partial_reasons"])
    assert took < 3 + 30  # the budget plus the rest of the analysis, not traces x 0.3 s


def test_429_with_retry_after_is_waited_out_and_evidence_stays_complete(stack, tempo):
    tempo.inject("/api/search", 429, "rate limited", headers={"Retry-After": "1"}, times=2)
    state, summary, took = run_flow(stack, BAYNET_TEMPO_MAX_RETRIES="3")
    assert state.is_completed()
    assert summary["fetch"]["retries"] >= 2 and summary["fetch"]["evidence_complete"]
    assert took >= 2.0  # two Retry-After waits honoured


def test_5xx_burst_on_trace_fetches_skips_only_what_never_recovered(stack, tempo):
    one, two = fetched_ids(stack)
    tempo.inject(f"/api/traces/{one}", 500, "internal error: rpc error: code = Unavailable", times=2)
    tempo.inject(f"/api/traces/{two}", 500, "internal error: rpc error: code = Unavailable", times=1)
    state, summary, _ = run_flow(stack)
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["failed"] == 1 and fetch["retries"] == 2  # trace 1: 500, 500 -> skipped; trace 2: 500, ok
    assert any("HTTP 500" in n for n in fetch["notes"])


def test_connection_reset_is_retried_transparently(stack, tempo):
    for trace_id in fetched_ids(stack):
        tempo.inject(f"/api/traces/{trace_id}", 0, reset=True, times=1)
    state, summary, _ = run_flow(stack, BAYNET_TEMPO_MAX_RETRIES="2")
    assert state.is_completed()
    assert summary["fetch"]["evidence_complete"] and summary["fetch"]["retries"] == 2


def test_truncated_json_is_skipped_and_named(stack, tempo):
    for trace_id in fetched_ids(stack):  # cut short on the first try and on the retry
        tempo.inject(f"/api/traces/{trace_id}", 200, b'{"batches": [{"resource": {"attributes": [{"ke', times=2)
    state, summary, _ = run_flow(stack)
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["failed"] == 2 and not fetch["evidence_complete"]  # broken JSON is not retried: read as-is
    assert sum("unreadable trace skipped" in n for n in fetch["notes"]) == 2


def test_trace_gone_between_search_and_fetch_is_counted(stack, tempo):
    for trace_id in fetched_ids(stack, 3):
        tempo.inject(f"/api/traces/{trace_id}", 404, b"", times=1)
    state, summary, _ = run_flow(stack)
    assert state.is_completed()
    assert summary["fetch"]["not_found"] == 3
    assert any("404" in r for r in summary["fetch"]["partial_reasons"])


def test_nothing_readable_fails_the_run_and_the_message_returns(stack, tempo):
    from baynet.cli.common import incident_runner
    from baynet.consumer import run_consumer
    from baynet.settings import Settings

    st, incident = stack
    event_id = f"down-{uuid.uuid4().hex[:8]}"
    st.sqs.send_message(QueueUrl=st.queue_url, MessageBody=json.dumps({**incident.event, "id": event_id}))
    os.environ["BAYNET_TEMPO_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    os.environ["BAYNET_METRICS_EVIDENCE"] = "false"  # and no metrics to carry the analysis instead
    try:
        outcomes = run_consumer(Settings(), incident_runner, max_messages=1, idle_polls=3, retry_after=1)
    finally:
        os.environ["BAYNET_TEMPO_URL"] = st.tempo.url
        os.environ.pop("BAYNET_METRICS_EVIDENCE")
    assert [o.result for o in outcomes] == ["failed"] and "Tempo" in outcomes[0].detail
    time.sleep(1.5)
    back = st.sqs.receive_message(QueueUrl=st.queue_url, WaitTimeSeconds=5, VisibilityTimeout=30)["Messages"]
    assert json.loads(back[0]["Body"])["id"] == event_id  # not lost: offered again
    st.sqs.delete_message(QueueUrl=st.queue_url, ReceiptHandle=back[0]["ReceiptHandle"])


def test_prometheus_down_uses_the_last_snapshot_and_reports_its_age(stack, tempo):
    st, _ = stack
    if st.prometheus is None:  # a snapshot must exist first: one run reading the real Prometheus
        pytest.skip("needs Debian's prometheus")  # CI installs it
    state, _, _ = run_flow(stack)
    assert state.is_completed()
    # retries of a refused connection are tested in test_prometheus_topology; here they only add time
    state, summary, _ = run_flow(stack, BAYNET_PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}",
                                 BAYNET_PROMETHEUS_MAX_RETRIES="0")
    assert state.is_completed()
    note = summary["fetch"]["topology"]
    assert "unavailable" in note and "last stored snapshot used" in note and " s old)" in note


def test_tempo_unreachable_the_analysis_completes_on_metrics_marked_partial(stack, tempo):
    st, incident = stack
    if st.prometheus is None:
        pytest.skip("needs Debian's prometheus")  # CI installs it
    state, summary, _ = run_flow(stack, BAYNET_TEMPO_URL=f"http://127.0.0.1:{free_port()}",
                                 BAYNET_TEMPO_MAX_RETRIES="0")
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["sources"] == ["metrics"] and fetch["evidence_complete"] is False
    assert any("no traces" in r and "metrics alone" in r for r in fetch["partial_reasons"])
    # The Istio series carry the fault: errors at payment, explained upwards through the call graph.
    assert summary["ranking"][0]["service"] == incident.fault_service
    assert "metric errors" in summary["ranking"][0]["evidence"]


def test_prometheus_down_and_tempo_up_the_traces_alone_as_before(stack, tempo):
    st, incident = stack
    state, summary, _ = run_flow(stack, BAYNET_PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}",
                                 BAYNET_PROMETHEUS_MAX_RETRIES="0")
    assert state.is_completed()
    fetch = summary["fetch"]
    assert fetch["sources"] == ["traces"] and fetch["metrics"].startswith("unavailable")
    assert summary["ranking"][0]["service"] == incident.fault_service


def test_queue_endpoint_restart_loses_no_message(tmp_path):
    """moto's server stops under a running consumer (its state lives in the process, like a queue that
    outlives a network outage) and comes back on the same port; an analysis running across the outage
    cannot delete its message, which returns and is collapsed as a duplicate."""
    from baynet.sqs import Consumer, create_queues

    port = free_port()
    moto = MotoServer(port).start()
    sqs = moto.client("sqs")
    url, dlq = create_queues(sqs, f"restart-{uuid.uuid4().hex[:6]}", visibility_timeout=10)
    analysed, release = [], threading.Event()

    def handler(event):
        if event.id == "during":
            release.wait(30)  # the endpoint goes down while this analysis runs
        analysed.append(event.id)

    consumer = Consumer(sqs, url, handler, dlq_url=dlq, wait_s=1, visibility_s=10)
    worker = threading.Thread(target=consumer.run, daemon=True)
    body = {"service": "carts", "event_type": "latency", "timestamp": "2026-11-01T10:00:00Z"}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**body, "id": "before"}))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**body, "id": "during"}))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while "during" not in consumer.in_flight and time.monotonic() < deadline:
            time.sleep(0.1)
        moto.stop()
        release.set()
        time.sleep(3)  # receives fail and back off meanwhile
        moto = MotoServer(port).start()
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**body, "id": "after"}))
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            results = sorted((o.event_ids[0], o.result) for o in consumer.outcomes)
            if ("after", "analysed") in results and ("during", "duplicate") in results:
                break
            time.sleep(0.5)
    finally:
        consumer.stop.set()
        worker.join(30)
    assert sorted(analysed) == ["after", "before", "during"]  # each analysed once
    assert ("during", "duplicate") in results  # the undeleted message came back and was collapsed
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
    moto.stop()


def test_consumer_killed_mid_analysis_redelivers_and_analyses_once(stack, tempo, tmp_path):
    """``baynet listen`` is SIGKILLed while its analysis waits on a slow Tempo; after the visibility
    timeout a new consumer gets the message and analyses it; one completed flow run in Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    st, incident = stack
    event_id = f"kill-{uuid.uuid4().hex[:8]}"
    st.sqs.send_message(QueueUrl=st.queue_url, MessageBody=json.dumps({**incident.event, "id": event_id}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "BAYNET_SQS_VISIBILITY_TIMEOUT": "10"}
    tempo.inject("/api/traces/", 0, delay_s=0.5, times=10_000)
    listen = [sys.executable, "-m", "baynet.cli", "listen", "--max-messages", "1", "--idle-polls", "5"]
    first = subprocess.Popen(listen, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = len([p for p in st.tempo.requests if p.startswith("/api/traces/")])
        deadline = time.monotonic() + 90
        while len([p for p in st.tempo.requests if p.startswith("/api/traces/")]) < seen + 2:
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)  # mid-analysis: fetching traces
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = time.monotonic()
    store = st.workdir / "artifacts" / "incidents" / event_id
    assert not (store / "_COMPLETE").exists()
    tempo.faults.clear()
    second = subprocess.run(listen[:-1] + ["30"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {"analysed": 1}
    assert time.monotonic() - killed_at >= 5  # it waited for the visibility timeout, not taken at once
    assert (store / "_COMPLETE").exists()
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if event_id in json.dumps(r.parameters)]
    assert sum(r.state.is_completed() for r in runs) == 1  # analysed exactly once
    attrs = st.sqs.get_queue_attributes(QueueUrl=st.queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_crash_while_writing_artifacts_never_reads_as_complete(stack, tmp_path, monkeypatch):
    """The store dies after a few files: the incident is not complete (no ``_COMPLETE``), the consumer
    would analyse it again, and a second run completes it."""
    from baynet.artifacts import LocalStore

    from flows.incident import incident_rca

    st, incident = stack
    event_id = f"crash-{uuid.uuid4().hex[:8]}"
    store = LocalStore(st.workdir / "artifacts")
    real_put, calls, at_crash = LocalStore.put, [], []

    def dying_put(self, key, data):
        if key.startswith(f"incidents/{event_id}/"):  # the incident's own files (not a snapshot or the model)
            calls.append(key)
        if len(calls) == 4 and not at_crash:  # the disk fills up in the middle of the incident's files
            at_crash.append((store.incident_complete(event_id), sorted(p.name for p in self._path(key).parent.iterdir())))
            raise OSError(28, "No space left on device")
        return real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", dying_put)
    state = incident_rca(json.dumps({**incident.event, "id": event_id}), return_state=True)
    complete_then, files_then = at_crash[0]
    assert not complete_then and "_COMPLETE" not in files_then and len(files_then) == 3
    assert not any(name.startswith(".") or "tmp" in name for name in files_then)  # only whole files, no temp
    assert state.is_completed()  # the store task retried after the failure and wrote the marker last
    assert store.incident_complete(event_id)


def _prefect_servers() -> set[int]:
    """Process ids of Prefect API servers running on this machine (the test harness's among them)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]) for line in out.splitlines() if "prefect.server.api.server" in line}


@pytest.mark.slow  # ~100 s, moved out of `make test` for CI time; `make bench` (pytest -m slow) runs it, beside the scale-out
# test, whose three listeners also run without a Prefect server at --concurrency 4
def test_concurrent_listen_without_a_prefect_server_shares_one_and_leaves_nothing_running(stack, tmp_path):
    """No PREFECT_API_URL, ``baynet listen --concurrency 4`` piped through ``cat``: every analysis runs on
    one temporary Prefect server (not one racing start per thread), the pipeline returns, and no server
    of ours is left running."""
    st, incident = stack
    ids = [f"conc-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for event_id in ids:
        st.sqs.send_message(QueueUrl=st.queue_url, MessageBody=json.dumps({**incident.event, "id": event_id}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), BAYNET_CONCURRENCY="4")
    before = _prefect_servers()
    command = (f"{sys.executable} -m baynet.cli listen --concurrency 4 --max-messages 4 --idle-polls 5 "
               f"2> {tmp_path / 'listen.err'} | cat")
    done = subprocess.run(["bash", "-c", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    err = (tmp_path / "listen.err").read_text()
    assert done.returncode == 0, err[-3000:]
    assert done.stdout.strip(), err[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"analysed": 4}, err[-3000:]
    assert "did not start" not in err and "Failed to reach API" not in err, err[-3000:]
    for event_id in ids:
        assert (st.workdir / "artifacts" / "incidents" / event_id / "_COMPLETE").exists()
    time.sleep(1)
    assert _prefect_servers() <= before  # the temporary server stopped with the command


def test_analyse_with_tempo_down_ends_in_one_paragraph_not_a_traceback(stack, tmp_path):
    """``baynet analyse`` while Tempo is unreachable: exit 1 and a short message naming Tempo, its URL and
    what to do -- not hundreds of lines of tracebacks; ``--verbose`` keeps them."""
    from prefect.settings import PREFECT_API_URL

    st, incident = stack
    event = tmp_path / "event.json"
    event.write_text(json.dumps({**incident.event, "id": f"down-{uuid.uuid4().hex[:8]}"}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "BAYNET_TEMPO_URL": f"http://127.0.0.1:{free_port()}",
           "BAYNET_TEMPO_MAX_RETRIES": "0", "BAYNET_METRICS_EVIDENCE": "false"}  # no metrics to fall back on
    quiet = subprocess.run([sys.executable, "-m", "baynet.cli", "analyse", str(event)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=240)
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 1, out[-3000:]
    assert "Traceback" not in out and len(out.splitlines()) <= 15, out[-3000:]
    assert "could not be read from Tempo" in quiet.stderr and "BAYNET_TEMPO_URL" in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "baynet.cli", "analyse", str(event), "--verbose"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert loud.returncode == 1 and "Traceback" in loud.stdout + loud.stderr
