"""The ``baynet`` command line. Prefect and the analysis stack are imported only by the commands that
need them, so ``baynet --help`` and the small commands start fast."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

app = typer.Typer(help="Baynet: root-cause analysis for microservice incidents (SQS -> Prefect -> Tempo + "
                       "Istio -> dynamic Bayesian network).", no_args_is_help=True, add_completion=False)
tempo_app = typer.Typer(help="Read and serve Tempo responses.", no_args_is_help=True)
event_app = typer.Typer(help="Check anomaly event messages.", no_args_is_help=True)
app.add_typer(tempo_app, name="tempo")
eval_app = typer.Typer(help="Measure root-cause accuracy on public fault-injection data.", no_args_is_help=True)
app.add_typer(event_app, name="event")
app.add_typer(eval_app, name="eval")
bundle_app = typer.Typer(help="""Incident bundles (format 1): one directory per incident, a public contract.

\b
event.json     the anomaly event, any form `baynet event check` accepts
               (the only required file)
bundle.json    {"format": 1}; absent means 1
traces/*.json  Tempo/OTLP JSON trace bodies ({"batches": ...} or
               {"resourceSpans": ...}), any number of traces per file
signals.csv    golden signals per call edge and window; header required,
               a blank cell is "not measured": time (end of the window,
               unix s), source, destination, window_s, requests,
               error_ratio (0..1), latency_ms_avg, latency_ms_p50,
               latency_ms_p90, latency_ms_p99, destination_version,
               reporter (source | destination; blank = destination)
resources.csv  time,service,metric,value (long format; several pods of
               one service may share a time)
topology.csv   source,destination (call edges, caller -> callee)
changes.csv    time,service,kind,detail (deploy, config, scale, ...)
truth.json     {"root_cause": "<service>", "fault_type": "<text>"}:
               read by the scorer only, never by an analysis

Unknown files and columns are ignored; service names are free text. The
specification: baynet/bundles/format.py and the README.""",
                         no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
stack_app = typer.Typer(help="Start and stop the local stack (Prefect server + worker, moto SQS/S3, Tempo-compatible "
                             "server, Prometheus, listener, report pages) on 127.0.0.1.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
from baynet.detector.cli import detect_app  # noqa: E402 (typer only; the detector loads on use)

app.add_typer(detect_app, name="detect")


def _serve_until_interrupted(server) -> None:
    """Block until Ctrl-C, then stop ``server`` (anything with ``stop()``)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def _err(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _logging(verbose: bool) -> None:
    # No phoning home from Prefect's temporary server or GX (and their heartbeats race SQLite at start-up).
    for key, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("GX_ANALYTICS_ENABLED", "False"),
                       ("DO_NOT_TRACK", "1")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in ("baynet", "flows", "tasks"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)


def _read_events(file: Path) -> tuple[bytes, list[Any]]:
    """The message body in ``file`` ('-': stdin) and its events; exit 2 naming what is wrong."""
    from baynet.events import EventError, parse_message

    try:
        body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
    try:
        return body, parse_message(body)
    except EventError as exc:
        _err(str(exc))
    raise AssertionError("unreachable")


@event_app.command("check")
def event_check(file: Path = typer.Argument(..., help="A message body (JSON) as it would arrive on the queue; "
                                                      "'-' reads standard input.")) -> None:
    """Print the normalised event(s) as JSON lines, or exit 2 naming the field and value that are wrong."""
    _, events = _read_events(file)
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
        _err("no queue: pass --queue-url or set BAYNET_SQS_QUEUE_URL")
    body, events = _read_events(file)
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
        _err(f"cannot read {file}: {exc.strerror}")
    except TempoParseError as exc:
        _err(f"{file}: {exc}")
    if not spans:
        typer.echo(f"{file}: a {kind} body with no spans", err=True)
    keys = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns", "status",
            "http_status")
    for span in spans:
        typer.echo(json.dumps({k: getattr(span, k) for k in keys}))


@tempo_app.command("serve")
def tempo_serve(directory: Path = typer.Argument(..., help="Directory of OTLP JSON trace files."),
                host: str = typer.Option("127.0.0.1", help="Address to listen on."),
                port: int = typer.Option(3200, help="Port (Tempo's default is 3200)."),
                max_trace_bytes: int = typer.Option(50 * 1024 * 1024, help="Traces larger than this get 422 "
                                                                           "on v1 and PARTIAL on v2.")) -> None:
    """Serve traces with Tempo's HTTP API (search, traces v1/v2, tags, ready) until interrupted."""
    from baynet.tempo.server import TempoServer, TraceStore

    store = TraceStore()
    n = store.load_dir(directory)
    server = TempoServer(store, host=host, port=port, max_trace_bytes=max_trace_bytes).start()
    typer.echo(f"serving {n} traces from {directory} at {server.url} (Ctrl-C to stop)")
    _serve_until_interrupted(server)


@app.command("generate")
def generate_cmd(out: Path = typer.Argument(..., help="Directory to write the incident to."),
                 mesh: str = typer.Option("sock-shop", help="sock-shop or petclinic."),
                 service: str = typer.Option("carts", help="Service to inject the fault into."),
                 fault: str = typer.Option("latency", help="latency, errors or gray."),
                 minutes_ago: float = typer.Option(5.0, help="When the fault started."),
                 traffic: float = typer.Option(1.0, help="Request-rate multiplier: the same incident at 1x, 10x, "
                                               "100x the load (0 < x <= 1000)."),
                 seed: int = typer.Option(7, help="Random seed.")) -> None:
    """Generate an incident: OTLP traces, Istio series (OpenMetrics), the anomaly event, and the ground
    truth (in truth/, apart from what the model reads)."""
    from baynet.generator import generate, write_incident

    try:
        incident = generate(mesh, service, fault, fault_start=time.time() - 60 * minutes_ago, seed=seed,
                            traffic=traffic)
    except ValueError as exc:
        _err(str(exc))
    paths = write_incident(incident, out)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))


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


def _quiet_terminal() -> None:
    """Terminal log lines from warnings up and without tracebacks (``--verbose`` keeps everything; what
    goes to the Prefect UI is unchanged)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
            handler.setLevel(max(handler.level, logging.WARNING))


def _operational_failure(exc: BaseException, settings: Any) -> str | None:
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


@app.command("analyse")
def analyse(file: Path = typer.Argument(..., help="An anomaly event message (JSON)."),
            verbose: bool = typer.Option(False, "--verbose", "-v", help="Keep the details and tracebacks.")) -> None:
    """Run the incident flow on one event file, without the queue (uses BAYNET_* settings). An expected
    failure (Tempo unreachable, a bad event, ...) ends with one paragraph saying what to do and exit 1."""
    _logging(verbose)
    from baynet.settings import Settings

    try:
        message = file.read_text()
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
    from flows.incident import incident_rca

    from prefect import tags

    from baynet.events import EventError, parse_message, run_tags

    try:
        labels = run_tags(parse_message(message)[0])
    except EventError:
        labels = []  # the flow's parse step reports what is wrong
    if not verbose:
        _quiet_terminal()
    try:
        with tags(*labels):
            result = incident_rca(message)
    except Exception as exc:
        paragraph = _operational_failure(exc, Settings())
        if paragraph is None or verbose:
            raise
        _err(f"analysis of {file} failed: {paragraph} (--verbose shows the details)",
             2 if isinstance(exc, EventError) else 1)
    _print_result(result)


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
    _logging(verbose)
    from baynet.settings import Settings

    settings = Settings()
    if concurrency is not None:
        if concurrency < 1:
            _err(f"--concurrency must be at least 1, got {concurrency}")
        settings.concurrency = concurrency
    if not settings.sqs_queue_url:
        _err("BAYNET_SQS_QUEUE_URL is not set")
    outcomes = run_consumer(settings, max_messages=max_messages, idle_polls=idle_polls, retry_after=retry_after,
                            deployment=deployment)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    typer.echo(json.dumps(counts))


def run_consumer(settings: Any, *, max_messages: int | None, idle_polls: int | None, retry_after: int = 30,
                 on_outcome: Any = None, deployment: str | None = None) -> list[Any]:
    import boto3

    from baynet.artifacts import make_store
    from baynet.sqs import Consumer
    from baynet.state import Claims

    sqs = boto3.client("sqs", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region)
    store = make_store(settings)

    def handler(event: Any) -> Any:
        try:  # kept for backfills by time range; the analysis does not depend on it
            store.archive_event(event)
        except Exception as exc:
            logging.getLogger("baynet.cli").warning("could not archive event %s: %s", event.id, exc)
        if deployment:
            from baynet.dispatch import trigger_and_wait

            return trigger_and_wait(deployment, event, consumer.current.message_id, consumer.current.receive_count)
        from prefect import tags

        from baynet.events import run_tags
        from flows.incident import incident_rca

        with tags(*run_tags(event)):
            return incident_rca(event.model_dump(mode="json"))

    claims = Claims(store, ttl_s=settings.sqs_visibility_timeout)  # a lease lasts as long as a receive
    consumer = Consumer(
        sqs, settings.sqs_queue_url, handler,
        dlq_url=settings.sqs_dlq_url or None, is_done=store.incident_complete, wait_s=settings.sqs_wait_seconds,
        visibility_s=settings.sqs_visibility_timeout, retry_after_s=retry_after, concurrency=settings.concurrency,
        claim=claims.acquire,
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


def _print_result(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Root causes for the anomaly on {result['service']} (event {result['event_id']})")
    table.add_column("rank", justify="right")
    table.add_column("service")
    table.add_column("P(root cause)", justify="right")
    table.add_column("evidence (incident slices, oldest first)")
    for r in result["ranking"][:10]:
        table.add_row(str(r["rank"]), r["service"], f"{r['posterior']:.3f}", r["evidence"][:160])
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
    if "topology" in fetch:
        console.print(f"topology: {fetch['topology']}")
    console.print(f"artifacts: {Path(result['artifacts']['ranking.json']).parent}")


@app.command("demo")
def demo(workdir: Path = typer.Option(Path("demo-run"), help="Where the generated incident and artifacts go."),
         mesh: str = typer.Option("sock-shop", help="sock-shop or petclinic."),
         service: str = typer.Option("carts", help="Service to inject the fault into."),
         fault: str = typer.Option("latency", help="latency, errors or gray."),
         from_metrics: bool = typer.Option(
             False, "--from-metrics", help="Start from metrics instead of a ready event: the detector, trained on "
             "generated Sock Shop incidents, finds the fault in Prometheus and puts the event on the queue "
             "(default then: a gray failure in PetClinic's vets-service)."),
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Generate an incident, start the local stack (moto SQS, Tempo replay, Prometheus if installed),
    send the anomaly event to the queue and let the consumer run the incident flow on it."""
    _logging(verbose)
    if from_metrics:
        return _demo_from_metrics(workdir, mesh, service, fault)
    from baynet.generator import generate, write_incident
    from baynet.settings import Settings
    from baynet.stack import LocalStack

    started = time.monotonic()

    def step(text: str) -> None:
        typer.echo(f"[{time.monotonic() - started:6.1f}s] {text}", err=True)

    try:
        incident = generate(mesh, service, fault, fault_start=time.time() - 300)
    except ValueError as exc:
        _err(str(exc))
    workdir = workdir.resolve()
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    paths = write_incident(incident, workdir / "incident")
    step(f"generated {len(incident.spans)} spans: {fault} fault in {service} of {mesh}")
    server_log = server_logs_to(workdir / "servers.log")
    with LocalStack(workdir, traces=paths["traces"], openmetrics=paths["openmetrics"]) as stack:
        os.environ.update(stack.env)
        step(f"stack up: SQS {stack.moto.url}, Tempo {stack.tempo.url}, Prometheus "
             f"{stack.prometheus.url if stack.prometheus else '(not installed: topology from traces)'}")
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=paths["event"].read_text())
        step("anomaly event sent to the queue; consumer running the incident flow")
        settings = Settings(sqs_wait_seconds=2)
        outcomes = run_consumer(settings, max_messages=1, idle_polls=3)
        if not outcomes or outcomes[0].result != "analysed":
            _err(f"the event was not analysed: {outcomes[0].detail if outcomes else 'no message received'}", 1)
        event_id = outcomes[0].event_ids[0]
        from baynet.artifacts import LocalStore

        summary = LocalStore(settings.artifacts_dir).get_json(f"incidents/{event_id}/ranking.json")
    result = {"service": summary["event"]["service"], "event_id": event_id, "ranking": summary["ranking"],
              "path": summary["propagation_path"], "fetch": summary["fetch"],
              "artifacts": {"ranking.json": str(settings.artifacts_dir / "incidents" / event_id / "ranking.json")}}
    _print_result(result)
    top = result["ranking"][0]["service"]
    mark = "matches" if top == service else "does NOT match"
    typer.echo(f"injected fault: {fault} in {service} — top root cause {top} {mark} (ground truth read only now, "
               f"from {paths['truth']})")
    run = summary.get("prefect") or {}
    typer.echo(f"report page:  .venv/bin/baynet serve --artifacts {settings.artifacts_dir}   then open "
               f"http://127.0.0.1:8080/baynet")
    typer.echo(f"Prefect run:  {run.get('ui_url') or run.get('flow_run_id') or '(none)'} -- it ran on a temporary "
               "Prefect server, gone now; 'make up' keeps a Prefect UI (http://127.0.0.1:4200)")
    typer.echo(f"server logs:  {server_log}")
    step("done")
    if top != service:
        raise typer.Exit(1)


def server_logs_to(path: Path) -> Path:
    """The local servers' request logs (moto's and the replay servers' werkzeug lines) go to ``path``,
    not to the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    access = logging.getLogger("werkzeug")
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    return path


def _demo_from_metrics(workdir: Path, mesh: str, service: str, fault: str) -> None:
    from baynet.artifacts import LocalStore
    from baynet.detector import demo as metrics_demo
    from baynet.settings import Settings
    from baynet.stack import LocalStack, prometheus_available

    if (mesh, service, fault) == ("sock-shop", "carts", "latency"):  # the trace demo's defaults
        mesh, service, fault = "petclinic", "vets-service", "gray"
    if not prometheus_available():
        _err("the metrics demo reads Prometheus: install Debian's prometheus (make system-deps)")
    started = time.monotonic()

    def step(text: str) -> None:
        typer.echo(f"[{time.monotonic() - started:6.1f}s] {text}", err=True)

    workdir = workdir.resolve()
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    try:
        target, train, paths = metrics_demo.prepare(workdir, mesh=mesh, service=service, fault=fault, step=step)
    except ValueError as exc:
        _err(str(exc))
    with LocalStack(workdir, traces=paths["traces"], openmetrics=paths["openmetrics"]) as stack:
        os.environ.update(stack.env)
        os.environ.update({
            "BAYNET_NAMESPACE": target.namespace, "BAYNET_DETECTOR_STEP_S": str(metrics_demo.STEP_S),
            "BAYNET_DETECTOR_BASELINE_S": str(metrics_demo.REFERENCE_S), "BAYNET_DETECTOR_LOOKBACK_S": "420",
            "BAYNET_DETECTOR_WARMUP_WINDOWS": "10"})
        step(f"stack up: Prometheus {stack.prometheus.url}, SQS {stack.moto.url}, Tempo {stack.tempo.url}")
        settings = Settings(sqs_wait_seconds=2)
        store = LocalStore(settings.artifacts_dir)
        metrics_demo.train_from_prometheus(stack.prometheus.url, store, train, step)
        from flows.detect import detect_anomalies

        detected = detect_anomalies(end=target.fault_start + metrics_demo.AFTER_S)
        firing = [e for e in detected["events"] if e["data"]["status"] == "firing"]
        step(f"detector: {len(firing)} firing event(s) on the queue "
             f"({', '.join(e['data']['service'] + ' ' + e['data']['event_type'] for e in firing) or 'none'}); "
             f"top scores {detected['top_scores'][:3]}")
        if not firing:
            _err("the detector found no anomaly in the metrics", 1)
        outcomes = run_consumer(settings, max_messages=len(detected["events"]), idle_polls=3)
        analysed = [o for o in outcomes if o.result == "analysed"]
        if not analysed:
            _err(f"no event was analysed: {[o.detail for o in outcomes]}", 1)
        analyses = []
        for o in analysed:
            summary = store.get_json(f"incidents/{o.event_ids[0]}/ranking.json")
            analyses.append((summary.get("event", {}).get("score") or 0.0, o, summary))
            step(f"event on {summary['event']['service']} analysed: top root cause {summary['ranking'][0]['service']}")
        # The incident is the strongest anomaly the detector raised; a weaker one beside it (a traffic blip
        # elsewhere) is reported above but does not stand for the incident.
        _, o, summary = max(analyses, key=lambda a: a[0])
        tops = [summary["ranking"][0]["service"]]
        _print_result({"service": summary["event"]["service"], "event_id": o.event_ids[0],
                       "ranking": summary["ranking"], "path": summary["propagation_path"], "fetch": summary["fetch"],
                       "artifacts": {"ranking.json": str(settings.artifacts_dir / "incidents" / o.event_ids[0]
                                                         / "ranking.json")}})
    first = tops[0]
    mark = "matches" if first == service else "does NOT match"
    typer.echo(f"injected: {fault} in {service} of {mesh} — detected from metrics; top root cause {first} {mark} "
               f"(ground truth read only now, from {paths['truth']})")
    if first != service:
        raise typer.Exit(1)


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
    _logging(verbose)
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
            _err(f"--{name} must be an ISO 8601 time, got {value!r}")

    if events_file is not None and not events_file.is_file():
        _err(f"{events_file} is not a file")
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
            _err(f"backfill failed: {exc}", 1)
        finally:
            bf.PROGRESS_HOOK = None
    typer.echo(json.dumps(counts))
    if counts.get("failed"):
        raise typer.Exit(1)


@stack_app.command("up")
def stack_up_cmd(
        workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="Data, logs and state of the stack."),
        traces: Optional[Path] = typer.Option(None, help="OTLP JSON traces for the Tempo-compatible server "
                                                         "(default: a generated sock-shop incident)."),
        openmetrics: Optional[Path] = typer.Option(None, help="Istio series (OpenMetrics) to backfill Prometheus "
                                                              "with (default: the generated incident's)."),
        prefect_port: int = typer.Option(4200, help="Prefect server and UI."),
        sqs_port: int = typer.Option(5000, help="moto (SQS and S3)."),
        tempo_port: int = typer.Option(3200, help="Tempo-compatible server."),
        prometheus_port: int = typer.Option(9090, help="Prometheus (started when installed)."),
        report_port: int = typer.Option(8080, help="baynet serve (incident reports)."),
        workers: int = typer.Option(1, help="Prefect workers on the 'baynet' work pool."),
        refresh_interval: Optional[int] = typer.Option(None, help="Seconds between topology refreshes "
                                                                  "(default: prefect.yaml's)."),
        listener: bool = typer.Option(True, help="Run `baynet listen --deployment incident-rca/incident-rca`.")
) -> None:
    """Start everything as background processes; print the URLs and the env file to source."""
    from baynet.stack import stack_up

    workdir = workdir.resolve()
    if traces is None:
        from baynet.generator import generate, write_incident

        paths = write_incident(generate("sock-shop", "carts", "latency", fault_start=time.time() - 300),
                               workdir / "incident")
        traces, openmetrics = paths["traces"], openmetrics or paths["openmetrics"]
        typer.echo(f"generated a sock-shop incident (latency in carts): send it with\n"
                   f"  baynet event send {paths['event']}", err=True)
    started = time.monotonic()
    try:
        state = stack_up(workdir, traces=traces, openmetrics=openmetrics, prefect_port=prefect_port,
                         sqs_port=sqs_port, tempo_port=tempo_port, prometheus_port=prometheus_port,
                         report_port=report_port, workers=workers, listener=listener,
                         refresh_interval_s=refresh_interval,
                         progress=lambda text: typer.echo(f"[{time.monotonic() - started:5.1f}s] {text}", err=True))
    except (RuntimeError, TimeoutError, OSError) as exc:
        _err(f"stack did not start: {exc} (logs in {workdir / 'logs'})", 1)
    typer.echo(json.dumps({"urls": state["urls"], "env_file": state["env_file"],
                           "processes": {p["name"]: p["pid"] for p in state["processes"]}}, indent=1))
    typer.echo(f"source {state['env_file']} to point baynet and prefect at it; `baynet stack down --dir {workdir}` "
               f"stops it", err=True)


@stack_app.command("down")
def stack_down_cmd(workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="The stack's directory.")
                   ) -> None:
    """Stop exactly the processes `baynet stack up` started in --dir."""
    from baynet.stack import read_state, stack_down

    if read_state(workdir) is None:
        _err(f"no stack recorded in {workdir} (nothing to stop)", 1)
    stopped = stack_down(workdir)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status_cmd(workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="The stack's directory.")
                     ) -> None:
    """Show what the stack in --dir runs, and whether each process is alive."""
    from baynet.stack import _alive, read_state

    state = read_state(workdir)
    if state is None:
        _err(f"no stack recorded in {workdir}", 1)
    for proc in state["processes"]:
        typer.echo(f"{proc['name']:<16} pid {proc['pid']:<8} {'up' if _alive(proc['pid']) else 'DOWN'}  {proc['log']}")
    typer.echo(json.dumps(state["urls"], indent=1))


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
        _err("give --root-cause SERVICE, or --withdraw")
    try:
        record = Confirmations(make_store(Settings())).add(event_id, root_cause, by=by, note=note, withdraw=withdraw)
    except ConfirmationError as exc:
        _err(str(exc))
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
    _logging(verbose)
    from baynet.artifacts import LocalStore, make_store
    from baynet.report import ReportServer
    from baynet.settings import Settings

    if artifacts is not None and not artifacts.is_dir():
        _err(f"--artifacts {artifacts} is not a directory")
    store = LocalStore(artifacts) if artifacts is not None else make_store(Settings())
    try:
        server = ReportServer(store, host, port, token=token, trusted_user_header=trusted_user_header).start()
    except OSError as exc:
        _err(f"cannot listen on {host}:{port}: {exc.strerror}")
    typer.echo(f"Baynet reports at {server.url}/baynet ({len(store.list_incidents())} incidents; Ctrl-C to stop)")
    _serve_until_interrupted(server)


@bundle_app.command("check")
def bundle_check(path: Path = typer.Argument(..., help="The bundle's directory."),
                 as_json: bool = typer.Option(False, "--json", help="Print what the bundle holds as one JSON "
                                              "object.")) -> None:
    """Validate a bundle -- every file, column, type and time order -- and say what it holds; exit 2 naming
    the file, line, column and value of the first problem. Writes nothing."""
    from baynet.bundles import BundleError, check_bundle

    try:
        summary = check_bundle(path)
    except BundleError as exc:
        _err(str(exc))
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
        return
    event = summary.event
    typer.echo(f"bundle {path}: format 1, valid")
    typer.echo(f"  event      {event['id']}: {event['event_type']} on {event['service']} at {event['timestamp']}")
    typer.echo(f"  traces     {summary.trace_files} files, {summary.traces} traces, {summary.spans} spans")
    for name, n in summary.rows.items():
        typer.echo(f"  {name:<14} {n} rows")
    typer.echo(f"  services   {len(summary.services)}" + (f", data from {summary.time_range[0]:.0f} to "
                                                           f"{summary.time_range[1]:.0f}" if summary.time_range else ""))
    typer.echo(f"  truth      {'present (read by the scorer only)' if summary.has_truth else 'absent'}")


@bundle_app.command("replay")
def bundle_replay(path: Path = typer.Argument(..., help="The bundle's directory."),
                  workdir: Optional[Path] = typer.Option(None, help="Keep the stack's files, the backfilled "
                                                         "Prometheus data and the artifacts here."),
                  as_json: bool = typer.Option(False, "--json", help="Print the stored ranking.json (with what "
                                               "was replayed) as one JSON object."),
                  verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Analyse a bundle through the real path: its traces in the Tempo-compatible server, its signals and
    resources backfilled into Debian's Prometheus as Istio and cAdvisor series, its event on SQS, the
    incident flow. Bundles with only traces, only metrics, or both all work. Exit 2 for a bad bundle."""
    from baynet.bundles import BundleError
    from baynet.bundles.replay import replay

    _logging(verbose)
    logging.getLogger("prefect").setLevel(logging.WARNING if not verbose else logging.INFO)
    try:
        summary = replay(path, workdir, step=lambda line: typer.echo(line, err=True))
    except (BundleError, ValueError) as exc:
        _err(str(exc))
    except RuntimeError as exc:
        _err(str(exc), 1)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_result({"service": summary["event"]["service"], "event_id": summary["event"]["id"],
                   "ranking": summary["ranking"], "path": summary["propagation_path"], "fetch": summary["fetch"],
                   "artifacts": {"ranking.json": str(Path(summary["replay"]["workdir"]) / "artifacts" / "incidents"
                                                 / summary["event"]["id"] / "ranking.json")}})
    for line in summary["replay"]["not_replayed"]:
        typer.echo(f"  not replayed: {line}")


@bundle_app.command("export")
def bundle_export(event: Path = typer.Option(..., "--event", help="The incident's anomaly event (JSON)."),
                  out: Path = typer.Option(..., "--out", help="The bundle directory to write (must not exist or "
                                           "be empty).")) -> None:
    """Write the bundle of a real incident from the configured Tempo (BAYNET_TEMPO_URL) and Prometheus
    (BAYNET_PROMETHEUS_URL): the traces and metric series of the windows the analysis reads, the topology,
    the event. Add a truth.json yourself once the cause is known."""
    from baynet.bundles.replay import export

    if not event.is_file():
        _err(f"no event file at {event}")
    try:
        written = export(event, out, step=lambda line: typer.echo(line, err=True))
    except ValueError as exc:
        _err(str(exc))
    typer.echo(f"bundle {out}: " + ", ".join(f"{k} {v}" for k, v in written.items()))


@bundle_app.command("from-nezha")
def bundle_from_nezha(path: Path = typer.Argument(..., help="A dataset in the Nezha layout (<day>/fault_list.json, "
                                                            "<day>/trace/, <day>/metric/, normal/<day>/trace/)."),
                      out: Path = typer.Argument(..., help="Where to write one bundle per fault (must not hold "
                                                           "them already)."),
                      traces: bool = typer.Option(True, "--traces/--no-traces", help="Include the spans (the "
                                                  "fault's and the normal phase as baseline) as traces/.")) -> None:
    """Convert every fault of a Nezha-layout dataset into a bundle: spans as traces/, per-pod metrics as
    resources.csv, per-pod and entry latency/workload and per-edge p50 latencies as signals.csv, call edges as
    topology.csv, the fault as truth.json. Faults are placed where their spans are (as `eval nezha` does)."""
    from baynet.datasets.convert import ConvertError, from_nezha

    try:
        written = from_nezha(path, out, traces=traces, progress=lambda line: typer.echo(line, err=True))
    except (ConvertError, FileNotFoundError, ValueError) as exc:
        _err(str(exc))
    typer.echo(f"{len(written)} bundles in {out}")


@bundle_app.command("from-rcd")
def bundle_from_rcd(path: Path = typer.Argument(..., help="An RCD dataset: <service>-<fault>/<rep>/{normal,anomalous}.csv"),
                    out: Path = typer.Argument(..., help="Where to write one bundle per case.")) -> None:
    """Convert every RCD case into a metrics-only bundle: <container>_cpu/_mem as resources.csv,
    <svc>_lod and <svc>_lat_50/90/99 as 1 s signals.csv rows; the normal recording moved to end just before the
    anomalous one."""
    from baynet.datasets.convert import ConvertError, from_rcd

    try:
        written = from_rcd(path, out, progress=lambda line: typer.echo(line, err=True))
    except (ConvertError, FileNotFoundError, ValueError) as exc:
        _err(str(exc))
    typer.echo(f"{len(written)} bundles in {out}")


@bundle_app.command("rollouts")
def bundle_rollouts(out: Path = typer.Argument(..., help="Where to write the bundles (must not hold them)."),
                    mesh: str = typer.Option("sock-shop", help="A generator mesh: sock-shop or petclinic."),
                    seeds: str = typer.Option("1,2,3", help="Comma-separated seeds: one incident per service "
                                              "and seed.")) -> None:
    """Generate rollout incidents as bundles: in each, a new version of one service fails its calls while
    two other services roll out harmless new versions nearby (signals.csv with destination_version,
    changes.csv, truth.json). For `baynet eval bundles`."""
    from baynet.datasets.rollouts import rollout_bundles
    from baynet.generator import MESHES

    if mesh not in MESHES:
        _err(f"unknown mesh {mesh!r}; choose one of {', '.join(MESHES)}")
    try:
        numbers = tuple(int(x) for x in seeds.split(",") if x.strip())
    except ValueError:
        _err(f"--seeds takes comma-separated integers, not {seeds!r}")
    try:
        written = rollout_bundles(out, mesh, numbers)
    except FileExistsError as exc:
        _err(f"{exc.filename} exists: choose an empty output directory")
    typer.echo(f"{len(written)} bundles in {out}")


@eval_app.command("bundles")
def eval_bundles(paths: list[Path] = typer.Argument(..., help="Directories holding bundles (any depth; a "
                                                             "directory with event.json is one bundle)."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object: overall, by_type, "
                                              "by_directory, cases, skipped, seconds_per_case, baselines."),
                 sources: str = typer.Option("traces,metrics", "--sources", help="Evidence to use where the "
                                             "bundle has it: traces, metrics, or traces,metrics (both, fused; "
                                             "the default)."),
                 replayed: bool = typer.Option(False, "--replay", help="Analyse each bundle through `bundle "
                                               "replay` (Tempo, Prometheus, SQS, the incident flow; ~30 s per "
                                               "bundle) instead of in-process; the in-process ranking is scored "
                                               "beside it as 'in-process'."),
                 online: bool = typer.Option(False, "--online", help="Also replay each directory's bundles in "
                                             "time order through one persistent model, confirming each true "
                                             "cause after its ranking is recorded (as an operator would): "
                                             "accuracy with and without learning from confirmations, and "
                                             "over the first and second half ('online' in --json).")) -> None:
    """Analyse every bundle (in-process by default: the incident flow's evidence, model and inference steps
    on the bundle's files; --replay: through the real path) and score it against its truth.json, which only
    the scorer reads. Prints AC@1/3/5 and
    Avg@5 overall, per fault type and per directory, the true service's rank per case, seconds per case,
    and baselines on the same data: BARO- and MicroRank-style where there are traces; for metrics the
    service whose error ratio rose most, whose latency rose most, and random. A broken bundle is listed
    as skipped, not fatal."""
    from rich.console import Console
    from rich.progress import Progress

    from baynet.evaluate import evaluate_bundles, find_bundles

    use = {s.strip() for s in sources.split(",") if s.strip()}
    if not use or use - {"traces", "metrics"}:
        _err(f"--sources takes traces, metrics or traces,metrics, not {sources!r}")
    try:
        total = len(find_bundles(paths))
    except FileNotFoundError as exc:
        _err(str(exc))
    if not total:
        _err("no bundle (a directory with event.json) under " + ", ".join(map(str, paths)))
    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task("bundles", total=total)
        result = evaluate_bundles(paths, sources=use, replayed=replayed,
                                  progress=lambda line: bar.update(task, advance=1, description=line[:60]))
        if online:
            from baynet.evaluate import evaluate_online

            task = bar.add_task("online", total=total)
            result["online"] = evaluate_online(paths, sources=use, progress=lambda line: bar.update(
                task, advance=1, description=line[:60]))
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_bundle_eval(result)
    if online:
        _print_online(result["online"])


def _print_online(online: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Online (in time order): learning = each true cause confirmed after its ranking; "
                        "static = never")
    for col in ("set", "n", "AC@1 learning/static", "Avg@5 learning/static", "AC@1 1st→2nd half (L | S)"):
        table.add_column(col)
    for name, part in [*online["by_directory"].items(), ("pooled", online)]:
        h = part["halves"]
        table.add_row(Path(name).name or name, str(part["learning"]["n"]),
                      f"{part['learning']['AC@1']:.2f} / {part['static']['AC@1']:.2f}",
                      f"{part['learning']['Avg@5']:.2f} / {part['static']['Avg@5']:.2f}",
                      f"{h['learning'][0]['AC@1']:.2f}→{h['learning'][1]['AC@1']:.2f} | "
                      f"{h['static'][0]['AC@1']:.2f}→{h['static'][1]['AC@1']:.2f}")
    Console().print(table)


def _accuracy_table(title: str, part: dict[str, Any]) -> Any:
    """AC@1/3/5 and Avg@5 of Baynet and each baseline, overall and per fault type, as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "scope", "n", "AC@1", "AC@3", "AC@5", "Avg@5"):
        table.add_column(col, justify="left" if col in ("method", "scope") else "right")

    def add(method: str, scope: str, m: dict[str, float]) -> None:
        table.add_row(method, scope, str(m["n"]), *(f"{m[k]:.2f}" for k in ("AC@1", "AC@3", "AC@5", "Avg@5")))

    add("baynet", "overall", part["overall"])
    for t, m in part["by_type"].items():
        add("baynet", t, m)
    for name, b in part["baselines"].items():
        add(name, "overall", b["overall"])
        for t, m in b["by_type"].items():
            add(name, t, m)
    return table


def _print_bundle_eval(result: dict[str, Any]) -> None:
    from rich.console import Console

    table_of = _accuracy_table
    console = Console()
    directories = result.get("by_directory", {})
    for d, part in directories.items():
        console.print(table_of(f"Root-cause accuracy on bundles (service level): {d}", part))
        typer.echo(f"seconds per case: {part['seconds_per_case']:.2f}")
    if len(directories) != 1:
        console.print(table_of("Root-cause accuracy on bundles (service level): all", result))
    typer.echo(f"seconds per case: {result['seconds_per_case']:.2f}; skipped: {len(result['skipped'])}")
    typer.echo("rank of the true service per case (baynet; baselines):")
    for c in result["cases"]:
        others = ", ".join(f"{m} {r or '-'}" for m, r in c["ranks"].items() if m != "baynet")
        typer.echo(f"  {c['case']:<40} {c['truth']:<28} {c['rank'] or '-':>3} of {c['candidates']}  ({others})")
    for s in result["skipped"]:
        typer.echo(f"  skipped {s['case']}: {s['reason']}")


@eval_app.command("nezha")
def eval_nezha(paths: list[Path] = typer.Argument(..., help="One or more directories in the Nezha layout "
                                                           "(<day>/fault_list.json, <day>/trace/, normal/<day>/trace/), "
                                                           "one per mesh."),
               as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout: with one "
                                            "dataset its result; with several {\"meshes\": {name: result}, "
                                            "\"pooled\": result}."),
               cases: Optional[int] = typer.Option(None, "--cases", help="Only the first N faults with traces "
                                                   "of each dataset."),
               synthetic: int = typer.Option(-1, "--synthetic", help="Semi-synthetic incidents per mesh, made from "
                                             "its normal phase (a delay, errors or missing calls at one service), "
                                             "reported beside the real faults: -1 all (the default), 0 none."),
               workdir: Optional[Path] = typer.Option(None, help="Keep the stack's files and artifacts here."),
               online: bool = typer.Option(False, "--online", help="Also the operator's loop per mesh (all its faults, "
                                           "whatever --cases says): its faults "
                                           "as bundles, in time order, through one persistent model, the true "
                                           "cause confirmed after each ranking is recorded, beside the same "
                                           "without confirmations (in-process, as `eval bundles --online`)."),
               verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Replay each fault through the Tempo-compatible server, SQS and the real incident flow; print per
    mesh (and pooled over several) AC@1/3/5 and Avg@5 overall and per fault type beside BARO-, MicroRank-style
    and random baselines, the rank of the true service per case, seconds per case, and which faults were
    re-located (their listed times disagree and the spans follow the other one) or skipped."""
    _logging(verbose)
    logging.getLogger("baynet").setLevel(logging.WARNING if not verbose else logging.DEBUG)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    from rich.console import Console
    from rich.progress import Progress

    from baynet.datasets.nezha import list_cases
    from baynet.evaluate import evaluate_meshes, evaluate_nezha, mesh_names

    total = 0
    for path in paths:
        if not path.is_dir():
            _err(f"{path} is not a directory")
        try:
            with_spans = sum(bool(c.trace_files) for c in list_cases(path))
        except (FileNotFoundError, ValueError) as exc:
            _err(str(exc))
        total += min(with_spans, cases) if cases is not None else with_spans
    console = Console(stderr=True)
    limit = None if synthetic < 0 else synthetic
    with Progress(console=console, transient=False) as bar:
        task = bar.add_task("faults", total=total)
        made = bar.add_task("semi-synthetic", total=None, visible=synthetic != 0)

        def step(line: str) -> None:
            if " synthetic " in line:  # "[i/n] synthetic ...": n is known once a mesh's cases are made
                done, of = line[1:line.index("]")].split("/")
                bar.update(made, completed=int(done) if done != of else int(of), total=int(of),
                           description=line[:60])
            else:
                bar.update(task, advance=1, description=line[:60])
            if verbose:
                console.print(line)

        if len(paths) == 1:
            result = evaluate_nezha(paths[0], max_cases=cases, synthetic=limit, progress=step, workdir=workdir)
        else:
            result = evaluate_meshes(paths, max_cases=cases, synthetic=limit, progress=step, workdir=workdir)
        if online:
            import tempfile

            from baynet.datasets.convert import from_nezha
            from baynet.evaluate import evaluate_online

            loop = bar.add_task("online", total=None)
            for name, path in zip(mesh_names(paths), paths):
                with tempfile.TemporaryDirectory(prefix="baynet-online-") as tmp:
                    from_nezha(path, Path(tmp) / name)
                    found = evaluate_online([Path(tmp) / name], progress=lambda line: bar.update(
                        loop, description=line[:60]))
                found["by_directory"] = {name: part for part in found["by_directory"].values()}
                (result if len(paths) == 1 else result["meshes"][name])["online"] = found
    if as_json:
        typer.echo(json.dumps(result))
        return
    if len(paths) == 1:
        _print_eval(result, mesh_names(paths)[0])
        if online:
            _print_online(result["online"])
        return
    for name, mesh in result["meshes"].items():
        _print_eval(mesh, name)
        if online:
            _print_online(mesh["online"])
    _print_eval(result["pooled"], "pooled over " + ", ".join(result["meshes"]), cases_too=False)


def _print_eval(result: dict[str, Any], title: str, cases_too: bool = True) -> None:
    from rich.console import Console

    Console().print(_accuracy_table(f"Root-cause accuracy (service level): {title}", result))
    if "synthetic" in result:
        _print_eval({**result["synthetic"], "relocated": []}, f"{title}, semi-synthetic (normal traces, one "
                    f"injected fault each)", cases_too=False)
    typer.echo(f"seconds per case: {result['seconds_per_case']:.2f}; skipped: {len(result['skipped'])}; "
               f"re-located: {len(result['relocated'])}")
    if cases_too:
        typer.echo("rank of the true service per case (baynet / baro / microrank, of N candidates):")
        for c in result["cases"]:
            r = c["ranks"]
            typer.echo(f"  {c['case']:<40} {c['truth']:<28} {r['baynet'] or '-':>3} / {r['baro'] or '-':>3} / "
                       f"{r['microrank'] or '-':>3}  of {c['candidates']}")
    for s in result["relocated"]:
        typer.echo(f"  re-located {s['case']}: {s['reason']}")
    for s in result["skipped"]:
        typer.echo(f"  skipped {s['case']}: {s['reason']}")


if __name__ == "__main__":
    app()
