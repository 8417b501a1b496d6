"""``baynet bundle …``: check, replay, export, convert and generate incident bundles."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from baynet.cli.common import fail, incident_runner, print_result, setup_logging

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
        fail(str(exc))
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
    from baynet.local.replay import replay

    setup_logging(verbose)
    logging.getLogger("prefect").setLevel(logging.WARNING if not verbose else logging.INFO)
    try:
        summary = replay(path, incident_runner, workdir, step=lambda line: typer.echo(line, err=True))
    except (BundleError, ValueError) as exc:
        fail(str(exc))
    except RuntimeError as exc:
        fail(str(exc), 1)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    print_result({"service": summary["event"]["service"], "event_id": summary["event"]["id"], "headline": summary.get("headline"),
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
    from baynet.bundles.export import export
    from baynet.bundles.write import BundleExists
    from baynet.settings import Settings

    if not event.is_file():
        fail(f"no event file at {event}")
    try:
        written = export(event, out, Settings(), step=lambda line: typer.echo(line, err=True))
    except (ValueError, BundleExists) as exc:
        fail(str(exc))
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
    from baynet.bundles.write import BundleExists
    from baynet.lab.datasets.convert import ConvertError, from_nezha

    try:
        written = from_nezha(path, out, traces=traces, progress=lambda line: typer.echo(line, err=True))
    except (ConvertError, BundleExists, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"{len(written)} bundles in {out}")


@bundle_app.command("from-rcd")
def bundle_from_rcd(path: Path = typer.Argument(..., help="An RCD dataset: <service>-<fault>/<rep>/{normal,anomalous}.csv"),
                    out: Path = typer.Argument(..., help="Where to write one bundle per case.")) -> None:
    """Convert every RCD case into a metrics-only bundle: <container>_cpu/_mem as resources.csv,
    <svc>_lod and <svc>_lat_50/90/99 as 1 s signals.csv rows; the normal recording moved to end just before the
    anomalous one."""
    from baynet.bundles.write import BundleExists
    from baynet.lab.datasets.convert import ConvertError, from_rcd

    try:
        written = from_rcd(path, out, progress=lambda line: typer.echo(line, err=True))
    except (ConvertError, BundleExists, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"{len(written)} bundles in {out}")


@bundle_app.command("rollouts")
def bundle_rollouts(out: Path = typer.Argument(..., help="Where to write the bundles (must not hold them)."),
                    mesh: str = typer.Option("sock-shop", help="A generator mesh: sock-shop or petclinic."),
                    seeds: str = typer.Option("", help="Comma-separated seeds, or a range A-B. Hard family: one "
                                              "incident per seed, with and without request counts (default "
                                              "1-50: 100 bundles). Easy family: one per service and seed "
                                              "(default 1,2,3).", show_default=False),
                    easy: bool = typer.Option(False, "--easy", help="The easy family instead: one bad deploy "
                                              "whose new version fails 60 % of its calls, two harmless "
                                              "rollouts nearby.")) -> None:
    """Generate rollout incidents as bundles, for `baynet eval bundles`.

    The hard family (default): 2-6 services roll out v2 in canary steps (1/5 ... 5/5) within ten minutes of
    one another; one is bad, its effect drawn from subtle to blatant (+2-20 % errors, +30-300 % latency, a
    CPU or memory leak, exceptions only in its log); every rollout has harmless noise (a fresh pod's
    cold start, a draining pod's errors); versions side by side in signals.csv, CPU and memory per pod in
    resources.csv, the alert 30-240 s after the bad rollout began. truth.json records the effect, its size,
    whether it is clear (>= +5 % errors, +50 % latency, ...) and the counts variant."""
    from baynet.lab.datasets.rollouts import hard_rollout_bundles, rollout_bundles
    from baynet.lab.generator import MESHES

    if mesh not in MESHES:
        fail(f"unknown mesh {mesh!r}; choose one of {', '.join(MESHES)}")
    text = seeds.strip() or ("1,2,3" if easy else "1-50")
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            if hi < lo:
                raise ValueError(text)
            numbers = tuple(range(lo, hi + 1))
        else:
            numbers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        fail(f"--seeds takes comma-separated integers or a range A-B, not {seeds!r}")
    if not numbers:
        fail(f"--seeds names no seed: {seeds!r}")
    try:
        if easy:
            written = rollout_bundles(out, mesh, numbers)
        else:
            written = hard_rollout_bundles(out, mesh, numbers,
                                           progress=lambda k, n: typer.echo(f"[{k}/{n}] written", err=True)
                                           if k % 10 == 0 or k == n else None)
    except FileExistsError as exc:
        fail(f"{exc.filename or exc}")
    typer.echo(f"{len(written)} bundles in {out}")
