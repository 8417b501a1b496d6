"""Incident RCA: one anomaly event in, ranked root causes and artifacts out."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from baynet.analysis import AnalysisResult
from baynet.analysis.look_again import until_settled
from baynet.analysis.topology import snapshot_age
from baynet.events import run_name
from baynet.settings import Settings
from baynet.sources import Observations
from baynet.topology import TopologyError
from baynet.windows import Windows
from tasks.dbn import load_persisted_model, run_analysis
from tasks.parse_event import parse_anomaly
from tasks.sources import gather_observations, wait_for_data
from tasks.store import store_results
from tasks.topology import diff_with_snapshot, read_live_topology


def _run_name() -> str:
    from prefect.runtime import flow_run

    return run_name(flow_run.parameters.get("message"))


@flow(name="incident-rca", log_prints=True, flow_run_name=_run_name)
def incident_rca(message: str | dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Analyse one anomaly event (the raw queue message body or its decoded JSON). ``settings``: passed by
    an in-process caller (the consumer, a harness); a deployment's run reads them from its environment."""
    settings = settings or Settings()
    logger = get_run_logger()

    event = parse_anomaly(message)                                               # 1. parse the anomaly
    windows = Windows.around(event.unix, settings)
    observations = gather_observations(event, windows, settings)                 # 2. query Tempo, Prometheus
    try:                                                                         # 3. diff the topology
        live = read_live_topology(settings, event.unix)
    except TopologyError as exc:
        logger.warning("topology source unavailable (%s); using the last snapshot", exc)
        observations.remarks["topology"] = f"live topology unavailable ({exc}); {snapshot_age(settings)}"
        live = None
    # The scheduled refresh keeps the snapshots; an incident (perhaps a past one, in a backfill) only
    # diffs against them, and stores its graph only when there is no snapshot at all yet.
    topology, diff, _ = diff_with_snapshot(live, settings, store_changes=False)
    model = load_persisted_model(settings)                                       # 4-5. re-estimate, infer
    result = run_analysis(event, observations, model, settings, topology)

    def again(later: Settings, why: str) -> tuple[AnalysisResult, Observations]:      # a later look: wait, read, rank
        windows = Windows.around(event.unix, later)
        wait_for_data(windows.incident[1], why)
        seen = gather_observations(event, windows, later)
        return run_analysis(event, seen, load_persisted_model(settings), later, topology), seen

    result = until_settled(result, observations, settings, again)
    if not result.fetch.get("evidence_complete", True):
        logger.warning("partial evidence: %s", "; ".join(result.fetch.get("partial_reasons", [])))
    locations = store_results(result, diff, settings)                            # 6. store the artifacts

    logger.info("root cause for %s on %s: %s (P=%.3f); path %s", event.event_type, event.service,
                result.ranking[0]["service"], result.ranking[0]["posterior"], " -> ".join(result.path))
    return {"event_id": event.id, "service": event.service, "headline": result.headline,
            "ranking": result.ranking, "path": result.path,
            "artifacts": locations, "fetch": result.fetch, "structure_changes": result.structure_changes}
