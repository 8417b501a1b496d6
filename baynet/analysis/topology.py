"""Step 3: the service graph -- read live (Prometheus or a Kiali body), diffed against the stored snapshot,
and completed with the call edges the incident's own data shows."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from baynet.artifacts import make_store
from baynet.evidence.base import Judged
from baynet.prometheus import PrometheusClient
from baynet.settings import Settings
from baynet.state import CAS_ATTEMPTS, SnapshotStore
from baynet.topology import (
    Topology,
    TopologyDiff,
    diff_topology,
    topology_from_edges,
    topology_from_kiali,
    topology_from_prometheus,
)


def read_topology(settings: Settings, at: float | None = None) -> Topology | None:
    """The live graph from Prometheus or a Kiali body, whichever is configured; ``None`` if neither."""
    if settings.prometheus_url:
        with PrometheusClient.from_settings(settings) as prometheus:
            return topology_from_prometheus(prometheus, settings.namespace, settings.topology_window_s, at)
    if settings.kiali_graph_file:
        return topology_from_kiali(json.loads(Path(settings.kiali_graph_file).read_text()), settings.namespace)
    return None


def trace_topology(edges: pd.DataFrame, namespace: str, window_s: float) -> Topology:
    """The call edges seen in spans, with their rates over ``window_s``."""
    rows = [(r.caller, r.callee, r.calls / max(window_s, 1e-9), 0.0) for r in edges.itertuples()]
    return topology_from_edges(rows, namespace, "traces")


def incident_topology(given: Topology | None, judged: list[Judged], services: set[str], namespace: str,
                      window_s: float) -> Topology:
    """The graph the model is built on: ``given`` (the live graph, a snapshot, a bundle's
    ``topology.csv``), with the call edges seen in the traces; where nothing gives an edge, the edges the
    signals name. With any edge known, every service with evidence is a node (the blast radius is then
    read from the graph); with none, the blast radius is every service with evidence."""
    topology = given if given is not None else Topology(namespace, "none")
    by_kind = {j.kind: j for j in judged}
    traces = by_kind.get("traces")
    if traces is not None and traces.edges is not None and len(traces.edges):
        topology = topology.merged(trace_topology(traces.edges, namespace, window_s))
    if not (given is not None and given.edges) and "metrics" in by_kind:
        for a, b in sorted(by_kind["metrics"].call_edges):
            if (a, b) not in topology.edges:
                topology.add_edge(a, b, 0.0, 0.0)
    if topology.edges:
        topology.services |= services
    return topology


def snapshot_age(settings: Settings, now: float | None = None) -> str:
    """Which stored snapshot stands in for the live graph, and how old it is (for the run's report)."""
    previous = SnapshotStore(make_store(settings)).latest(settings.namespace)
    if previous is None:
        return "no stored snapshot either: call edges from traces only"
    taken = datetime.fromisoformat(previous.taken_at)
    age = (now if now is not None else time.time()) - taken.timestamp()
    return f"last stored snapshot used, taken at {previous.taken_at} ({age:.0f} s old)"


def diff_and_snapshot(live: Topology, snapshots: SnapshotStore, *, store_changes: bool = True
                      ) -> tuple[TopologyDiff, bool]:
    """Diff ``live`` against the last snapshot; store it when the graph changed (or, with
    ``store_changes=False``, only when there is no snapshot yet). Returns (diff, stored).

    Read, diff and store are one compare-and-swap on the latest snapshot: when another writer (a refresh
    on another host) stored one in between, read it again and diff against that."""
    for _ in range(CAS_ATTEMPTS):
        previous, etag = snapshots.latest_versioned(live.namespace)
        diff = diff_topology(previous, live)
        if not (previous is None or (store_changes and not diff.empty)):
            return diff, False
        if snapshots.save_if(live, etag) is not None:
            return diff, True
    raise RuntimeError(f"topology snapshot of {live.namespace!r}: {CAS_ATTEMPTS} writers in a row got there first")
