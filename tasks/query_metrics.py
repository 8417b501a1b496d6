"""Step 2b: read the mesh's golden signals and resources from Prometheus and turn them into evidence."""

from __future__ import annotations

import httpx
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from baynet.analysis import Windows, fetch_metrics, fetch_versions
from baynet.detector.series import PrometheusError
from baynet.evidence.metrics import aligned_metric_evidence
from baynet.settings import Settings
from tasks.retry import IO_RETRIES, IO_RETRY_DELAYS, IO_RETRY_JITTER
from tasks.validate import validated


@task(name="query-metrics", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, cache_policy=NO_CACHE)
def query_metrics(windows: Windows, settings: Settings) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict]:
    """Signal and resource rows over the baseline and incident windows (None: not configured)."""
    return fetch_metrics(windows, settings)


@task(name="query-versions", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_jitter_factor=IO_RETRY_JITTER, cache_policy=NO_CACHE)
def query_versions(windows: Windows, settings: Settings) -> pd.DataFrame | None:
    """Requests and errors per service and workload version (Istio ``destination_version``)."""
    return fetch_versions(windows, settings)


def metrics_or_none(windows: Windows, settings: Settings
                    ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None, dict]:
    """:func:`query_metrics` and :func:`query_versions`, but an unreachable or refusing Prometheus is a note,
    not a failed run: the metrics are a second source, and the traces carry the analysis without them."""
    try:
        signals, resources, stats = query_metrics(windows, settings)
        versions = query_versions(windows, settings) if signals is not None or resources is not None else None
        return signals, resources, versions, stats
    except (httpx.HTTPError, PrometheusError, OSError) as exc:
        get_run_logger().warning("metrics unavailable (%s); traces alone", exc)
        return None, None, None, {"metrics": f"unavailable: {exc}"}


@task(name="build-metric-evidence", cache_policy=NO_CACHE)
def evidence_from_metrics(signals: pd.DataFrame | None, resources: pd.DataFrame | None, windows: Windows,
                          spans: pd.DataFrame | None, versions: pd.DataFrame | None = None
                          ) -> tuple[pd.DataFrame | None, list[str]]:
    """Per-service, per-window metric evidence (validated), on the slices the trace evidence keeps; with
    ``versions``, the canary test of each service's newest version against the older."""
    if signals is None and resources is None:
        return None, []
    starts = spans["start_ns"].to_numpy() / 1e9 if spans is not None and len(spans) else None
    evidence, notes = aligned_metric_evidence(signals, resources, windows.baseline, windows.slices, starts,
                                              versions=versions)
    if evidence.empty:
        return None, notes
    validated("metric_evidence", evidence)
    return evidence, notes
