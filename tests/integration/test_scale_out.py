"""Scale-out: three ``baynet listen`` processes (own empty working directory and Prefect home each, as on
three hosts) share one moto S3 + SQS. Sixty distinct incidents plus duplicates, arriving shuffled: every
incident is analysed exactly once, the stored model counts sixty updates and equals the model of one
listener analysing the same incidents one at a time in event-time order; one snapshot history; nothing
left on the queue or lost."""

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from baynet.artifacts import S3Store
from baynet.dbn import DBNModel
from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack
from baynet.state import ModelLog, SnapshotStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
N = 60


def _listen(stack: LocalStack, workdir: Path, bucket: str, prefix: str, concurrency: int) -> subprocess.Popen:
    workdir.mkdir(parents=True)
    env = {**os.environ, **stack.env, "BAYNET_S3_BUCKET": bucket, "BAYNET_S3_PREFIX": prefix,
           "BAYNET_ARTIFACTS_DIR": str(workdir / "artifacts"), "BAYNET_SQS_WAIT_SECONDS": "1",
           "PREFECT_HOME": str(workdir / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "baynet.cli", "listen", "--concurrency", str(concurrency),
                             "--idle-polls", "4", "--retry-after", "5"], env=env, cwd=workdir,
                            stdout=open(workdir / "out.txt", "w"), stderr=open(workdir / "err.txt", "w"))


def _run(stack: LocalStack, work: Path, bodies: list[str], listeners: int, concurrency: int, bucket: str,
         prefix: str) -> dict[str, int]:
    for start in range(0, len(bodies), 10):
        stack.sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=[
            {"Id": str(k), "MessageBody": b} for k, b in enumerate(bodies[start:start + 10])])
    procs = [_listen(stack, work / f"{prefix}-host{i}", bucket, prefix, concurrency) for i in range(listeners)]
    counts: dict[str, int] = {}
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=1500) == 0, (work / f"{prefix}-host{i}" / "err.txt").read_text()[-3000:]
        for key, n in json.loads((work / f"{prefix}-host{i}" / "out.txt").read_text().splitlines()[-1]).items():
            counts[key] = counts.get(key, 0) + n
    return counts


def _same(a: DBNModel, b: DBNModel) -> bool:
    ja, jb = a.to_json(), b.to_json()
    rest = lambda j: {k: v for k, v in j.items() if k != "edge_counts"}  # noqa: E731
    return rest(ja) == rest(jb) and ja["edge_counts"].keys() == jb["edge_counts"].keys() and all(
        np.allclose(ja["edge_counts"][k], jb["edge_counts"][k], rtol=0, atol=1e-9) for k in ja["edge_counts"])


def test_three_listeners_analyse_each_incident_once_and_agree_with_one(tmp_path):
    # One long stretch of traffic; sixty events 30 s apart, so each incident's windows (and counts) differ.
    start = time.time() - 3 * 3600
    incident = generate("sock-shop", "carts", "gray", fault_start=start + 2400, before_s=1200, after_s=1800,
                        rate_per_s=1.0, seed=5)
    paths = write_incident(incident, tmp_path / "incident")
    events = [{**incident.event, "id": f"inc-{i:02d}", "timestamp": start + 1260 + 30 * i} for i in range(N)]
    bodies = [json.dumps(e) for e in events] + [json.dumps(events[i]) for i in range(0, N, 3)]  # + 20 duplicates
    random.Random(11).shuffle(bodies)
    with LocalStack(tmp_path, traces=paths["traces"], openmetrics=paths["openmetrics"], visibility_s=120) as stack:
        s3 = stack.moto.client("s3")
        bucket = f"baynet-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        scaled = _run(stack, tmp_path, bodies, listeners=3, concurrency=4, bucket=bucket, prefix="scaled")
        assert stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessages"] == "0"
        # the reference: one listener, one analysis at a time, messages in event-time order (no duplicates)
        single = _run(stack, tmp_path, [json.dumps(e) for e in events], listeners=1, concurrency=1, bucket=bucket,
                      prefix="single")
        left = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
        dead = stack.sqs.receive_message(QueueUrl=stack.dlq_url, WaitTimeSeconds=0).get("Messages", [])
        scaled_store, single_store = S3Store(bucket, "scaled", client=s3), S3Store(bucket, "single", client=s3)
        assert scaled.get("analysed", 0) == N, scaled  # each incident analysed exactly once over three hosts
        assert scaled.get("duplicate", 0) == len(bodies) - N and not scaled.get("failed"), scaled
        assert single == {"analysed": N}, single
        assert left["ApproximateNumberOfMessages"] == "0" and left["ApproximateNumberOfMessagesNotVisible"] == "0"
        assert dead == []
        assert sorted(scaled_store.list_incidents()) == sorted(e["id"] for e in events)  # nothing lost
        assert len(ModelLog(scaled_store, "default").keys()) == N
        scaled_model = ModelLog(scaled_store, "default").current()
        single_model = ModelLog(single_store, "default").current()
        assert scaled_model.updates == N == single_model.updates
        assert _same(scaled_model, single_model)
        assert len(SnapshotStore(scaled_store).history("default")) == 1  # one history, not one per host
        assert scaled_store.list_keys("claims/") == []
        # no host kept state of its own: nothing but logs and the Prefect home in the working directories
        for host in tmp_path.glob("scaled-host*"):
            assert not (host / "artifacts").exists(), host
