"""Incident RCA: one anomaly event in, ranked root causes and artifacts out."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from baynet.analysis import Windows, snapshot_age
from baynet.events import run_name
from baynet.settings import Settings
from baynet.topology import TopologyError
from tasks.dbn import load_persisted_model, reestimate_dbn, run_inference
from tasks.parse_event import parse_anomaly
from tasks.query_tempo import evidence_from_spans, query_traces
from tasks.store import store_results
from tasks.topology import diff_with_snapshot, read_live_topology


def _run_name() -> str:
    from prefect.runtime import flow_run

    return run_name(flow_run.parameters.get("message"))


@flow(name="incident-rca", log_prints=True, flow_run_name=_run_name)
def incident_rca(message: str | dict[str, Any]) -> dict[str, Any]:
    """Analyse one anomaly event (the raw queue message body or its decoded JSON)."""
    settings = Settings()
    logger = get_run_logger()

    event = parse_anomaly(message)                                               # 1. parse the anomaly
    windows = Windows.around(event.unix, settings)
    spans, fetch_stats = query_traces(event, windows, settings)                  # 2. query Tempo
    if not fetch_stats.get("evidence_complete", True):
        logger.warning("partial evidence: %s", "; ".join(fetch_stats.get("partial_reasons", [])))
    evidence, edges = evidence_from_spans(spans, windows)
    try:                                                                         # 3. diff the topology
        live = read_live_topology(settings, event.unix)
    except TopologyError as exc:
        logger.warning("topology source unavailable (%s); using the last snapshot", exc)
        fetch_stats["topology"] = f"live topology unavailable ({exc}); {snapshot_age(settings)}"
        live = None
    # The scheduled refresh keeps the snapshots; an incident (perhaps a past one, in a backfill) only
    # diffs against them, and stores its graph only when there is no snapshot at all yet.
    topology, diff, _ = diff_with_snapshot(live, edges, settings, windows.incident[1] - windows.incident[0],
                                           store_changes=False)
    model = load_persisted_model(settings)                                       # 4. re-estimate the DBN
    model, changes = reestimate_dbn(model, topology, edges)
    ranking, path = run_inference(model, event, evidence, topology, settings)    # 5. run inference
    locations = store_results(event, ranking, path, evidence, topology, diff,    # 6. store the artifacts
                              model, fetch_stats, settings)

    logger.info("root cause for %s on %s: %s (P=%.3f); path %s", event.event_type, event.service,
                ranking[0]["service"], ranking[0]["posterior"], " -> ".join(path))
    return {"event_id": event.id, "service": event.service, "ranking": ranking, "path": path,
            "artifacts": locations, "fetch": fetch_stats, "structure_changes": changes}
