"""The whole local stack as an SRE uses it (`baynet stack up`): a Prefect server with the deployments of
prefect.yaml and two workers, moto SQS/S3, the Tempo-compatible server, Debian's Prometheus, the SQS
listener triggering the incident deployment, and the report pages. Checked through the Prefect API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT, require

pytestmark = pytest.mark.e2e

STEPS = {"parse-anomaly", "query-tempo", "read-topology", "diff-topology", "load-model",
         "analyse", "store-artifacts"}
SHOTS = ROOT / "test-output"
PAST = 8  # past incidents the backfill test replays, 4 in flight; a worker runs at most 2 at once (2 cores), so
# both workers take a share


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from baynet.lab.generator import generate, write_incident
    from baynet.local.stack import free_port, prometheus_available, stack_down, stack_up

    require(prometheus_available(), "Debian's prometheus (apt-get install -y prometheus)")
    work = tmp_path_factory.mktemp("stack-e2e")
    now = time.time()
    main = write_incident(generate("sock-shop", "payment", "errors", fault_start=now - 600, before_s=900,
                                   after_s=300, rate_per_s=0.5), work / "main")
    (work / "traces").mkdir()
    (main["traces"]).rename(work / "traces" / "main")
    past = []
    services = ["carts", "orders", "payment", "catalogue", "user"]
    for k in range(PAST):  # past incidents, an hour apart
        inc = generate("sock-shop", services[k % 5], "latency", fault_start=now - 3600 * (k + 2), before_s=900,
                       after_s=240, rate_per_s=0.3, seed=100 + k)
        paths = write_incident(inc, work / f"past-{k:02d}")
        paths["traces"].rename(work / "traces" / f"past-{k:02d}")
        past.append(inc)
    ports = {f"{name}_port": free_port() for name in ("prefect", "sqs", "tempo", "prometheus", "report")}
    state = stack_up(work / "stack", traces=work / "traces", openmetrics=main["openmetrics"], workers=2,
                     worker_limit=2, refresh_interval_s=20, **ports)
    try:
        yield state, json.loads(main["event"].read_text()), past, work
    finally:
        stopped = stack_down(work / "stack")
        assert "prefect-server" in stopped and "worker-2" in stopped


@contextmanager
def prefect_client(state):
    """A client of the stack's Prefect server (not the test process's default API)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: state["env"]["PREFECT_API_URL"]}), \
            get_client(sync_client=True) as client:
        yield client


def runs_of(client, flow_name):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), limit=200)


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_event_on_the_queue_runs_the_incident_deployment(stack):
    import boto3
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, \
        FlowRunFilterId

    state, event, _, _ = stack
    event_id = f"e2e-{uuid.uuid4().hex[:8]}"
    sqs = boto3.client("sqs", endpoint_url=state["urls"]["sqs"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    sent = sqs.send_message(QueueUrl=state["urls"]["queue"], MessageBody=json.dumps({**event, "id": event_id}))
    with prefect_client(state) as client:
        def finished():
            runs = [r for r in runs_of(client, "incident-rca") if event_id in json.dumps(r.parameters)]
            return runs if runs and all(r.state.is_final() for r in runs) else None

        runs = wait_for(finished, 180, "the incident run")
        assert len(runs) == 1 and runs[0].state.is_completed()
        run = runs[0]
        assert run.deployment_id is not None and run.idempotency_key == f"sqs-{sent['MessageId']}"
        def task_runs():  # task run records reach the API as events, a moment after the flow run ends
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            return tasks if STEPS <= {re.sub(r"-[0-9a-f]{3}$", "", t.name) for t in tasks} else None

        tasks = wait_for(task_runs, 60, "the incident's task runs")
        assert all(t.state.is_completed() for t in tasks)
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        assert {"rca-ranking-front-end", "rca-report-front-end"} <= {a.key for a in arts}
    summary = json.loads((state_dir(state) / "artifacts" / "incidents" / event_id / "ranking.json").read_text())
    assert summary["ranking"][0]["service"] == "payment"
    assert summary["prefect"]["flow_run_id"] == str(run.id)
    assert summary["prefect"]["ui_url"].startswith(state["urls"]["prefect"])
    screenshot(f"{state['urls']['prefect']}/runs/flow-run/{run.id}", "prefect-ui-incident-run.png",
               expect_text="incident-rca")
    screenshot(f"{state['urls']['report'].rsplit('/baynet', 1)[0]}/baynet/incidents/{event_id}",
               "stack-report-page.png", expect_text="payment")


def state_dir(state):
    from pathlib import Path

    return Path(state["dir"])


def screenshot(url, name, expect_text):
    from pathlib import Path

    chromium = "/usr/bin/chromium"
    require(Path(chromium).exists(), "Debian's chromium")
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url, wait_until="domcontentloaded", timeout=60000)
        page.wait_for_function(f"document.body.innerText.includes({json.dumps(expect_text)})", timeout=30000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / name), full_page=True)
        browser.close()


