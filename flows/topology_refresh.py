"""Scheduled topology refresh: keep the Istio service-graph snapshot fresh between incidents."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from baynet.settings import Settings
from tasks.store import artifact_key
from tasks.topology import diff_with_snapshot, read_live_topology


@flow(name="topology-refresh", log_prints=True)
def topology_refresh() -> dict[str, Any]:
    """Read the live graph; store a new snapshot only when it changed, and publish the diff."""
    settings = Settings()
    logger = get_run_logger()
    live = read_live_topology(settings)
    if live is None:
        raise ValueError("no topology source configured: set BAYNET_PROMETHEUS_URL or BAYNET_KIALI_GRAPH_FILE")
    _, diff, stored = diff_with_snapshot(live, settings)
    if stored:
        create_markdown_artifact(key=artifact_key("topology-diff", settings.namespace), markdown=diff.to_markdown(),
                                 description=f"Service graph of {settings.namespace} changed")
    logger.info("topology of %s: %d services, %d edges; %s", settings.namespace, len(live.services),
                len(live.edges), "snapshot stored" if stored else "unchanged")
    return {"services": len(live.services), "edges": len(live.edges), "stored": stored, "diff": diff.to_json()}
