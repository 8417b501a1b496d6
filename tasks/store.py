"""Step 6: store the incident's artifacts and publish them as Prefect artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from baynet.analysis import AnalysisResult
from baynet.analysis.store import store_artifacts
from baynet.artifacts import make_store
from baynet.settings import Settings
from baynet.topology import TopologyDiff
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER, retry_unless_rejected


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    clean = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    return f"{prefix}-{clean}"[:100]


@task(name="store-artifacts", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, retry_condition_fn=retry_unless_rejected, cache_policy=NO_CACHE)
def store_results(result: AnalysisResult, diff: TopologyDiff, settings: Settings) -> dict[str, str]:
    """Every artifact of the incident in the store (the model update last but the marker), and the
    ranking, the topology diff and a link to the report as Prefect artifacts."""
    from prefect.runtime import flow_run

    event, ranking, path, fetch_stats = result.event, result.ranking, result.path, result.fetch
    store = make_store(settings)
    ui_url = flow_run.get_flow_run_ui_url()  # "None/flow-runs/..." when no UI is configured
    locations = store_artifacts(store, event, ranking, path, result.evidence, result.topology, diff, result.model,
                                fetch_stats, run_url=ui_url if ui_url and ui_url.startswith("http") else None,
                                run_id=flow_run.get_id(), model_update=result.model_update,
                                log_templates=result.log_templates, headline=result.headline,
                                headline_short=result.headline_short, window_s=settings.window_s)
    create_table_artifact(
        key=artifact_key("rca-ranking", event.service),
        table=[{"rank": r["rank"], "service": r["service"], "posterior": round(r["posterior"], 4),
                "in words": r.get("in_words", "")[:300], "evidence": r["evidence"][:300]} for r in ranking[:20]],
        description=f"**{result.headline}**\n\nRoot causes for {event.event_type} on {event.service} at "
                    f"{event.timestamp.isoformat()} "
                    f"(event {event.id}); path: {' -> '.join(path)}; evidence "
                    + ("complete" if fetch_stats.get("evidence_complete", True)
                       else "PARTIAL: " + "; ".join(fetch_stats.get("partial_reasons", []))),
    )
    create_markdown_artifact(key=artifact_key("topology-diff", event.namespace), markdown=diff.to_markdown(),
                             description=f"Topology change seen by incident {event.id}")
    report = locations["structure.html"]
    create_link_artifact(key=artifact_key("rca-report", event.service),
                         link=report if "://" in report else f"file://{report}",
                         link_text=f"structure plot for incident {event.id}")
    return locations
