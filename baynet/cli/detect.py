"""``baynet detect …``: evaluate, train and run the gray-failure detector."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from baynet.cli.common import fail

detect_app = typer.Typer(help="The upstream gray-failure detector: metrics -> anomaly events on the queue.",
                         no_args_is_help=True)
DATASETS = ("rcd-sockshop", "nezha")


def _say(quiet: bool):
    def say(line: str) -> None:
        if not quiet:
            typer.echo(f"  {line}", err=True)
    return say


def _cases(dataset: str, path: Path, fault_minutes: float):
    from baynet.lab.detector.datasets import DatasetError, nezha_cases, rcd_cases

    if dataset not in DATASETS:
        fail(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not path.is_dir():
        fail(f"{path} is not a directory")
    try:
        return rcd_cases(path) if dataset == "rcd-sockshop" else nezha_cases(path, fault_s=fault_minutes * 60)
    except DatasetError as exc:
        fail(str(exc))


def _also(specs: list[str], fault_minutes: float) -> dict:
    """``--also-train DATASET=PATH`` options: their cases by spec."""
    extra = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not where:
            fail(f"--also-train wants DATASET=PATH, got {spec!r}")
        extra[spec] = _cases(name, Path(where), fault_minutes)
    return extra


ALSO_HELP = "Add another dataset's cases to the training data: DATASET=PATH. Repeatable."


def _models(models: str) -> tuple[str, ...]:
    from baynet.detector.models import ESTIMATORS, torch_available

    names = tuple(m.strip() for m in models.split(",") if m.strip())
    for m in names:
        if m not in ESTIMATORS:
            fail(f"unknown model {m!r}; choose from {', '.join(ESTIMATORS)}")
    if "lstm" in names and not torch_available():
        fail("the lstm model needs PyTorch: pip install 'baynet[torch]' (or pass --models gbm)")
    return names


@detect_app.command("eval")
def detect_eval(dataset: str = typer.Argument(..., help=f"Dataset layout: {', '.join(DATASETS)}."),
                path: Path = typer.Argument(..., help="The dataset's directory."),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
                models: str = typer.Option("gbm,lstm,zmax", help="Comma-separated models to compare: gbm, lstm, "
                                                                  "zmax (no learning: the largest robust z)."),
                folds: int = typer.Option(5, min=2, max=20, help="Held-out folds (whole groups held out)."),
                fault_minutes: float = typer.Option(5.0, min=0.5, help="Nezha: how long a fault is taken to last."),
                hold_out: str = typer.Option("group", help="What a fold holds out: 'group' (RCD: all runs of one "
                                             "injected service; Nezha: a day) or 'service' (a service's series "
                                             "in every case)."),
                also_train: list[str] = typer.Option([], "--also-train", metavar="DATASET=PATH",
                                                     help=ALSO_HELP + " Added to every training side, never "
                                                                      "scored."),
                transfer: bool = typer.Option(False, help="Train only on the --also-train datasets and score "
                                              "every case of this one (a model from another mesh)."),
                leave_mesh_out: bool = typer.Option(False, "--leave-mesh-out", help="Treat this dataset and each "
                                                    "--also-train one as a mesh; hold out each mesh in turn, "
                                                    "train on the others only, print one row per held-out mesh."),
                false_budget: Optional[float] = typer.Option(None, min=0.0, help="False incidents per mesh-hour "
                                                             "the threshold is chosen for on training data (default: "
                                                             "BAYNET_DETECTOR_FALSE_INCIDENTS_PER_HOUR, 1)."),
                group_windows: Optional[int] = typer.Option(None, min=1, help="Firings this many windows apart or "
                                                            "closer are one incident (default: "
                                                            "BAYNET_DETECTOR_GROUP_WINDOWS, 3)."),
                step: Optional[float] = typer.Option(None, min=1.0, help="Score every dataset at this step at "
                                                     "least, seconds (finer data is averaged per window, as a "
                                                     "scrape at that interval would; the live detector scores at "
                                                     "BAYNET_DETECTOR_STEP_S)."),
                calibrate: bool = typer.Option(True, help="Raise the trained threshold until the scored cases' "
                                               "own reference data (all of them together: one mesh) stays "
                                               "within the false-incident budget (--no-calibrate: the trained "
                                               "threshold as is)."),
                seed: int = typer.Option(0, help="Random state of sampling and models (run a few to see the "
                                                 "spread)."),
                out: Optional[Path] = typer.Option(None, help="Also write the JSON result to this file."),
                quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr.")) -> None:
    """Train on some runs, score runs and services never seen in training; print point-wise precision,
    recall, F1, accuracy, event recall, median detection delay and false alarms per model; as an alert
    source, incident recall and false incidents per mesh-hour (firings grouped into incidents); and the
    threshold tables."""
    from baynet.lab.detector.evaluate import HOLD_OUTS, evaluate, leave_mesh_out as lomo, render, render_leave_mesh_out
    from baynet.settings import Settings

    settings = Settings()
    budget = settings.detector_false_incidents_per_hour if false_budget is None else false_budget
    gap = settings.detector_group_windows if group_windows is None else group_windows
    names = _models(models)
    if hold_out not in HOLD_OUTS:
        fail(f"unknown --hold-out {hold_out!r}; choose one of {', '.join(HOLD_OUTS)}")
    if transfer and not also_train:
        fail("--transfer needs at least one --also-train DATASET=PATH to train on")
    if leave_mesh_out and not also_train:
        fail("--leave-mesh-out needs at least one --also-train DATASET=PATH (a second mesh)")
    extra = _also(also_train, fault_minutes)
    cases = _cases(dataset, path, fault_minutes)
    if step:
        from baynet.detector.series import coarsen

        cases = [coarsen(c, step) for c in cases]
        extra = {k: [coarsen(c, step) for c in v] for k, v in extra.items()}
    typer.echo(f"{dataset}: {len(cases)} cases from {path}", err=True)
    if leave_mesh_out:
        meshes = {path.name or dataset: cases}
        for spec, more in extra.items():
            name = Path(spec.partition("=")[2]).name or spec
            if name in meshes:
                name = spec
            meshes[name] = more
        try:
            result = lomo(meshes, names, random_state=seed, false_budget=budget, gap_windows=gap,
                          calibrate_on_reference=calibrate, progress=_say(quiet))
        except ValueError as exc:
            fail(str(exc))
        if out:
            out.write_text(json.dumps(result, indent=1, default=float))
        typer.echo(json.dumps(result, default=float) if as_json else render_leave_mesh_out(result))
        return
    try:
        result = evaluate(cases, names, folds=folds, hold_out=hold_out, extra=extra, transfer=transfer,
                          random_state=seed, false_budget=budget, gap_windows=gap, calibrate_on_reference=calibrate,
                          progress=_say(quiet))
    except ValueError as exc:
        fail(str(exc))
    result["dataset"] = dataset
    if out:
        out.write_text(json.dumps(result, indent=1, default=float))
    if as_json:
        typer.echo(json.dumps(result, default=float))
    else:
        typer.echo(render(result))


@detect_app.command("train")
def detect_train(dataset: str = typer.Argument(..., help=f"Dataset layout: {', '.join(DATASETS)}."),
                 path: Path = typer.Argument(..., help="The dataset's directory."),
                 model: str = typer.Option("zmax", help="zmax (learns nothing: a service's largest deviation "
                                            "from its own reference; carries over to meshes it never saw), gbm "
                                            "or lstm."),
                 fault_minutes: float = typer.Option(5.0, min=0.5, help="Nezha: how long a fault is taken to last."),
                 also_train: list[str] = typer.Option([], "--also-train", metavar="DATASET=PATH", help=ALSO_HELP),
                 artifacts: Optional[Path] = typer.Option(None, help="Artifact directory (default: BAYNET_* "
                                                                      "settings: local dir or S3)."),
                 quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """Train on every case of the dataset (and of any --also-train ones) and store the model, its
    threshold (chosen on out-of-fold scores for BAYNET_DETECTOR_FALSE_INCIDENTS_PER_HOUR false incidents
    per mesh-hour) and threshold table as a new version in the artifact store
    (``detector/models/<version>/``); ``latest`` points to it."""
    import pandas as pd

    from baynet.artifacts import LocalStore, make_store
    from baynet.detector.models import blocks_from_cases, format_table, save_model, train_detector
    from baynet.settings import Settings

    (kind,) = _models(model)
    blocks = blocks_from_cases(_cases(dataset, path, fault_minutes))
    for spec, cases in _also(also_train, fault_minutes).items():
        blocks += blocks_from_cases(cases, group_prefix=f"{spec}:")
    try:
        trained = train_detector(blocks, kind, progress=_say(quiet),
                                 false_budget=Settings().detector_false_incidents_per_hour)
    except ValueError as exc:
        fail(str(exc))
    store = LocalStore(artifacts) if artifacts else make_store(Settings())
    where = save_model(store, trained)
    typer.echo(format_table(pd.DataFrame(trained.table), trained.threshold))
    typer.echo(f"model {trained.version} ({kind}, {len(trained.features)} features: {', '.join(trained.features)}; "
               f"threshold {trained.threshold:.2f}) stored at {store.location(where)}")


@detect_app.command("run")
def detect_run(end: Optional[float] = typer.Option(None, help="Score up to this unix time (default: now)."),
               lookback: Optional[int] = typer.Option(None, help="Seconds scored (default: "
                                                                  "BAYNET_DETECTOR_LOOKBACK_S)."),
               model_version: str = typer.Option("latest", help="Stored model version."),
               send: bool = typer.Option(True, help="Put events on the queue (--no-send: only print them).")) -> None:
    """One run of the detect-anomalies flow against BAYNET_PROMETHEUS_URL; prints the events."""
    from flows.detect import detect_anomalies

    try:
        result = detect_anomalies(end=end, lookback_s=lookback, model_version=model_version, send=send)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    json.dump(result, sys.stdout, indent=1, default=float)
    typer.echo("")
