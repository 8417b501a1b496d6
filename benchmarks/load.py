"""Load through ``baynet listen``: a flooded queue, bursts of the same incident, a few bad messages.

    python benchmarks/load.py [--json] [--events 500] [--concurrency 4] [--baseline-events 60]

Starts the local stack (moto SQS/S3 server, Tempo-compatible server, Prometheus when installed) on
127.0.0.1 with one generated sock-shop incident, puts ``--events`` messages on the queue — distinct
incidents, each re-sent in a burst of 1-5 copies as a re-firing detector does, and one malformed message
in fifty — then runs ``baynet listen --concurrency N`` as its own process until the queue is drained.
In the same run, the baseline: the first ``--baseline-events`` of the same messages through one analysis
at a time. Figures: events handled per minute, duplicates collapsed, what reached the DLQ (and whether
it should have), events lost (a valid incident with no complete artifacts, or a message left behind),
peak RSS of the consumer process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baynet.lab.generator import generate, write_incident  # noqa: E402
from baynet.local.stack import LocalStack, PrefectServer  # noqa: E402


def messages(event: dict, n: int, tag: str) -> tuple[list[str], set[str], int]:
    """``n`` bodies: bursts of the same incident id (1-5 copies) and a malformed one in fifty."""
    bodies: list[str] = []
    unique: set[str] = set()
    bad = 0
    i = 0
    while len(bodies) < n:
        i += 1
        if i % 50 == 0:
            bodies.append(json.dumps({"service": "carts", "event_type": "latency", "timestamp": "not a time"}))
            bad += 1
            continue
        event_id = f"{tag}-{i:04d}"
        unique.add(event_id)
        for _ in range(min(1 + i % 5, n - len(bodies))):
            bodies.append(json.dumps({**event, "id": event_id}))
    return bodies, unique, bad


def drain_count(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def dlq_bodies(sqs, url: str) -> list[str]:
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def run_listen(stack: LocalStack, prefect: PrefectServer, event: dict, n: int, concurrency: int, tag: str
               ) -> dict:
    bodies, unique, bad = messages(event, n, tag)
    for start in range(0, len(bodies), 10):
        stack.sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=[
            {"Id": str(k), "MessageBody": b} for k, b in enumerate(bodies[start:start + 10])])
    env = {**os.environ, **stack.env, "BAYNET_SQS_WAIT_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_API_URL": prefect.api_url}
    out_file, err_file = stack.workdir / f"{tag}.out", stack.workdir / f"{tag}.err"
    t0 = time.monotonic()
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "baynet.cli", "listen", "--concurrency", str(concurrency),
                                 "--idle-polls", "3", "--retry-after", "5"], env=env, cwd=ROOT, stdout=out,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"baynet listen failed ({status}):\n{err_file.read_text()[-3000:]}")
    peak_kb = usage.ru_maxrss
    counts = json.loads(out_file.read_text().strip().splitlines()[-1])
    dead = dlq_bodies(stack.sqs, stack.dlq_url)
    dead_valid = sum(1 for b in dead if _valid(b))
    artifacts = Path(stack.env["BAYNET_ARTIFACTS_DIR"]) / "incidents"
    complete = {e for e in unique if (artifacts / e / "_COMPLETE").exists()}
    left = drain_count(stack.sqs, stack.queue_url)
    return {"events": len(bodies), "unique_incidents": len(unique), "analysed": counts.get("analysed", 0),
            "duplicates_collapsed": counts.get("duplicate", 0), "dlq": len(dead), "dlq_expected": bad,
            "dlq_unexpected": dead_valid, "failed_attempts": counts.get("failed", 0),
            "lost": len(unique - complete) + left, "left_on_queue": left, "concurrency": concurrency,
            "seconds": round(took, 1), "events_per_min": round(len(bodies) / took * 60, 1),
            "analyses_per_min": round(counts.get("analysed", 0) / took * 60, 1),
            "peak_mb": round(peak_kb / 1024, 1)}


def _valid(body: str) -> bool:
    from baynet.events import EventError, parse_message

    try:
        parse_message(body)
        return True
    except EventError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=500, help="messages on the queue (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="analyses at once (default 4)")
    parser.add_argument("--baseline-events", type=int, default=60,
                        help="messages for the one-at-a-time baseline in the same run (0 to skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="baynet-load-") as tmp:
        work = Path(tmp)
        incident = generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900,
                            after_s=300, rate_per_s=1.0)
        paths = write_incident(incident, work / "incident")
        event = json.loads(paths["event"].read_text())
        prefect = PrefectServer(work).start()
        try:
            with LocalStack(work, traces=paths["traces"], openmetrics=paths["openmetrics"], visibility_s=120) as stack:
                out: dict = {}
                if args.baseline_events:
                    base = run_listen(stack, prefect, event, args.baseline_events, 1, f"base-{uuid.uuid4().hex[:6]}")
                    out["baseline"] = base
                    print(f"baseline: {base}", file=sys.stderr)
                main_run = run_listen(stack, prefect, event, args.events, args.concurrency,
                                      f"load-{uuid.uuid4().hex[:6]}")
        finally:
            prefect.stop()
    out = {**main_run, **out}
    if args.baseline_events:
        out["speedup_vs_one_at_a_time"] = round(main_run["analyses_per_min"] /
                                                max(out["baseline"]["analyses_per_min"], 1e-9), 2)
    if args.json:
        print(json.dumps(out))
    else:
        for key, val in out.items():
            print(f"{key:>26}: {val}")


if __name__ == "__main__":
    main()
