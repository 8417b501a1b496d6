"""What the command groups share: errors, logging, the result table, and the incident flow as a runner.

The CLI is the one place that imports the flows (:func:`incident_runner`); what runs in production and
the lab tools get the flow passed in.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` and exit with ``code`` (2: bad input, 1: the work failed)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    # No phoning home from Prefect's temporary server or GX (and their heartbeats race SQLite at start-up).
    for key, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("GX_ANALYTICS_ENABLED", "False"),
                       ("DO_NOT_TRACK", "1")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in ("baynet", "flows", "tasks"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)


def read_events(file: Path) -> tuple[bytes, list[Any]]:
    """The message body in ``file`` ('-': stdin) and its events; exit 2 naming what is wrong."""
    from baynet.events import EventError, parse_message

    try:
        body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    try:
        return body, parse_message(body)
    except EventError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def serve_until_interrupted(server: Any) -> None:
    """Block until Ctrl-C, then stop ``server`` (anything with ``stop()``)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def incident_runner(event: Any, settings: Any) -> Any:
    """Run the incident flow on ``event`` in this process with ``settings`` (the consumer's runner), its
    Prefect run tagged with the event's service and namespace."""
    from prefect import tags

    from baynet.events import run_tags
    from flows.incident import incident_rca

    with tags(*run_tags(event)):
        return incident_rca(event.model_dump(mode="json"), settings=settings)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as its formatter would, less any traceback (the record itself is left as it was,
    so the Prefect UI's log handler still gets the traceback)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_terminal() -> None:
    """Terminal log lines from warnings up and without tracebacks (``--verbose`` keeps everything; what
    goes to the Prefect UI is unchanged)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
            handler.setLevel(max(handler.level, logging.WARNING))


def operational_failure(exc: BaseException, settings: Any) -> str | None:
    """One short paragraph -- what failed, where, what to do -- for a failure an operator can act on
    (a server unreachable, a bad event); ``None`` for anything else (a bug: keep the traceback)."""
    import httpx

    from baynet.events import EventError
    from baynet.tempo.client import TempoError
    from baynet.topology import TopologyError

    if isinstance(exc, EventError):
        return f"the event is not valid: {exc}. Fix the message (check it with 'baynet event check FILE')."
    if isinstance(exc, TempoError):
        return (f"the traces could not be read from Tempo at {settings.tempo_url}: {exc}. Check that Tempo is up "
                "and BAYNET_TEMPO_URL (and BAYNET_TEMPO_ORG_ID / BAYNET_TEMPO_TOKEN) point at it, then run the "
                "analysis again.")
    if isinstance(exc, TopologyError):
        return f"the service topology could not be read: {exc}. Check BAYNET_PROMETHEUS_URL or BAYNET_KIALI_GRAPH_FILE."
    if isinstance(exc, httpx.TransportError):
        return f"a server could not be reached: {type(exc).__name__}: {exc}. Check the BAYNET_* URLs and that the servers are up."
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, (BotoCoreError, ClientError)):
        return (f"AWS (the artifact bucket or the queue) could not be used: {exc}. Check BAYNET_S3_BUCKET, "
                "BAYNET_SQS_QUEUE_URL, BAYNET_AWS_ENDPOINT_URL and the credentials.")
    return None


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.get("headline"):
        console.print(f"[bold]{result['headline']}[/bold]", soft_wrap=True)
    table = Table(title=f"Root causes for the anomaly on {result['service']} (event {result['event_id']})")
    table.add_column("rank", justify="right")
    table.add_column("service")
    table.add_column("P(root cause)", justify="right")
    table.add_column("evidence")
    for r in result["ranking"][:10]:
        table.add_row(str(r["rank"]), r["service"], f"{r['posterior']:.3f}", (r.get("in_words") or r["evidence"])[:200])
    console.print(table)
    console.print(f"propagation path: {' -> '.join(result['path'])}")
    fetch = result["fetch"]
    state = "complete" if fetch.get("evidence_complete", True) else "PARTIAL"
    console.print(f"evidence ({state}): {fetch.get('traces_fetched', 0)} traces, {fetch.get('spans', 0)} spans, "
                  f"{fetch.get('not_found', 0)} not found, {fetch.get('partial', 0)} partial, "
                  f"{fetch.get('failed', 0)} unreadable, {fetch.get('truncated', 0)} searches cut")
    for reason in fetch.get("partial_reasons", []):
        console.print(f"  partial: {reason}")
    if fetch.get("retrieval"):
        console.print(f"retrieval: {fetch['retrieval']}")
    if fetch.get("aggregates"):
        console.print(f"rates, errors, latencies: {fetch['aggregates']}")
    if "topology" in fetch:
        console.print(f"topology: {fetch['topology']}")
    console.print(f"artifacts: {Path(result['artifacts']['ranking.json']).parent}")
