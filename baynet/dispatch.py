"""Hand an event to the incident deployment (``baynet listen --deployment``): the run then belongs to a
worker and shows in the Prefect UI with its task runs, retries and artifacts.

The idempotency key is the SQS message id, so a message delivered twice (a consumer killed after
triggering, a visibility timeout that ran out) maps to the one flow run already created, and the
consumer waits for that run instead of starting another. Only when that run ended failed, crashed or
cancelled is a new one created (keyed by the receive count), so a failed analysis can be retried.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from baynet.events import AnomalyEvent, run_tags

log = logging.getLogger(__name__)


class DeploymentRunFailed(RuntimeError):
    """The incident deployment's flow run did not complete."""


def trigger_and_wait(deployment: str, event: AnomalyEvent, message_id: str, receive_count: int = 1, *,
                     timeout_s: float = 3600.0, poll_s: float = 2.0, ready_at: float | None = None) -> Any:
    """``ready_at`` (unix seconds): when the event's data has settled; a run created before then is
    scheduled for then (Prefect starts it on a worker at that time)."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    params = {"message": event.model_dump(mode="json")}
    key = f"sqs-{message_id}"
    when = datetime.fromtimestamp(ready_at, UTC) if ready_at is not None and ready_at > time.time() else None
    run = run_deployment(deployment, parameters=params, idempotency_key=key, timeout=0, as_subflow=False,
                         tags=["sqs", *run_tags(event)], scheduled_time=when)
    if run.state is not None and run.state.is_final() and not run.state.is_completed():
        key = f"sqs-{message_id}-receive-{receive_count}"
        log.info("earlier run %s of message %s ended %s; starting another (%s)", run.name, message_id,
                 run.state.type.value, key)
        run = run_deployment(deployment, parameters=params, idempotency_key=key, timeout=0, as_subflow=False,
                             tags=["sqs", "retry", *run_tags(event)], scheduled_time=when)
    log.info("message %s -> flow run %s (%s) of %s", message_id, run.name, run.id, deployment)
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                break
            if time.monotonic() > deadline:
                where = run.state.type.value if run.state else "pending"
                raise DeploymentRunFailed(f"flow run {run.name} ({run.id}) still {where} after {timeout_s:.0f}s")
            time.sleep(poll_s)
    if not run.state.is_completed():
        raise DeploymentRunFailed(f"flow run {run.name} ({run.id}) ended {run.state.type.value}: "
                                  f"{run.state.message or ''}".strip())
    return run
