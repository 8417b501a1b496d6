"""Backfill: analyse past incidents from a file of events, optionally limited to a time range."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from baynet.artifacts import make_store
from baynet.events import EventError, parse_object
from baynet.settings import Settings
from flows.incident import incident_rca


def read_events(path: Path) -> list[Any]:
    """A JSON array of messages, or JSON lines (one message per line)."""
    text = Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@flow(name="backfill", log_prints=True)
def backfill(events_file: str, start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
    """Run the incident analysis for every event in ``events_file`` (between ``start`` and ``end`` when
    given), skipping events already analysed — so a crashed backfill resumes where it stopped."""
    settings = Settings()
    logger = get_run_logger()
    store = make_store(settings)
    rows, counts = [], {"analysed": 0, "skipped": 0, "invalid": 0, "failed": 0, "outside": 0}
    messages = read_events(Path(events_file))
    for i, message in enumerate(messages, 1):
        try:
            events = parse_object(message)
        except EventError as exc:
            counts["invalid"] += 1
            rows.append({"event": f"#{i}", "result": "invalid", "detail": str(exc)[:200]})
            continue
        for event in events:
            if (start and event.timestamp < start) or (end and event.timestamp > end):
                counts["outside"] += 1
                continue
            if store.incident_complete(event.id):
                counts["skipped"] += 1
                rows.append({"event": event.id, "result": "already analysed", "detail": ""})
                continue
            try:
                result = incident_rca(event.model_dump(mode="json"))
            except Exception as exc:  # one bad incident must not stop the backfill
                counts["failed"] += 1
                rows.append({"event": event.id, "result": "failed", "detail": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            counts["analysed"] += 1
            rows.append({"event": event.id, "result": "analysed",
                         "detail": f"top: {result['ranking'][0]['service']}"})
        logger.info("backfill: %d/%d messages done (%s)", i, len(messages), counts)
    create_table_artifact(key="backfill-summary", table=rows or [{"event": "-", "result": "nothing to do",
                                                                  "detail": ""}],
                          description=f"Backfill of {events_file}: {counts}")
    return counts
