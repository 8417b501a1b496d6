"""Incident RCA: one anomaly event in, ranked root causes and artifacts out."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
from prefect import flow, get_run_logger

from baynet.analysis import Windows, exemplars, snapshot_age
from baynet.events import run_name
from baynet.settings import Settings
from baynet.tempo.client import TempoUnavailable
from baynet.topology import TopologyError
from tasks.dbn import load_persisted_model, reestimate_dbn, run_inference
from tasks.parse_event import parse_anomaly
from baynet.evidence.changes import change_events, prior_factors
from baynet.evidence.fuse import fuse
from baynet.evidence.traces import EDGE_COLUMNS
from tasks.query_metrics import evidence_from_metrics, metrics_or_none
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
    signals, resources, versions, metric_stats = metrics_or_none(windows, settings)  # 2b. query Prometheus
    have_metrics = signals is not None or resources is not None
    try:
        spans, fetch_stats = query_traces(event, windows, settings)
    # Tempo down or empty: the metrics carry the analysis, if there are any. A rejected query (4xx) is a
    # fault of ours or of the configuration, and fails the run as before.
    except (TempoUnavailable, LookupError, httpx.HTTPError) as exc:
        if not have_metrics:
            raise
        logger.warning("no traces (%s); the analysis goes on with metrics alone", exc)
        spans = None
        fetch_stats = {"evidence_complete": False, "partial_reasons": [f"no traces: {exc}; metrics alone"]}
    fetch_stats.update(metric_stats)
    if not fetch_stats.get("evidence_complete", True):
        logger.warning("partial evidence: %s", "; ".join(fetch_stats.get("partial_reasons", [])))
    if spans is not None:
        trace_evidence, edges = evidence_from_spans(spans, windows)
    else:
        trace_evidence, edges = None, pd.DataFrame(columns=EDGE_COLUMNS)
    metric_evidence, notes = evidence_from_metrics(signals, resources, windows, spans, versions)
    changes = change_events(None, versions, windows.baseline)                    # deployments: a prior
    prior_factor = prior_factors(changes, event.unix) or None
    if prior_factor:
        fetch_stats["changes"] = [f"{r.service}: {r.detail} at {r.time:.0f}" for r in changes.itertuples()]
    if notes:
        fetch_stats["metric_notes"] = notes
    fetch_stats["sources"] = [name for name, ev in (("traces", trace_evidence), ("metrics", metric_evidence))
                              if ev is not None]
    evidence = fuse(trace_evidence, metric_evidence)
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
    ranking, path = run_inference(model, event, evidence, topology, settings,     # 5. run inference
                                  prior_factor)
    exemplars(spans, ranking, windows, settings.trace_url_template)              # traces that show it
    locations = store_results(event, ranking, path, evidence, topology, diff,    # 6. store the artifacts
                              model, fetch_stats, settings, model_update=edges)

    logger.info("root cause for %s on %s: %s (P=%.3f); path %s", event.event_type, event.service,
                ranking[0]["service"], ranking[0]["posterior"], " -> ".join(path))
    return {"event_id": event.id, "service": event.service, "ranking": ranking, "path": path,
            "artifacts": locations, "fetch": fetch_stats, "structure_changes": changes}
