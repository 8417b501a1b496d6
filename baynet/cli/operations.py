"""Operations: the commands an SRE or a worker runs against a real deployment -- check and send events,
analyse one, listen on the queue, backfill, confirm a root cause, serve the report pages, parse Tempo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from baynet.cli.common import (
    fail, incident_runner, operational_failure, print_result, quiet_terminal, read_events, serve_until_interrupted,
    setup_logging,
)

event_app = typer.Typer(help="Check anomaly event messages and put them on the queue.", no_args_is_help=True)
tempo_app = typer.Typer(help="Read and serve Tempo responses.", no_args_is_help=True)
app = typer.Typer()  # the top-level commands of this group, merged into ``baynet``


@event_app.command("check")
def event_check(file: Path = typer.Argument(..., help="A message body (JSON) as it would arrive on the queue; "
                                                      "'-' reads standard input.")) -> None:
    """Print the normalised event(s) as JSON lines, or exit 2 naming the field and value that are wrong."""
    _, events = read_events(file)
    for event in events:
        typer.echo(event.model_dump_json())


@event_app.command("send")
def event_send(file: Path = typer.Argument(..., help="A message body (JSON) to put on the queue; '-' reads stdin."),
               queue_url: Optional[str] = typer.Option(None, help="Queue URL (default BAYNET_SQS_QUEUE_URL).")) -> None:
    """Check a message and put it on the SQS queue (BAYNET_AWS_ENDPOINT_URL for a local queue)."""
    import boto3

    from baynet.settings import Settings

    settings = Settings()
    url = queue_url or settings.sqs_queue_url
    if not url:
        fail("no queue: pass --queue-url or set BAYNET_SQS_QUEUE_URL")
    body, events = read_events(file)
    sqs = boto3.client("sqs", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region)
    sent = sqs.send_message(QueueUrl=url, MessageBody=body.decode())
    typer.echo(json.dumps({"message_id": sent["MessageId"], "events": [e.id for e in events]}))


@tempo_app.command("parse")
def tempo_parse(file: Path = typer.Argument(..., help="A saved Tempo response: search, or trace by id (v1/v2).")
                ) -> None:
    """Print one JSON line per span: trace_id, span_id, parent_span_id, service, name, kind, start_ns,
    end_ns, status (ok/error/unset), http_status."""
    from baynet.otlp import TempoParseError, parse_any

    try:
        kind, spans = parse_any(file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except TempoParseError as exc:
        fail(f"{file}: {exc}")
    if not spans:
        typer.echo(f"{file}: a {kind} body with no spans", err=True)
    keys = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns", "status",
            "http_status")
    for span in spans:
        typer.echo(json.dumps({k: getattr(span, k) for k in keys}))


@app.command("analyse")
def analyse(file: Path = typer.Argument(..., help="An anomaly event message (JSON)."),
            verbose: bool = typer.Option(False, "--verbose", "-v", help="Keep the details and tracebacks.")) -> None:
    """Run the incident flow on one event file, without the queue (uses BAYNET_* settings). An expected
    failure (Tempo unreachable, a bad event, ...) ends with one paragraph saying what to do and exit 1."""
    setup_logging(verbose)
    from baynet.settings import Settings

    try:
        message = file.read_text()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    from prefect import tags

    from baynet.events import EventError, parse_message, run_tags
    from flows.incident import incident_rca

    try:
        labels = run_tags(parse_message(message)[0])
    except EventError:
        labels = []  # the flow's parse step reports what is wrong
    if not verbose:
        quiet_terminal()
    settings = Settings()
    try:
        with tags(*labels):
            result = incident_rca(message, settings=settings)
    except Exception as exc:
        paragraph = operational_failure(exc, settings)
        if paragraph is None or verbose:
            raise
        fail(f"analysis of {file} failed: {paragraph} (--verbose shows the details)",
             2 if isinstance(exc, EventError) else 1)
    print_result(result)


@app.command("listen")
def listen(max_messages: Optional[int] = typer.Option(None, help="Stop after this many messages."),
           idle_polls: Optional[int] = typer.Option(None, help="Stop after this many empty polls in a row."),
           retry_after: int = typer.Option(30, help="Seconds before a failed message is offered again."),
           concurrency: Optional[int] = typer.Option(None, help="Analyses at once (default BAYNET_CONCURRENCY, 1)."),
           deployment: Optional[str] = typer.Option(
               None, help="Trigger this Prefect deployment (e.g. incident-rca/incident-rca) for each event, keyed "
                          "by the message id, and wait for its run, instead of running the flow in this process."),
           verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Long-poll the SQS queue (BAYNET_SQS_QUEUE_URL) and run the incident flow for each event."""
    setup_logging(verbose)
    from baynet.settings import Settings

    settings = Settings()
    if concurrency is not None:
        if concurrency < 1:
            fail(f"--concurrency must be at least 1, got {concurrency}")
        settings.concurrency = concurrency
    if not settings.sqs_queue_url:
        fail("BAYNET_SQS_QUEUE_URL is not set")
    from baynet.consumer import run_consumer

    outcomes = run_consumer(settings, None if deployment else incident_runner, max_messages=max_messages,
                            idle_polls=idle_polls, retry_after=retry_after, deployment=deployment)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    typer.echo(json.dumps(counts))


