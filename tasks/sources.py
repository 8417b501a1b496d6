"""Step 2: read every configured evidence source (Tempo, Prometheus, ...) for the incident's windows."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from baynet.events import AnomalyEvent
from baynet.settings import Settings
from baynet.sources import EvidenceSource, Observations, Observed, gather, live_sources
from baynet.windows import Windows
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER, retry_unless_rejected
from tasks.validate import validated

# The hand-off suite each table is checked against before evidence is built from it.
SUITES = {"spans": "spans"}


@task(name="query-source", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, retry_condition_fn=retry_unless_rejected, cache_policy=NO_CACHE)
def read_source(source: EvidenceSource, event: AnomalyEvent, windows: Windows) -> Observed:
    """What one source holds for the incident's windows (its tables validated)."""
    observed = source.fetch(event, windows)
    for name, table in observed.tables.items():
        if name in SUITES and table is not None:
            validated(SUITES[name], table)
    return observed


def gather_observations(event: AnomalyEvent, windows: Windows, settings: Settings) -> Observations:
    """Every configured source, each a task run of its own (``query-tempo``, ``query-prometheus``, ...);
    what a source that is down means: :func:`baynet.sources.gather`."""
    return gather(event, windows, live_sources(settings),
                  read=lambda source, ev, win: read_source.with_options(name=f"query-{source.name}")(source, ev, win))


@task(name="wait-for-data", cache_policy=NO_CACHE)
def wait_for_data(until_unix: float, why: str) -> float:
    """Wait (in this run) until ``until_unix`` has passed, for the data a second look reads; no wait for a
    past incident (a backfill). Returns the seconds waited."""
    waits = max(0.0, until_unix - time.time())
    if waits:
        get_run_logger().info("looking again in %.0f s: %s", waits, why)
        time.sleep(waits)
    return waits
