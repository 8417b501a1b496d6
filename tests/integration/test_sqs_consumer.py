"""The consumer against moto's real SQS server (HTTP on 127.0.0.1)."""

import json
import threading
import time
import uuid

import pytest

from baynet.sqs import Consumer, create_queues

pytestmark = pytest.mark.integration

VALID = json.dumps({"service": "carts", "event_type": "latency", "timestamp": time.time() - 60})


@pytest.fixture
def queues(moto_server):
    sqs = moto_server.client("sqs")
    url, dlq = create_queues(sqs, f"q-{uuid.uuid4().hex[:8]}", max_receive_count=2, visibility_timeout=30)
    return sqs, url, dlq


def drain(sqs, url, wait=0):
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                                   MessageAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            return out
        out += msgs
        for m in msgs:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_round_trip_and_delete_after_success(queues):
    sqs, url, dlq = queues
    seen = []
    sqs.send_message(QueueUrl=url, MessageBody=VALID)
    consumer = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=1)
    outcomes = consumer.run(max_messages=1)
    assert [o.result for o in outcomes] == ["analysed"] and seen[0].service == "carts"
    assert drain(sqs, url) == [] and drain(sqs, dlq) == []


def test_malformed_messages_go_to_dlq_with_reason_and_valid_one_is_analysed(queues, caplog):
    sqs, url, dlq = queues
    bad = ["{broken", json.dumps({"service": "carts"}), json.dumps({"service": "<x>", "event_type": "a",
                                                                     "timestamp": 1.7e9}),
           json.dumps({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}), json.dumps([1, 2, 3])]
    for body in bad + [VALID]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    seen = []
    consumer = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=1)
    with caplog.at_level("WARNING", logger="baynet.sqs"):
        outcomes = consumer.run(max_messages=6)
    assert sorted(o.result for o in outcomes) == ["analysed"] + ["dead-lettered"] * 5
    assert len(seen) == 1
    dead = drain(sqs, dlq)
    assert sorted(m["Body"] for m in dead) == sorted(bad)
    reasons = [m["MessageAttributes"]["baynet-reason"]["StringValue"] for m in dead]
    assert all("field" in r for r in reasons)
    assert sum("moved to the dead-letter queue" in r.message for r in caplog.records) == 5
    assert drain(sqs, url) == []


def test_failed_analysis_returns_then_redrives_to_dlq(queues):
    sqs, url, dlq = queues
    sqs.send_message(QueueUrl=url, MessageBody=VALID)
    attempts = []

    def broken(event):
        attempts.append(event.id)
        raise RuntimeError("Tempo down")

    consumer = Consumer(sqs, url, broken, dlq_url=dlq, wait_s=1, retry_after_s=1)
    consumer.run(idle_polls=3)
    assert len(attempts) == 2  # maxReceiveCount=2, then the RedrivePolicy takes it
    dead = drain(sqs, dlq, wait=1)
    assert [m["Body"] for m in dead] == [VALID]


def test_same_event_twice_is_analysed_once(queues):
    sqs, url, dlq = queues
    sqs.send_message(QueueUrl=url, MessageBody=VALID)
    sqs.send_message(QueueUrl=url, MessageBody=VALID)
    seen = []
    consumer = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=1)
    outcomes = consumer.run(max_messages=2)
    assert sorted(o.result for o in outcomes) == ["analysed", "duplicate"] and len(seen) == 1
    assert drain(sqs, url) == []


def test_long_analysis_keeps_message_invisible(queues):
    sqs, url, dlq = queues
    sqs.send_message(QueueUrl=url, MessageBody=VALID)
    stolen = []

    def slow(event):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # another consumer polls meanwhile
            stolen.extend(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []))

    consumer = Consumer(sqs, url, slow, dlq_url=dlq, wait_s=1, visibility_s=2)
    outcomes = consumer.run(max_messages=1)
    assert outcomes[0].result == "analysed" and stolen == []


def test_concurrent_analyses_collapse_bursts_of_the_same_event(queues):
    sqs, url, dlq = queues
    body = json.loads(VALID)
    ids = [f"burst-{i}" for i in range(8)]
    for i, event_id in enumerate(ids):  # bursts: the detector re-fires the same incident 1-3 times
        for _ in range(1 + i % 3):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**body, "id": event_id}))
    sqs.send_message(QueueUrl=url, MessageBody="{broken")
    lock, running, peak, analysed = threading.Lock(), [0], [0], []

    def handler(event):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.4)
        with lock:
            running[0] -= 1
            analysed.append(event.id)

    consumer = Consumer(sqs, url, handler, dlq_url=dlq, wait_s=1, visibility_s=30, concurrency=3)
    outcomes = consumer.run(idle_polls=2)
    results = [o.result for o in outcomes]
    assert sorted(analysed) == sorted(ids)  # each incident once
    sent = sum(1 + i % 3 for i in range(8))
    assert results.count("analysed") == 8 and results.count("duplicate") == sent - 8
    assert results.count("dead-lettered") == 1 and len(drain(sqs, dlq)) == 1
    assert peak[0] == 3  # three at once, never more
    assert drain(sqs, url) == []


