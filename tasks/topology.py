"""Step 3: read the live Istio service graph, diff it with the stored snapshot."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from baynet.analysis.topology import diff_and_snapshot, read_topology
from baynet.artifacts import make_store
from baynet.settings import Settings
from baynet.state import SnapshotStore
from baynet.topology import Topology, TopologyDiff
from tasks.validate import validated
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER, retry_unless_rejected

log = logging.getLogger(__name__)


def _validate_edges(topo: Topology) -> None:
    frame = pd.DataFrame([vars(e) for e in topo.edges.values()], columns=["caller", "callee", "rate", "error_rate"])
    validated("topology_edges", frame)


@task(name="read-topology", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, retry_condition_fn=retry_unless_rejected, cache_policy=NO_CACHE)
def read_live_topology(settings: Settings, at: float | None = None) -> Topology | None:
    topo = read_topology(settings, at)
    if topo is not None:
        _validate_edges(topo)
    return topo


@task(name="diff-topology", cache_policy=NO_CACHE)
def diff_with_snapshot(live: Topology | None, settings: Settings, store_changes: bool = True
                       ) -> tuple[Topology | None, TopologyDiff, bool]:
    """Diff the live graph with the last snapshot (stored when changed, or with ``store_changes=False``
    only when there is none yet). With no live graph, the last snapshot stands in for it (None when
    there is none either: the analysis then has only the call edges its data shows)."""
    snapshots = SnapshotStore(make_store(settings))
    if live is None:
        previous = snapshots.latest(settings.namespace)
        if previous is None:
            log.warning("no topology source configured and no snapshot: call edges from the data only")
            return None, TopologyDiff([], [], [], [], [], []), False
        age = datetime.now(UTC) - datetime.fromisoformat(previous.taken_at)
        log.warning("no live topology: using the snapshot taken at %s (%.0f s old)", previous.taken_at,
                    age.total_seconds())
        live = previous
    diff, stored = diff_and_snapshot(live, snapshots, store_changes=store_changes)
    _validate_edges(live)
    return live, diff, stored
