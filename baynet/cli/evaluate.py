"""``baynet eval …``: root-cause accuracy on bundles and on datasets in the Nezha layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from baynet.cli.common import fail, incident_runner, setup_logging
from baynet.cli.eval_tables import (
    _print_bundle_eval, _print_by_field, _print_compare, _print_eval, _print_matrix, _print_online,
)

eval_app = typer.Typer(help="Measure root-cause accuracy on public fault-injection data.", no_args_is_help=True)


@eval_app.command("bundles")
def eval_bundles(paths: list[Path] = typer.Argument(..., help="Directories holding bundles (any depth; a "
                                                             "directory with event.json is one bundle)."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object: overall, by_type, "
                                              "by_directory, cases, skipped, seconds_per_case, baselines."),
                 sources: str = typer.Option("all", "--sources", help="Evidence to use where the bundle has "
                                             "it: 'all' (the default: every kind, fused) or a comma-separated "
                                             "list of traces, metrics, logs, changes (e.g. traces,logs)."),
                 replayed: bool = typer.Option(False, "--replay", help="Analyse each bundle through `bundle "
                                               "replay` (Tempo, Prometheus, SQS, the incident flow; ~30 s per "
                                               "bundle) instead of in-process; the in-process ranking is scored "
                                               "beside it as 'in-process'."),
                 degrade: str = typer.Option("as_is", "--degrade", help="Put each bundle into this data shape "
                                             "before the analysis: as_is, resample_1m, resample_5m, no_counts, "
                                             "no_percentiles, no_traces, no_call_graph, alert_earlier, "
                                             "alert_later, foreign_nodes, latency_only (see baynet/lab/degrade.py)."),
                 matrix: bool = typer.Option(False, "--matrix", help="Every directory (one mesh each) in every "
                                             "shape: AC@1 (Avg@5) and the best simple baseline per cell; with "
                                             "--json the keys 'matrix' and 'excluded'."),
                 by: list[str] = typer.Option([], "--by", help="Also break the scores down by this truth.json "
                                              "field (repeatable; e.g. --by clear --by counts on the hard "
                                              "rollouts; 'by_field' in --json)."),
                 online: bool = typer.Option(False, "--online", help="Also replay each directory's bundles in "
                                             "time order through one persistent model, confirming each true "
                                             "cause after its ranking is recorded (as an operator would): "
                                             "accuracy with and without learning from confirmations, and "
                                             "over the first and second half ('online' in --json).")) -> None:
    """Analyse every bundle (in-process by default: the incident flow's evidence, model and inference steps
    on the bundle's files, read up to the incident window's end as the live sources answer the flow, and
    that much further where the analysis looks again; --replay: through the real path) and score it against
    its truth.json, which only the scorer reads. Prints AC@1/3/5 and
    Avg@5 overall, per fault type and per directory, the true service's rank per case, seconds per case,
    and baselines on the same data: BARO- and MicroRank-style where there are traces; for metrics the
    service whose error ratio rose most, whose latency rose most, and random; for logs the service whose
    WARN/ERROR lines rose most; for changes the service changed last. A broken bundle is listed as skipped,
    not fatal."""
    from rich.console import Console
    from rich.progress import Progress

    from baynet.lab.bundle_eval import evaluate_bundles, find_bundles

    from baynet.lab.degrade import SHAPES
    from baynet.sources import KINDS

    if degrade not in SHAPES:
        fail(f"--degrade takes one of {', '.join(SHAPES)}, not {degrade!r}")
    use = None if sources.strip() == "all" else {s.strip() for s in sources.split(",") if s.strip()}
    if use is not None and (not use or use - set(KINDS)):
        fail(f"--sources takes 'all' or a comma-separated list of {', '.join(KINDS)}, not {sources!r}")
    try:
        total = len(find_bundles(paths))
    except FileNotFoundError as exc:
        fail(str(exc))
    if not total:
        fail("no bundle (a directory with event.json) under " + ", ".join(map(str, paths)))
    if matrix:
        from baynet.lab.bundle_eval import evaluate_matrix

        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task("bundles x shapes", total=total)
            result = evaluate_matrix(paths, sources=use, progress=lambda line: bar.update(
                task, advance=1, description=line[:60]))
        if as_json:
            typer.echo(json.dumps(result))
        else:
            _print_matrix(result)
        return
    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task("bundles", total=total)
        result = evaluate_bundles(paths, sources=use, replayed=incident_runner if replayed else None, shape=degrade,
                                  progress=lambda line: bar.update(task, advance=1, description=line[:60]),
                                  by=tuple(by))
        if online:
            from baynet.lab.bundle_eval import evaluate_online

            task = bar.add_task("online", total=total)
            result["online"] = evaluate_online(paths, sources=use, progress=lambda line: bar.update(
                task, advance=1, description=line[:60]))
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_bundle_eval(result)
    if by:
        _print_by_field(result["by_field"])
    if online:
        _print_online(result["online"])


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
                                             "its normal phase (a delay, errors, missing calls, or a network delay "
                                             "on the calls in and out of one service or into it only), reported beside the real faults: -1 all (the default), "
                                             "0 none."),
               workdir: Optional[Path] = typer.Option(None, help="Keep the stack's files and artifacts here."),
               online: bool = typer.Option(False, "--online", help="Also the operator's loop per mesh (all its faults, "
                                           "whatever --cases says): its faults "
                                           "as bundles, in time order, through one persistent model, the true "
                                           "cause confirmed after each ranking is recorded, beside the same "
                                           "without confirmations (in-process, as `eval bundles --online`)."),
               aggregates: bool = typer.Option(False, "--aggregates", help="Also serve each fault's spans as "
                                               "Tempo's metrics-generator series through a Prometheus of its own "
                                               "(Debian's): rates, errors and latencies from them, traces read as "
                                               "a sample (BAYNET_TRACES_SAMPLE_PER_SLICE)."),
               verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Replay each fault through the Tempo-compatible server, SQS and the real incident flow; print per
    mesh (and pooled over several) AC@1/3/5 and Avg@5 overall and per fault type beside BARO-, MicroRank-style
    and random baselines, the rank of the true service per case, seconds per case, and which faults were
    re-located (their listed times disagree and the spans follow the other one) or skipped."""
    setup_logging(verbose)
    logging.getLogger("baynet").setLevel(logging.WARNING if not verbose else logging.DEBUG)
    logging.getLogger("prefect").setLevel(logging.WARNING)
    from rich.console import Console
    from rich.progress import Progress

    from baynet.lab.datasets.nezha import list_cases
    from baynet.lab.harness import evaluate_meshes, evaluate_nezha, mesh_names

    if aggregates:
        from baynet.local.stack import prometheus_available

        if not prometheus_available():
            fail("--aggregates needs Debian's prometheus and promtool (apt-get install -y prometheus)")
    total = 0
    for path in paths:
        if not path.is_dir():
            fail(f"{path} is not a directory")
        try:
            with_spans = sum(bool(c.trace_files) for c in list_cases(path))
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc))
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
            result = evaluate_nezha(paths[0], incident_runner, max_cases=cases, synthetic=limit, progress=step,
                                    workdir=workdir, aggregates=aggregates)
        else:
            result = evaluate_meshes(paths, incident_runner, max_cases=cases, synthetic=limit, progress=step,
                                     workdir=workdir, aggregates=aggregates)
        if online:
            import tempfile

            from baynet.lab.datasets.convert import from_nezha
            from baynet.lab.bundle_eval import evaluate_online

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


