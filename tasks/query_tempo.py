"""Step 2: pull the affected traces from Tempo and turn their spans into per-service evidence."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from baynet.analysis import Windows, fetch_spans
from baynet.events import AnomalyEvent
from baynet.evidence import build_evidence
from baynet.settings import Settings
from tasks.validate import validated
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER, retry_unless_rejected


@task(name="query-tempo", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, retry_condition_fn=retry_unless_rejected, cache_policy=NO_CACHE)
def query_traces(event: AnomalyEvent, windows: Windows, settings: Settings) -> tuple[pd.DataFrame, dict]:
    """Spans of the incident and baseline windows (validated), and what the retrieval saw."""
    frame, stats = fetch_spans(event, windows, settings)
    if frame.empty:
        raise LookupError(f"Tempo at {settings.tempo_url} returned no traces for {event.service!r} around "
                          f"{event.timestamp.isoformat()}; nothing to analyse")
    validated("spans", frame)
    return frame, stats


@task(name="build-evidence", cache_policy=NO_CACHE)
def evidence_from_spans(spans: pd.DataFrame, windows: Windows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-service, per-window evidence (validated) and per-edge propagation counts."""
    evidence, edges = build_evidence(spans, windows.baseline, windows.slices)
    validated("evidence", evidence)
    return evidence, edges
