"""Confirm an incident's root cause from the Prefect UI (the ``confirm-root-cause`` deployment): the same
as ``baynet confirm``. The confirmation is stored with who and when; the model's root-cause priors learn
from confirmations only (:meth:`baynet.dbn.DBNModel.confirm`)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from baynet.artifacts import make_store
from baynet.settings import Settings
from baynet.state import Confirmations
from tasks.store import artifact_key


@flow(name="confirm-root-cause", log_prints=True)
def confirm_root_cause(event_id: str, root_cause: str | None = None, by: str = "", note: str = "",
                       withdraw: bool = False) -> dict[str, Any]:
    """Store (or withdraw) the confirmed root cause of an analysed incident; fails, naming the value,
    when the incident has no complete analysis or the service was not among those analysed."""
    if withdraw == bool(root_cause):
        raise ValueError("give root_cause, or withdraw=true")
    record = Confirmations(make_store(Settings())).add(event_id, root_cause, by=by, note=note, withdraw=withdraw)
    what = "withdrawn" if withdraw else f"root cause **{root_cause}**"
    create_markdown_artifact(key=artifact_key("confirmation", event_id),
                             markdown=f"Incident `{event_id}`: {what}, by {by or 'unknown'} at {record['at']}."
                                      + (f"\n\n{note}" if note else ""),
                             description=f"Confirmation of incident {event_id}")
    get_run_logger().info("incident %s: %s", event_id, what)
    return record
