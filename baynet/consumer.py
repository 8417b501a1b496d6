"""The production consumer: long-poll the SQS queue and run the incident analysis for each event.

What runs an event is passed in (``run_incident``: the incident flow in this process, injected by the
CLI, which is the one place that imports the flows) or, with ``deployment``, a run of that Prefect
deployment on the work pool's workers (:mod:`baynet.dispatch`). Queue semantics: :mod:`baynet.sqs`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from baynet.events import AnomalyEvent
from baynet.settings import Settings

IncidentRunner = Callable[[AnomalyEvent, Settings], Any]

log = logging.getLogger(__name__)


def run_consumer(settings: Settings, run_incident: IncidentRunner | None = None, *, max_messages: int | None,
                 idle_polls: int | None, retry_after: int = 30, on_outcome: Any = None,
                 deployment: str | None = None) -> list[Any]:
    """Consume the queue until ``max_messages`` were handled or ``idle_polls`` empty polls in a row; every
    valid event is archived in the artifact store and analysed by ``run_incident`` (or ``deployment``)."""
    import boto3

    from baynet.artifacts import make_store
    from baynet.sqs import Consumer
    from baynet.state import Claims

    if deployment is None and run_incident is None:
        raise ValueError("run_consumer needs run_incident (the flow in this process) or a deployment to trigger")
    sqs = boto3.client("sqs", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region)
    store = make_store(settings)

    def handler(event: AnomalyEvent) -> Any:
        try:  # kept for backfills by time range; the analysis does not depend on it
            store.archive_event(event)
        except Exception as exc:
            log.warning("could not archive event %s: %s", event.id, exc)
        if deployment:
            from baynet.dispatch import trigger_and_wait

            return trigger_and_wait(deployment, event, consumer.current.message_id, consumer.current.receive_count,
                                    ready_at=event.unix + settings.settle_s)
        return run_incident(event, settings)

    if not deployment:  # the analysis runs here: its validation starts now, not on the first event
        from baynet.validation import warm

        warm()
    claims = Claims(store, ttl_s=settings.sqs_visibility_timeout)  # a lease lasts as long as a receive
    consumer = Consumer(
        sqs, settings.sqs_queue_url, handler,
        dlq_url=settings.sqs_dlq_url or None, is_done=store.incident_complete, wait_s=settings.sqs_wait_seconds,
        visibility_s=settings.sqs_visibility_timeout, retry_after_s=retry_after, concurrency=settings.concurrency,
        claim=claims.acquire,
        # In this process an event waits on the queue until its data settles; a deployment's run is
        # scheduled for then instead (dispatch), so neither holds a worker while it waits.
        ready_at=(lambda event: event.unix + settings.settle_s) if settings.settle_s and not deployment else None,
    )
    with one_temporary_prefect_server(settings.concurrency > 1 and not deployment):
        return consumer.run(max_messages=max_messages, idle_polls=idle_polls, on_outcome=on_outcome)


@contextmanager
def one_temporary_prefect_server(concurrent: bool) -> Iterator[None]:
    """With no ``PREFECT_API_URL``, Prefect starts a temporary API server the first time a flow runs. Its
    start is not thread-safe: analyses starting at once in several threads each start one, some fail
    ("Server process did not start") and one is left running after the command exits. So, before
    concurrent analyses, start it once here, and stop it when they are done."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if not concurrent or PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    # A first start creates its database; on a busy host that outlasts Prefect's default wait.
    server.start(timeout=max(90, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    try:
        yield
    finally:
        server.stop()