@eval_app.command("compare")
def eval_compare(before: Path = typer.Argument(..., help="The run before the change: the JSON of `baynet eval "
                                               "bundles --json` or `baynet eval nezha --json`."),
                 after: Path = typer.Argument(..., help="The run after it, on the same cases."),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object: overall, by_directory, "
                                              "by_type, moved, only_before, only_after, lost."),
                 fail_on_loss: bool = typer.Option(False, "--fail-on-loss", help="Exit 1 when AC@1 fell overall, "
                                                   "on any directory (mesh) or on any fault type.")) -> None:
    """Two evaluation runs case by case: AC@1 and Avg@5 before and after, overall, per directory and per fault
    type, and every case whose true service moved in the ranking. Cases are matched on directory and name;
    those in one run only are listed, not scored. Exit 2 for a file that is not such a run."""
    from baynet.lab.compare import CompareError, compare_runs

    runs = []
    for path in (before, after):
        try:
            runs.append(json.loads(path.read_text()))
        except FileNotFoundError:
            fail(f"no such file: {path}")
        except json.JSONDecodeError as exc:
            fail(f"{path}: not JSON ({exc})")
    try:
        result = compare_runs(*runs)
    except CompareError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result))
    else:
        _print_compare(result)
    if fail_on_loss and result["lost"]:
        raise typer.Exit(1)
