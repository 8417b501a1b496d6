import json

import pytest

from baynet.artifacts import LocalStore
from baynet.state import SnapshotStore
from baynet.topology import (
    Topology,
    TopologyError,
    diff_topology,
    topology_from_kiali,
    topology_from_prometheus_result,
)
from tests.conftest import CONTRACTS

KIALI = sorted((CONTRACTS / "kiali").glob("test_*_graph.json"))


@pytest.mark.parametrize("path", KIALI, ids=lambda p: p.name)
def test_every_kiali_body_reads(path):
    topo = topology_from_kiali(json.loads(path.read_text()))
    assert topo.services and all(a != b for a, b in topo.edges)
    for e in topo.edges.values():
        assert e.rate >= 0 and 0 <= e.error_rate <= 1


def test_kiali_app_graph_details():
    topo = topology_from_kiali(json.loads((CONTRACTS / "kiali/test_app_graph.json").read_text()))
    assert ("productpage", "reviews") in topo.edges and ("reviews", "ratings") in topo.edges
    assert topo.edges[("productpage", "reviews")].rate > 0
    assert any(e.error_rate > 0 for e in topo.edges.values())


def test_not_kiali():
    with pytest.raises(TopologyError, match="not a Kiali graph"):
        topology_from_kiali({"nodes": []})


def series(src, dst, code, value, grpc=""):
    return {"metric": {"source_canonical_service": src, "destination_canonical_service": dst,
                       "response_code": code, "grpc_response_status": grpc, "response_flags": "-"},
            "value": [1, str(value)]}


def test_prometheus_vector_to_edges():
    topo = topology_from_prometheus_result([
        series("front", "carts", "200", 9.0), series("front", "carts", "503", 1.0),
        series("carts", "db", "200", 5.0, grpc="14"), series("unknown", "front", "200", 3.0)], "ns")
    assert set(topo.edges) == {("front", "carts"), ("carts", "db")}
    assert topo.edges[("front", "carts")].rate == pytest.approx(10.0)
    assert topo.edges[("front", "carts")].error_rate == pytest.approx(0.1)
    assert topo.edges[("carts", "db")].error_rate == pytest.approx(1.0)  # gRPC UNAVAILABLE


def test_diff_and_snapshots(tmp_path):
    old = Topology("ns", "t")
    old.add_edge("a", "b", 10, 0.0)
    old.add_edge("a", "c", 5, 0.0)
    new = Topology("ns", "t")
    new.add_edge("a", "b", 20, 0.05)
    new.add_edge("a", "d", 1, 0.0)
    d = diff_topology(old, new)
    assert d.services_added == ["d"] and d.services_removed == ["c"]
    assert d.edges_added == [("a", "d")] and d.edges_removed == [("a", "c")]
    assert d.rate_changed[0]["after"] == 20 and d.error_changed[0]["after"] == 0.05
    assert "`a` → `d`" in d.to_markdown()
    assert diff_topology(new, new).empty
    snaps = SnapshotStore(LocalStore(tmp_path))
    assert snaps.latest("ns") is None
    assert snaps.save_if(new, None) is not None
    again = snaps.latest("ns")
    assert set(again.edges) == set(new.edges) and diff_topology(again, new).empty
    assert new.downstream("a", 1) == {"a", "b", "d"}


def test_snapshot_stored_only_on_change_and_never_twice_at_once(tmp_path):
    import threading

    from baynet.analysis.topology import diff_and_snapshot

    graph = Topology("ns", "t")
    graph.add_edge("a", "b", 10, 0.0)
    snaps = SnapshotStore(LocalStore(tmp_path))
    results = []
    threads = [threading.Thread(target=lambda: results.append(diff_and_snapshot(graph, snaps)[1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]  # four refreshes at once: one snapshot
    assert diff_and_snapshot(graph, snaps) == (diff_and_snapshot(graph, snaps)[0], False)  # unchanged
    moved = Topology("ns", "t")
    moved.add_edge("a", "b", 30, 0.0)  # rate x3
    assert diff_and_snapshot(moved, snaps, store_changes=False)[1] is False  # an incident only diffs
    assert diff_and_snapshot(moved, snaps)[1] is True  # the refresh stores the change
    assert len([p for p in (tmp_path / "topology" / "ns").glob("*.json") if p.name != "latest.json"]) == 2
