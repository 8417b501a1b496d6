"""Step 1: parse the anomaly message into an :class:`~baynet.events.AnomalyEvent`."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from baynet.events import AnomalyEvent, parse_message, parse_object
from tasks.validate import validated


@task(name="parse-anomaly", cache_policy=NO_CACHE)
def parse_anomaly(message: str | dict) -> AnomalyEvent:
    """Parse and validate the event; the first event of a multi-alert message when several fire."""
    events = parse_message(message) if isinstance(message, str) else parse_object(message)
    event = events[0]
    validated("event", pd.DataFrame([{**event.model_dump(exclude={"labels"}), "timestamp": event.unix}]))
    return event
