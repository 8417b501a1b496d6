"""Backfill: analyse past incidents, from a file of events or from the archive of events the listener
received, with bounded concurrency, skipping those already analysed (so a crashed backfill resumes where
it stopped), with progress in the Prefect UI and a summary artifact at the end.

Two ways to run the analyses:
* in this flow run (``deployment`` unset): up to ``concurrency`` incident flows at once as subflows;
* on the work pool (``deployment="incident-rca/incident-rca"``): each incident becomes a run of the
  incident deployment, at most ``concurrency`` in flight; every worker on the pool takes its share, so the
  backfill scales out by starting more workers (``prefect worker start --pool baynet``).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from baynet.artifacts import ArtifactStore, make_store
from baynet.events import AnomalyEvent, EventError, parse_object
from baynet.settings import Settings

# Set by `baynet backfill` to draw a progress bar in the terminal: called as hook(done, total, row).
PROGRESS_HOOK: Callable[[int, int, dict[str, str]], None] | None = None


def read_events(path: Path) -> list[Any]:
    """A JSON array of messages, or JSON lines (one message per line)."""
    text = Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def archived_events(store: ArtifactStore, start: datetime | None, end: datetime | None) -> list[Any]:
    """Events the listener archived (``events/<day>/<id>.json``) on the days between start and end."""
    return [store.get_json(key) for key in store.list_events(start, end)]


def _aware(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


@flow(name="backfill", log_prints=True)
def backfill(events_file: str | None = None, start: datetime | None = None, end: datetime | None = None,
             concurrency: int = 4, deployment: str | None = None) -> dict[str, Any]:
    """Analyse every event in ``events_file`` — or, without a file, every archived event — whose time is
    between ``start`` and ``end`` (when given), at most ``concurrency`` at once; skip analysed ones."""
    settings = Settings()
    logger = get_run_logger()
    store = make_store(settings)
    start, end = _aware(start), _aware(end)
    messages = read_events(Path(events_file)) if events_file else archived_events(store, start, end)
    rows: list[dict[str, str]] = []
    counts = {"analysed": 0, "skipped": 0, "invalid": 0, "failed": 0, "outside": 0}
    todo: list[AnomalyEvent] = []
    seen: set[str] = set()
    for i, message in enumerate(messages, 1):
        try:
            events = parse_object(message)
        except EventError as exc:
            counts["invalid"] += 1
            rows.append({"event": f"#{i}", "result": "invalid", "detail": str(exc)[:200]})
            continue
        for event in events:
            if event.id in seen or event.status != "firing":
                continue
            seen.add(event.id)
            if (start and event.timestamp < start) or (end and event.timestamp > end):
                counts["outside"] += 1
            elif store.incident_complete(event.id):
                counts["skipped"] += 1
                rows.append({"event": event.id, "result": "already analysed", "detail": ""})
            else:
                todo.append(event)
    total = len(todo)
    logger.info("backfill: %d incident(s) to analyse, %d already analysed, %d outside the range, %d invalid",
                total, counts["skipped"], counts["outside"], counts["invalid"])
    progress_id = create_progress_artifact(0.0, key="backfill-progress",
                                           description=f"Backfill of {total} incident(s)")
    done = 0

    def finished(event: AnomalyEvent, result: str, detail: str) -> None:
        nonlocal done
        done += 1
        counts[result] += 1
        row = {"event": event.id, "result": result, "detail": detail[:200]}
        rows.append(row)
        update_progress_artifact(progress_id, 100.0 * done / max(total, 1),
                                 description=f"{done}/{total} incidents: {counts}")
        logger.info("backfill %d/%d: %s %s %s", done, total, event.id, result, detail[:120])
        if PROGRESS_HOOK:
            PROGRESS_HOOK(done, total, row)

    if deployment:
        _on_work_pool(todo, deployment, concurrency, finished)
    else:
        _in_process(todo, concurrency, finished)
    update_progress_artifact(progress_id, 100.0, description=f"done: {counts}")
    create_table_artifact(key="backfill-summary", table=rows or [{"event": "-", "result": "nothing to do",
                                                                  "detail": ""}],
                          description=f"Backfill of {events_file or 'the event archive'}: {counts}")
    return counts


def _in_process(todo: list[AnomalyEvent], concurrency: int, finished: Callable[..., None]) -> None:
    from flows.incident import incident_rca

    def one(event: AnomalyEvent) -> tuple[str, str]:
        try:
            result = incident_rca(event.model_dump(mode="json"))
        except Exception as exc:  # one bad incident must not stop the backfill
            return "failed", f"{type(exc).__name__}: {exc}"
        return "analysed", f"top: {result['ranking'][0]['service']}"

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="backfill") as pool:
        futures = {pool.submit(one, e): e for e in todo}
        for fut in list(futures):
            finished(futures[fut], *fut.result())


def _on_work_pool(todo: list[AnomalyEvent], deployment: str, concurrency: int, finished: Callable[..., None],
                  poll_s: float = 2.0) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    pending = list(todo)
    running: dict[Any, AnomalyEvent] = {}
    with get_client(sync_client=True) as client:
        while pending or running:
            while pending and len(running) < max(1, concurrency):
                event = pending.pop(0)
                params = {"message": event.model_dump(mode="json")}
                # Keyed by event: a backfill restarted after a crash waits for the runs it had started.
                run = run_deployment(deployment, parameters=params, idempotency_key=f"backfill-{event.id}",
                                     timeout=0, as_subflow=False, tags=["backfill"])
                if run.state is not None and run.state.is_final() and not run.state.is_completed():
                    run = run_deployment(deployment, parameters=params, as_subflow=False, timeout=0,
                                         idempotency_key=f"backfill-{event.id}-{time.time_ns()}",
                                         tags=["backfill", "retry"])
                running[run.id] = event
            time.sleep(poll_s)
            for run_id in list(running):
                run = client.read_flow_run(run_id)
                if run.state is None or not run.state.is_final():
                    continue
                event = running.pop(run_id)
                if run.state.is_completed():
                    finished(event, "analysed", f"flow run {run.name}")
                else:
                    finished(event, "failed", f"flow run {run.name} ended {run.state.type.value}: "
                                              f"{run.state.message or ''}")
