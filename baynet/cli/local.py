"""The local stack: the demo, ``baynet stack up/down/status`` (every server on 127.0.0.1 as background
processes), the Tempo-compatible server on its own, and the incident generator."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from baynet.cli.common import fail, incident_runner, print_result, serve_until_interrupted, setup_logging
from baynet.cli.operations import tempo_app

stack_app = typer.Typer(help="Start and stop the local stack (Prefect server + worker, moto SQS/S3, Tempo-compatible "
                             "server, Prometheus, listener, report pages) on 127.0.0.1.", no_args_is_help=True)
app = typer.Typer()  # the top-level commands of this group, merged into ``baynet``
loki_app = typer.Typer(help="Serve logs with Loki's HTTP API (the local stand-in).", no_args_is_help=True)


@loki_app.command("serve")
def loki_serve(logs: Optional[Path] = typer.Option(None, help="A logs.csv (the bundle's columns) to load."),
               namespace: str = typer.Option("default", help="The namespace label of the loaded lines."),
               host: str = typer.Option("127.0.0.1", help="Address to listen on."),
               port: int = typer.Option(3100, help="Port (Loki's default is 3100)."),
               require_org_id: bool = typer.Option(False, help="Answer 401 'no org id' without X-Scope-OrgID, as "
                                                   "a multi-tenant Loki does.")) -> None:
    """Serve pushed (and --logs) lines with Loki's push, query_range, labels and ready endpoints until
    interrupted."""
    from baynet.local.loki import LokiServer, push_logs

    if logs is not None and not logs.is_file():
        fail(f"no logs file at {logs}")
    server = LokiServer(host=host, port=port, require_org_id=require_org_id).start()
    n = 0
    if logs is not None:
        import pandas as pd

        n = push_logs(server.url, pd.read_csv(logs, dtype=str, keep_default_na=False), namespace)
    typer.echo(f"serving {n} lines at {server.url} (Ctrl-C to stop)")
    serve_until_interrupted(server)


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
    setup_logging(verbose)
    if from_metrics:
        return _demo_from_metrics(workdir, mesh, service, fault)
    from baynet.consumer import run_consumer
    from baynet.lab.generator import generate, write_incident
    from baynet.local.stack import LocalStack, server_logs_to

    started = time.monotonic()

    def step(text: str) -> None:
        typer.echo(f"[{time.monotonic() - started:6.1f}s] {text}", err=True)

    try:
        incident = generate(mesh, service, fault, fault_start=time.time() - 300)
    except ValueError as exc:
        fail(str(exc))
    workdir = workdir.resolve()
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    paths = write_incident(incident, workdir / "incident")
    step(f"generated {len(incident.spans)} spans: {fault} fault in {service} of {mesh}")
    server_log = server_logs_to(workdir / "servers.log")
    # Tempo and Loki stand-ins in processes of their own, as the real servers are: the analysis here
    # does not share this interpreter's lock with them (measured in the README, "The demo's analysis").
    with LocalStack(workdir, traces=paths["traces"], openmetrics=paths["openmetrics"], logs=paths["logs"],
                    namespace=incident.namespace, apart=True) as stack:
        step(f"stack up: SQS {stack.moto.url}, Tempo {stack.tempo.url}, Loki {stack.loki.url}, Prometheus "
             f"{stack.prometheus.url if stack.prometheus else '(not installed: topology from traces)'}")
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=paths["event"].read_text())
        step("anomaly event sent to the queue; consumer running the incident flow")
        settings = stack.settings(sqs_wait_seconds=2)
        outcomes = run_consumer(settings, incident_runner, max_messages=1, idle_polls=3)
        if not outcomes or outcomes[0].result != "analysed":
            fail(f"the event was not analysed: {outcomes[0].detail if outcomes else 'no message received'}", 1)
        event_id = outcomes[0].event_ids[0]
        from baynet.artifacts import LocalStore

        summary = LocalStore(settings.artifacts_dir).get_json(f"incidents/{event_id}/ranking.json")
    result = {"service": summary["event"]["service"], "event_id": event_id, "headline": summary.get("headline"),
              "ranking": summary["ranking"],
              "path": summary["propagation_path"], "fetch": summary["fetch"],
              "artifacts": {"ranking.json": str(settings.artifacts_dir / "incidents" / event_id / "ranking.json")}}
    print_result(result)
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


def _demo_from_metrics(workdir: Path, mesh: str, service: str, fault: str) -> None:
    from baynet.artifacts import LocalStore
    from baynet.consumer import run_consumer
    from baynet.lab.detector import demo as metrics_demo
    from baynet.local.stack import LocalStack, prometheus_available
    from flows.detect import detect_anomalies

    if (mesh, service, fault) == ("sock-shop", "carts", "latency"):  # the trace demo's defaults
        mesh, service, fault = "petclinic", "vets-service", "gray"
    if not prometheus_available():
        fail("the metrics demo reads Prometheus: install Debian's prometheus (make system-deps)")
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
        fail(str(exc))
    with LocalStack(workdir, traces=paths["traces"], openmetrics=paths["openmetrics"]) as stack:
        settings = stack.settings(sqs_wait_seconds=2, namespace=target.namespace,
                                  detector_step_s=metrics_demo.STEP_S, detector_baseline_s=metrics_demo.REFERENCE_S,
                                  detector_lookback_s=420, detector_warmup_windows=10)
        step(f"stack up: Prometheus {stack.prometheus.url}, SQS {stack.moto.url}, Tempo {stack.tempo.url}")
        store = LocalStore(settings.artifacts_dir)
        metrics_demo.train_from_prometheus(stack.prometheus.url, store, train, step, settings)
        detected = detect_anomalies(end=target.fault_start + metrics_demo.AFTER_S, settings=settings)
        firing = [e for e in detected["events"] if e["data"]["status"] == "firing"]
        step(f"detector: {len(firing)} firing event(s) on the queue "
             f"({', '.join(e['data']['service'] + ' ' + e['data']['event_type'] for e in firing) or 'none'}); "
             f"top scores {detected['top_scores'][:3]}")
        if not firing:
            fail("the detector found no anomaly in the metrics", 1)
        outcomes = run_consumer(settings, incident_runner, max_messages=len(detected["events"]), idle_polls=3)
        analysed = [o for o in outcomes if o.result == "analysed"]
        if not analysed:
            fail(f"no event was analysed: {[o.detail for o in outcomes]}", 1)
        analyses = []
        for o in analysed:
            summary = store.get_json(f"incidents/{o.event_ids[0]}/ranking.json")
            analyses.append((summary.get("event", {}).get("score") or 0.0, o, summary))
            step(f"event on {summary['event']['service']} analysed: top root cause {summary['ranking'][0]['service']}")
        # The incident is the strongest anomaly the detector raised; a weaker one beside it (a traffic blip
        # elsewhere) is reported above but does not stand for the incident.
        _, o, summary = max(analyses, key=lambda a: a[0])
        tops = [summary["ranking"][0]["service"]]
        print_result({"service": summary["event"]["service"], "event_id": o.event_ids[0], "headline": summary.get("headline"),
                       "ranking": summary["ranking"], "path": summary["propagation_path"], "fetch": summary["fetch"],
                       "artifacts": {"ranking.json": str(settings.artifacts_dir / "incidents" / o.event_ids[0]
                                                         / "ranking.json")}})
    first = tops[0]
    mark = "matches" if first == service else "does NOT match"
    typer.echo(f"injected: {fault} in {service} of {mesh} — detected from metrics; top root cause {first} {mark} "
               f"(ground truth read only now, from {paths['truth']})")
    if first != service:
        raise typer.Exit(1)


@stack_app.command("up")
def stack_up_cmd(
        workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="Data, logs and state of the stack."),
        traces: Optional[Path] = typer.Option(None, help="OTLP JSON traces for the Tempo-compatible server "
                                                         "(default: a generated sock-shop incident)."),
        openmetrics: Optional[Path] = typer.Option(None, help="Istio series (OpenMetrics) to backfill Prometheus "
                                                              "with (default: the generated incident's)."),
        logs: Optional[Path] = typer.Option(None, help="Log lines (logs.csv) for the Loki-compatible server "
                                                       "(default: the generated incident's)."),
        prefect_port: int = typer.Option(4200, help="Prefect server and UI."),
        sqs_port: int = typer.Option(5000, help="moto (SQS and S3)."),
        tempo_port: int = typer.Option(3200, help="Tempo-compatible server."),
        prometheus_port: int = typer.Option(9090, help="Prometheus (started when installed)."),
        loki_port: int = typer.Option(3100, help="Loki-compatible server (started with logs)."),
        report_port: int = typer.Option(8080, help="baynet serve (incident reports)."),
        workers: int = typer.Option(1, help="Prefect workers on the 'baynet' work pool."),
        worker_limit: Optional[int] = typer.Option(None, help="Flow runs each worker runs at once (default: "
                                                              "this machine's cores); more wait scheduled."),
        refresh_interval: Optional[int] = typer.Option(None, help="Seconds between topology refreshes "
                                                                  "(default: prefect.yaml's)."),
        listener: bool = typer.Option(True, help="Run `baynet listen --deployment incident-rca/incident-rca`.")
) -> None:
    """Start everything as background processes; print the URLs and the env file to source."""
    from baynet.local.stack import stack_up

    if worker_limit is not None and worker_limit < 1:
        fail(f"--worker-limit must be at least 1, got {worker_limit}")
    workdir = workdir.resolve()
    if traces is None:
        from baynet.lab.generator import generate, write_incident

        paths = write_incident(generate("sock-shop", "carts", "latency", fault_start=time.time() - 300),
                               workdir / "incident")
        traces, openmetrics = paths["traces"], openmetrics or paths["openmetrics"]
        logs = logs or paths["logs"]
        typer.echo(f"generated a sock-shop incident (latency in carts): send it with\n"
                   f"  baynet event send {paths['event']}", err=True)
    started = time.monotonic()
    try:
        state = stack_up(workdir, traces=traces, openmetrics=openmetrics, logs=logs, prefect_port=prefect_port,
                         sqs_port=sqs_port, tempo_port=tempo_port, prometheus_port=prometheus_port,
                         loki_port=loki_port,
                         report_port=report_port, workers=workers, worker_limit=worker_limit, listener=listener,
                         refresh_interval_s=refresh_interval,
                         progress=lambda text: typer.echo(f"[{time.monotonic() - started:5.1f}s] {text}", err=True))
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(f"stack did not start: {exc} (logs in {workdir / 'logs'})", 1)
    typer.echo(json.dumps({"urls": state["urls"], "env_file": state["env_file"],
                           "processes": {p["name"]: p["pid"] for p in state["processes"]}}, indent=1))
    typer.echo(f"source {state['env_file']} to point baynet and prefect at it; `baynet stack down --dir {workdir}` "
               f"stops it", err=True)


@stack_app.command("down")
def stack_down_cmd(workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="The stack's directory.")
                   ) -> None:
    """Stop exactly the processes `baynet stack up` started in --dir."""
    from baynet.local.stack import read_state, stack_down

    if read_state(workdir) is None:
        fail(f"no stack recorded in {workdir} (nothing to stop)", 1)
    stopped = stack_down(workdir)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status_cmd(workdir: Path = typer.Option(Path(".baynet-stack"), "--dir", help="The stack's directory.")
                     ) -> None:
    """Show what the stack in --dir runs, and whether each process is alive."""
    from baynet.local.stack import _alive, read_state

    state = read_state(workdir)
    if state is None:
        fail(f"no stack recorded in {workdir}", 1)
    for proc in state["processes"]:
        typer.echo(f"{proc['name']:<16} pid {proc['pid']:<8} {'up' if _alive(proc['pid']) else 'DOWN'}  {proc['log']}")
    typer.echo(json.dumps(state["urls"], indent=1))


@tempo_app.command("serve")
def tempo_serve(directory: Path = typer.Argument(..., help="Directory of OTLP JSON trace files."),
                host: str = typer.Option("127.0.0.1", help="Address to listen on."),
                port: int = typer.Option(3200, help="Port (Tempo's default is 3200)."),
                max_trace_bytes: int = typer.Option(50 * 1024 * 1024, help="Traces larger than this get 422 "
                                                                           "on v1 and PARTIAL on v2.")) -> None:
    """Serve traces with Tempo's HTTP API (search, traces v1/v2, tags, ready) until interrupted."""
    from baynet.local.tempo import TempoServer, TraceStore

    store = TraceStore()
    n = store.load_dir(directory)
    server = TempoServer(store, host=host, port=port, max_trace_bytes=max_trace_bytes).start()
    typer.echo(f"serving {n} traces from {directory} at {server.url} (Ctrl-C to stop)")
    serve_until_interrupted(server)


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
    from baynet.lab.generator import generate, write_incident

    try:
        incident = generate(mesh, service, fault, fault_start=time.time() - 60 * minutes_ago, seed=seed,
                            traffic=traffic)
    except ValueError as exc:
        fail(str(exc))
    paths = write_incident(incident, out)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
