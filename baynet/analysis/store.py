"""Step 6: an incident's artifacts in the store, the completion marker last."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pandas as pd

from baynet.artifacts import COMPLETE, ArtifactStore, structure_html
from baynet.dbn import DBNModel
from baynet.events import AnomalyEvent
from baynet.state import ModelLog
from baynet.topology import Topology, TopologyDiff


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def store_artifacts(store: ArtifactStore, event: AnomalyEvent, ranking: list[dict[str, Any]], path: list[str],
                    evidence: pd.DataFrame, topology: Topology, diff: TopologyDiff, model: DBNModel,
                    fetch_stats: dict[str, Any], run_url: str | None = None, run_id: str | None = None,
                    model_update: pd.DataFrame | None = None, log_templates: list[str] | None = None,
                    headline: str = "", headline_short: str = "", window_s: float | None = None
                    ) -> dict[str, str]:
    """Write every artifact of one incident, then its model update (``model_update``: the per-edge span
    counts, when the model was re-estimated from them), the completion marker last. Returns name -> location."""
    base = f"incidents/{event.id}"
    members = {r["service"] for r in ranking}
    callees = {s: [c for c in model.callees.get(s, []) if c in members] for s in members}
    summary = {"event": json.loads(event.model_dump_json()), "headline": headline, "headline_short": headline_short,
               "ranking": ranking, "propagation_path": path,
               "fetch": fetch_stats, "model_updates": model.updates,
               "prefect": {"flow_run_id": run_id, "ui_url": run_url}, "analysed_at": time.time()}
    out = {
        "ranking.json": store.put_json(f"{base}/ranking.json", summary),
        "ranking.csv": store.put(f"{base}/ranking.csv", _csv([{k: r[k] for k in ("rank", "service", "posterior")}
                                                              for r in ranking])),
        "posteriors.csv": store.put(f"{base}/posteriors.csv", _csv([
            {k: r.get(k, "") for k in ("rank", "service", "posterior", "prior", "evidence")} for r in ranking])),
        "evidence.csv": store.put(f"{base}/evidence.csv", evidence.to_csv(index=False)),
        "topology.json": store.put_json(f"{base}/topology.json", topology.to_json()),
        "topology_diff.json": store.put_json(f"{base}/topology_diff.json", diff.to_json()),
        "topology_diff.md": store.put(f"{base}/topology_diff.md", diff.to_markdown()),
        "model.json": store.put_json(f"{base}/model.json", model.to_json()),
        "fetch_stats.json": store.put_json(f"{base}/fetch_stats.json", fetch_stats),
        "structure.html": store.put(f"{base}/structure.html", structure_html(
            f"Baynet incident {event.id}: {event.event_type} on {event.service}", ranking, callees, event.service,
            path, diff.to_json(), run_url, evidence=evidence, headline=headline,
            event_time=event.unix, window_s=window_s)),
    }
    # The model persists between incidents as a log of their updates (create-only: a duplicate adds
    # nothing), folded in event-time order by the next load (baynet.state).
    if model_update is not None:
        ModelLog(store, topology.namespace).record(event, topology, model_update, log_templates)
    out[COMPLETE] = store.put(f"{base}/{COMPLETE}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return out
