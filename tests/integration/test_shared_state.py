"""Shared state in the artifact store, on moto's real S3 server (HTTP) and on a local directory:
conditional writes, the model's update log, snapshots and claims under concurrent writers."""

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from baynet.analysis.topology import diff_and_snapshot
from baynet.artifacts import LocalStore, S3Store
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.state import Claims, ModelLog, SnapshotStore, apply_update, update_record
from baynet.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, moto_server):
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    s3 = moto_server.client("s3")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    return S3Store(bucket, "baynet", client=s3)


def test_conditional_writes_refuse_the_second_writer(store):
    first = store.put_if("k.json", b"one", None)
    assert first is not None
    assert store.put_if("k.json", b"two", None) is None  # create-only: it exists
    data, etag = store.get_versioned("k.json")
    assert data == b"one" and etag == first
    second = store.put_if("k.json", b"two", etag)
    assert second is not None and second != first
    assert store.put_if("k.json", b"three", etag) is None  # stale etag: refused, nothing written
    assert store.get("k.json") == b"two"
    assert store.put_if("missing.json", b"x", second) is None
    store.delete("k.json")
    assert store.get_versioned("k.json") == (None, None)


def _incident(i: int, t0: datetime, rng: random.Random) -> tuple:
    """One incident's event, topology and per-edge counts (different per incident, so order matters)."""
    (event,) = parse_object({"id": f"ev-{i:03d}", "service": "front", "event_type": "latency",
                             "timestamp": (t0 + timedelta(minutes=rng.randint(0, 500), seconds=i)).isoformat()})
    topo = Topology("ns", "test")
    for a, c in (("front", "cart"), ("front", "user"), ("cart", "db")) + ((("user", "db"),) if i % 3 else ()):
        topo.add_edge(a, c, 1.0, 0.0)
    edges = pd.DataFrame([{"caller": a, "callee": c, "calls": 10, "child_bad": rng.randint(0, 20),
                           "both_bad": 0} for a, c in topo.edges])
    edges["both_bad"] = [rng.randint(0, int(n)) for n in edges["child_bad"]]
    return event, topo, edges


def _close(a: DBNModel, b: DBNModel) -> bool:
    ja, jb = a.to_json(), b.to_json()
    if {k: v for k, v in ja.items() if k != "edge_counts"} != {k: v for k, v in jb.items() if k != "edge_counts"}:
        return False
    return ja["edge_counts"].keys() == jb["edge_counts"].keys() and all(
        np.allclose(ja["edge_counts"][k], jb["edge_counts"][k], rtol=0, atol=1e-9) for k in ja["edge_counts"])


def test_model_is_the_event_time_fold_whatever_the_writers_and_their_order(store):
    rng = random.Random(3)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    incidents = [_incident(i, t0, rng) for i in range(40)]
    # the reference: one analysis at a time, in event-time order
    reference = DBNModel()
    for event, topo, edges in sorted(incidents, key=lambda x: (x[0].timestamp, x[0].id)):
        apply_update(reference, update_record(topo, edges))
    # eight writers at once, arrival order shuffled, each reading (and caching) the model as it goes,
    # plus a duplicate of every fourth incident
    work = incidents + incidents[::4]
    random.Random(5).shuffle(work)
    recorded: list[bool] = []
    lock = threading.Lock()

    def writer(items: list) -> None:
        log = ModelLog(store, "ns")
        for event, topo, edges in items:
            log.current()
            ok = log.record(event, topo, edges)
            with lock:
                recorded.append(ok)

    threads = [threading.Thread(target=writer, args=(work[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorded.count(True) == 40 and recorded.count(False) == 10  # duplicates add nothing
    model = ModelLog(store, "ns").current()
    assert model.updates == 40 and _close(model, reference)
    # arrival order matters without the log: folding in arrival order gives another model
    arrival = DBNModel()
    for event, topo, edges in work:
        apply_update(arrival, update_record(topo, edges))
    assert not _close(arrival, reference)
    # an incident that finishes late (older than the cached fold) is folded in its place
    late = _incident(99, t0 - timedelta(days=1), rng)
    assert ModelLog(store, "ns").record(*late)
    again = DBNModel()
    for event, topo, edges in sorted(incidents + [late], key=lambda x: (x[0].timestamp, x[0].id)):
        apply_update(again, update_record(topo, edges))
    assert _close(ModelLog(store, "ns").current(), again)
    cache = json.loads(store.get("model/ns/latest.json"))
    assert cache["log"]["folded"] == 41


def test_a_model_from_before_the_log_becomes_its_base(store):
    old = DBNModel()
    old.update_structure({"a", "b"}, {("a", "b")})
    old.update_parameters([{"caller": "a", "callee": "b", "child_bad": 5, "both_bad": 5}])
    store.put_json("model/ns/latest.json", old.to_json())
    rng = random.Random(1)
    event, topo, edges = _incident(1, datetime(2026, 5, 1, tzinfo=UTC), rng)
    log = ModelLog(store, "ns")
    assert _close(log.current(), old)
    log.record(event, topo, edges)
    expected = DBNModel.from_json(old.to_json())
    apply_update(expected, update_record(topo, edges))
    assert _close(log.current(), expected) and log.current().updates == 2


def test_snapshots_one_writer_wins_and_history_keeps_only_changes(store):
    graph = Topology("ns", "t")
    graph.add_edge("a", "b", 10, 0.0)
    snaps = SnapshotStore(store)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(diff_and_snapshot(graph, SnapshotStore(store))[1]))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    moved = Topology("ns", "t")
    moved.add_edge("a", "b", 30, 0.0)
    assert diff_and_snapshot(moved, snaps, store_changes=False)[1] is False
    assert diff_and_snapshot(moved, snaps)[1] is True
    assert len(snaps.history("ns")) == 2
    assert snaps.latest("ns").edges[("a", "b")].rate == 30


def test_claims_one_holder_expiry_takeover_and_release(store):
    claims = Claims(store, ttl_s=0.5)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(claims.acquire("e1"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [lease for lease in got if lease is not None]
    assert len(held) == 1
    assert held[0].renew()
    time.sleep(0.6)  # the holder died (no renewal): the lease expires and another consumer takes over
    taker = claims.acquire("e1")
    assert taker is not None and taker.owner != held[0].owner
    assert held[0].renew() is False  # the old holder learns it lost the claim
    held[0].release()  # and does not delete the new holder's claim
    assert claims.acquire("e1") is None
    taker.release()
    assert claims.acquire("e1") is not None