def test_scheduled_topology_refresh_fires_and_stores_only_changes(stack):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    state, _, _, _ = stack
    with prefect_client(state) as client:
        dep = client.read_deployment_by_name("topology-refresh/topology-refresh")
        assert dep.schedules[0].schedule.interval.total_seconds() == 20
        completed = lambda: [r for r in runs_of(client, "topology-refresh") if r.state.is_completed()]  # noqa: E731
        done = wait_for(lambda: completed()[1:] and completed(), 240, "two scheduled topology refreshes")
        assert all(r.deployment_id == dep.id and r.auto_scheduled for r in done)
        for sched in client.read_deployment_schedules(dep.id):  # quiet for the rest of the module
            client.update_deployment_schedule(dep.id, sched.id, active=False)
        with_diff = [r for r in done if any(a.key == "topology-diff-default" for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id]))))]
    from baynet.topology import Topology, diff_topology

    snapshots = sorted(p for p in (state_dir(state) / "artifacts" / "topology" / "default").glob("*.json")
                       if p.name != "latest.json")
    graphs = [Topology.from_json(json.loads(p.read_text())) for p in snapshots]
    assert graphs and all(not diff_topology(a, b).empty for a, b in zip(graphs, graphs[1:]))  # only changes kept
    assert len(with_diff) <= len(graphs)  # a diff artifact only from a run that stored a snapshot


def test_backfill_on_two_workers_resumes_after_a_crash(stack):
    state, _, past, work = stack
    events = work / "past-events.jsonl"
    events.write_text("".join(json.dumps(inc.event) + "\n" for inc in past))
    env = {**os.environ, **state["env"]}
    cmd = [sys.executable, "-m", "baynet.cli", "backfill", str(events), "--deployment", "incident-rca/incident-rca",
           "--concurrency", "4"]
    incidents = state_dir(state) / "artifacts" / "incidents"
    ids = [inc.event.get("id") for inc in past]
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def complete():
        return sum(1 for p in incidents.glob("*/_COMPLETE")) if incidents.is_dir() else 0

    before = complete()
    try:
        wait_for(lambda: complete() >= before + 3 or first.poll() is not None, 400, "three backfilled incidents")
        first.send_signal(signal.SIGKILL)  # the backfill itself crashes; its started runs go on on the workers
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    counts = json.loads(second.stdout.strip().splitlines()[-1])
    assert counts["skipped"] >= 3 and counts["skipped"] + counts["analysed"] == PAST and counts["failed"] == 0
    assert "backfill" in second.stderr and str(PAST) in second.stderr  # the progress bar
    with prefect_client(state) as client:
        runs = [r for r in runs_of(client, "incident-rca") if "backfill" in (r.tags or [])]
        assert len(runs) == PAST and all(r.state.is_completed() for r in runs)  # none started twice
        backfills = [r for r in runs_of(client, "backfill") if r.state.is_completed()]
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[backfills[0].id])))}
        assert {"backfill-summary", "backfill-progress"} <= keys
    logs = [(state_dir(state) / "logs" / f"worker-{i}.log").read_text() for i in (1, 2)]
    per_worker = [len(re.findall(r"submitting flow run", text)) for text in logs]
    assert all(n > 0 for n in per_worker), per_worker  # both workers took a share
    workers = [p["argv"] for p in state["processes"] if p["name"].startswith("worker-")]
    assert len(workers) == 2 and all(argv[argv.index("--limit") + 1] == "2" for argv in workers)
    third = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert json.loads(third.stdout.strip().splitlines()[-1])["skipped"] == PAST  # nothing left to do
