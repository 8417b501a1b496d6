"""Evidence sources: where an incident's observations come from (:mod:`baynet.sources.base`).

Live sources are registered in :func:`live_sources`, in the order the flow reads them; a bundle's files
answer for every kind through :func:`baynet.sources.bundle.bundle_observations`. A new source is one
module here and one line in :func:`live_sources`.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from baynet.settings import Settings
from baynet.sources.base import KINDS, EvidenceSource, Observations, Observed

if TYPE_CHECKING:
    from baynet.events import AnomalyEvent
    from baynet.windows import Windows

log = logging.getLogger(__name__)


def live_sources(settings: Settings) -> list[EvidenceSource]:
    """The sources the settings configure: Tempo always; Prometheus metrics, versions and the cluster's
    changes (kube-state-metrics) when ``BAYNET_PROMETHEUS_URL`` is set and metric evidence is on; Loki when
    ``BAYNET_LOKI_URL`` is set."""
    from baynet.sources.kube_state import KubeStateChanges
    from baynet.sources.loki import LokiLogs
    from baynet.sources.prometheus import IstioVersions, PrometheusMetrics
    from baynet.sources.tempo import TempoTraces

    sources: list[EvidenceSource] = [TempoTraces(settings)]
    if settings.prometheus_url and settings.metrics_evidence:
        sources += [PrometheusMetrics(settings), IstioVersions(settings), KubeStateChanges(settings)]
    if settings.loki_url:
        sources.append(LokiLogs(settings))
    return sources


def gather(event: "AnomalyEvent", windows: "Windows", sources: list[EvidenceSource],
           read: Callable[[EvidenceSource, "AnomalyEvent", "Windows"], Observed] | None = None) -> Observations:
    """Read every source, all at once (``read``: how one is read -- the flow reads each as a retried task;
    default ``source.fetch``). A source that is down or empty (its ``unavailable`` errors) is noted and the
    others carry the analysis, marked partial; when none answered, the first failure is raised (the run
    fails and the message goes back to the queue). Any other error -- a request the backend rejects -- is
    raised once the reads in flight are done."""
    def attempt(source: EvidenceSource) -> Observed | BaseException:
        try:
            return read(source, event, windows) if read else source.fetch(event, windows)
        except source.unavailable as exc:
            return exc

    # The sources are independent backends: read at once, each in a thread of its own that carries the
    # caller's context (a flow run's task runs stay its children), and taken in their order.
    with ThreadPoolExecutor(max_workers=max(1, len(sources)), thread_name_prefix="baynet-source") as pool:
        futures = [pool.submit(contextvars.copy_context().run, attempt, source) for source in sources]
        results = [future.result() for future in futures]  # any other error is raised here
    observations = Observations()
    errors: list[BaseException] = []
    for source, observed in zip(sources, results):
        if isinstance(observed, BaseException):
            log.warning("%s gave nothing (%s); the analysis goes on without it", source.name, observed)
            observations.failed.setdefault(source.kind, str(observed))
            errors.append(observed)
            continue
        observations.parts.append(observed)
    if errors and not [k for k in observations.kinds if k != "changes"]:
        raise errors[0]
    return observations


__all__ = ["KINDS", "EvidenceSource", "Observations", "Observed", "gather", "live_sources"]