@app.command("backfill")
def backfill_cmd(
        events_file: Optional[Path] = typer.Argument(None, help="Events to analyse: a JSON array or JSON lines of "
                                                                "messages. Without it: the listener's event archive."),
        start: Optional[str] = typer.Option(None, help="Only events at or after this time (ISO 8601)."),
        end: Optional[str] = typer.Option(None, help="Only events at or before this time (ISO 8601)."),
        concurrency: int = typer.Option(4, min=1, max=64, help="Analyses in flight at once."),
        deployment: Optional[str] = typer.Option(
            None, help="Run each analysis as a run of this deployment (e.g. incident-rca/incident-rca) on the work "
                       "pool's workers, instead of inside this process."),
        verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Analyse past incidents with a progress bar; already analysed ones are skipped, so an interrupted
    backfill resumes where it stopped. Progress and a summary also appear in the Prefect UI."""
    setup_logging(verbose)
    from datetime import datetime

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import flows.backfill as bf

    def when(value: Optional[str], name: str) -> Any:
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--{name} must be an ISO 8601 time, got {value!r}")

    if events_file is not None and not events_file.is_file():
        fail(f"{events_file} is not a file")
    lo, hi = when(start, "start"), when(end, "end")
    console = Console(stderr=True)
    with Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=None)

        def hook(done: int, total: int, row: dict[str, str]) -> None:
            bar.update(task, completed=done, total=total, description=f"{row['event'][:20]} {row['result']}")

        bf.PROGRESS_HOOK = hook
        try:
            counts = bf.backfill(str(events_file) if events_file else None, lo, hi, concurrency, deployment)
        except (OSError, ValueError) as exc:
            fail(f"backfill failed: {exc}", 1)
        finally:
            bf.PROGRESS_HOOK = None
    typer.echo(json.dumps(counts))
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command("confirm")
def confirm(event_id: str = typer.Argument(..., help="The analysed incident's event id."),
            root_cause: Optional[str] = typer.Option(None, "--root-cause", help="The service that was the root cause."),
            by: str = typer.Option("", help="Who confirms (stored with the confirmation)."),
            note: str = typer.Option("", help="A note stored with the confirmation."),
            withdraw: bool = typer.Option(False, "--withdraw", help="Withdraw this incident's confirmation.")) -> None:
    """Confirm an incident's root cause (or withdraw a confirmation). Stored in the artifact store with who
    and when; the model's root-cause priors learn from confirmations only (bounded: see README)."""
    from baynet.artifacts import make_store
    from baynet.settings import Settings
    from baynet.state import ConfirmationError, Confirmations

    if withdraw == bool(root_cause):
        fail("give --root-cause SERVICE, or --withdraw")
    try:
        record = Confirmations(make_store(Settings())).add(event_id, root_cause, by=by, note=note, withdraw=withdraw)
    except ConfirmationError as exc:
        fail(str(exc))
    typer.echo(json.dumps(record))


@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8080, help="Port."),
          artifacts: Optional[Path] = typer.Option(None, help="Artifact directory (default BAYNET_ARTIFACTS_DIR, "
                                                              "or BAYNET_S3_BUCKET when set)."),
          token: Optional[str] = typer.Option(None, envvar="BAYNET_REPORT_TOKEN", help="Let operators confirm "
                                              "root causes from the incident page with this access token "
                                              "(the form asks for it). Off when neither this nor "
                                              "--trusted-user-header is given."),
          trusted_user_header: Optional[str] = typer.Option(None, help="Behind a reverse proxy that "
                                                            "authenticates users and sets this header (e.g. "
                                                            "X-Forwarded-User): confirm from the page as that user."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Serve the incident reports: the index at / and /baynet, one page per incident at
    /baynet/incidents/<event id> (structure plot, charts, topology changes, ranking with evidence and
    example traces, Prefect run, confirmation)."""
    setup_logging(verbose)
    from baynet.artifacts import LocalStore, make_store
    from baynet.report import ReportServer
    from baynet.settings import Settings

    if artifacts is not None and not artifacts.is_dir():
        fail(f"--artifacts {artifacts} is not a directory")
    store = LocalStore(artifacts) if artifacts is not None else make_store(Settings())
    try:
        server = ReportServer(store, host, port, token=token, trusted_user_header=trusted_user_header).start()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    typer.echo(f"Baynet reports at {server.url}/baynet ({len(store.list_incidents())} incidents; Ctrl-C to stop)")
    serve_until_interrupted(server)