def test_hostile_corpus_ends_in_the_dlq_with_reasons_and_a_valid_event_still_runs(queues):
    """Every message of the hostile corpus that SQS itself accepts goes to the DLQ with a reason; the
    consumer keeps running and analyses the valid message sent after them."""
    from botocore.exceptions import ClientError

    from tests.unit.test_hostile_input import CORPUS

    sqs, url, dlq = queues
    sent, refused_by_sqs = 0, 0
    for body in CORPUS:
        try:
            sqs.send_message(QueueUrl=url, MessageBody=body)
            sent += 1
        except ClientError:  # empty, over 256 KiB or with characters SQS does not allow: never delivered
            refused_by_sqs += 1
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({**json.loads(VALID), "id": "after-the-storm"}))
    analysed = []
    consumer = Consumer(sqs, url, lambda e: analysed.append(e.id), dlq_url=dlq, wait_s=1, concurrency=2)
    outcomes = consumer.run(idle_polls=2)
    dead = drain(sqs, dlq)
    assert sent >= 50 and analysed == ["after-the-storm"]
    assert sum(o.result == "dead-lettered" for o in outcomes) == sent == len(dead)
    assert all(m["MessageAttributes"]["baynet-reason"]["StringValue"].strip() for m in dead)
    assert drain(sqs, url) == []


def test_detector_events_hand_off_firing_once_resent_as_duplicate_resolved_acknowledged(queues, tmp_path):
    """The detector's send task against moto: a re-run over the same windows sends nothing new; the
    same events sent again are duplicates; the resolved event is acknowledged without an analysis."""
    import numpy as np

    from baynet.artifacts import LocalStore
    from baynet.detector.emit import ServiceScores, send_events

    sqs, url, dlq = queues
    store = LocalStore(tmp_path)

    class Model:
        threshold, version = 0.5, "test-model"

    times = time.time() - 3600 + 60 * np.arange(10)
    flags = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0], float)
    scores = [ServiceScores("visits-service", times, flags * 0.9, ["lat_p99"] * 10)]
    sent = send_events(store, Model(), scores, namespace="petclinic", not_before=times[0], clear_windows=3, sqs=sqs,
                       queue_url=url)
    assert [e["data"]["status"] for e in sent] == ["firing", "resolved"]
    assert send_events(store, Model(), scores, namespace="petclinic", not_before=times[0], clear_windows=3, sqs=sqs,
                       queue_url=url) == []  # the state remembers what was seen
    drain_first = drain(sqs, url)
    assert [json.loads(m["Body"])["id"] for m in drain_first] == [e["id"] for e in sent]
    for ev in sent + sent:  # as delivered, and again by a detector restarted without its state
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(ev))
    seen = []
    consumer = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=1)
    outcomes = consumer.run(max_messages=4)
    assert sorted(o.result for o in outcomes) == ["analysed", "duplicate", "resolved", "resolved"]
    assert len(seen) == 1 and seen[0].service == "visits-service" and seen[0].event_type == "latency"
    assert seen[0].namespace == "petclinic" and seen[0].labels["model_version"] == "test-model"
    assert drain(sqs, url) == [] and drain(sqs, dlq) == []


def test_two_consumers_on_two_hosts_analyse_a_duplicated_event_once(queues, tmp_path):
    """Two consumers (own in-process state, as on two hosts) share only the artifact store: the lease
    on the event makes the second copy a duplicate while the first is analysed; nothing stays queued."""
    from baynet.artifacts import LocalStore
    from baynet.state import Claims

    sqs, url, dlq = queues
    store = LocalStore(tmp_path / "artifacts")
    body = json.dumps({"id": "inc-1", "service": "carts", "event_type": "latency", "timestamp": time.time() - 60})
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    started, analysed = threading.Event(), []

    def handler(event):
        started.set()
        time.sleep(1.5)  # the other consumer receives its copy meanwhile
        analysed.append(event.id)
        store.put(f"incidents/{event.id}/_COMPLETE", "done")

    consumers = [Consumer(sqs, url, handler, dlq_url=dlq, wait_s=1, is_done=store.incident_complete,
                          claim=Claims(store, ttl_s=30).acquire) for _ in range(2)]
    results: list = []
    threads = [threading.Thread(target=lambda c=c: results.extend(c.run(max_messages=1, idle_polls=2)))
               for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert analysed == ["inc-1"]
    assert sorted(o.result for o in results) == ["analysed", "duplicate"]
    assert drain(sqs, url) == [] and drain(sqs, dlq) == []
    assert store.list_keys("claims/") == []  # released once done


def test_an_event_whose_data_has_not_settled_waits_on_the_queue_not_in_the_consumer(queues):
    """BAYNET_SETTLE_S: an event that arrives before alert + settle goes back on the queue, invisible for the
    time left (nothing is held meanwhile), and is analysed when it comes back."""
    sqs, url, dlq = queues
    at = time.time()
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"service": "carts", "event_type": "latency",
                                                           "timestamp": at}))
    seen = []
    consumer = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=1, ready_at=lambda e: e.unix + 3)
    first = consumer.run(max_messages=1)
    assert [o.result for o in first] == ["deferred"] and seen == []
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None  # hidden meanwhile
    time.sleep(max(0.0, at + 3.5 - time.time()))
    again = Consumer(sqs, url, seen.append, dlq_url=dlq, wait_s=2, ready_at=lambda e: e.unix + 3).run(max_messages=1)
    assert [o.result for o in again] == ["analysed"] and len(seen) == 1
