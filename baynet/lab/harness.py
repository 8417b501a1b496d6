"""Root-cause accuracy on datasets in the Nezha layout, through the real path.

For every fault with span data: write it as an incident bundle (:func:`case_bundle`: its spans -- every
span file covering the analysed window -- and the normal phase as the baseline before it), load the
bundle's traces into the Tempo-compatible server; put the anomaly event a latency detector would send
-- the entry service at the injection time plus :data:`~baynet.lab.datasets.nezha.DETECTION_DELAY_S` --
on the (moto) SQS queue; let the consumer run the real incident flow (``run_incident``, injected by the
CLI); read the ranking from the artifact store and score it against ``inject_pod``, which only this
module reads. Baselines rank the same spans in the same windows. Semi-synthetic cases
(:func:`synthetic_rows`) go through :func:`baynet.analysis.analyse` in-process.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from baynet.analysis import analyse
from baynet.consumer import IncidentRunner, run_consumer
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.evidence import spans_frame
from baynet.lab.baselines import baro_rank, microrank_rank
from baynet.lab.datasets.nezha import (
    NezhaCase, entry_service, list_cases, moved, normal_log_files, normal_trace_files, read_spans, shifted,
)
from baynet.lab.scoring import summarise
from baynet.local.stack import LocalStack, server_logs_to
from baynet.settings import Settings
from baynet.sources.base import Observations, Observed
from baynet.windows import Windows


def evaluate_nezha(path: Path, run_incident: IncidentRunner, *, max_cases: int | None = None, synthetic: int | None = 0,
                   progress: Callable[[str], None] | None = None, workdir: Path | None = None,
                   aggregates: bool = False) -> dict[str, Any]:
    """Run the harness on one dataset; return the JSON object ``baynet eval nezha PATH --json`` prints.
    ``synthetic``: how many semi-synthetic cases to add beside the real faults (``None``: all, 0: none);
    ``aggregates``: each case's spans also counted as Tempo's metrics-generator would (:func:`_aggregated`)."""
    result = evaluate_meshes([Path(path)], run_incident, max_cases=max_cases, synthetic=synthetic, progress=progress,
                             workdir=workdir, aggregates=aggregates)
    return next(iter(result["meshes"].values()))


def evaluate_meshes(paths: list[Path], run_incident: IncidentRunner, *, max_cases: int | None = None, synthetic: int | None = 0,
                    progress: Callable[[str], None] | None = None, workdir: Path | None = None,
                    aggregates: bool = False) -> dict[str, Any]:
    """Run the harness on several datasets: one result per mesh (keyed by its directory name) and the
    pooled result over all their cases -- the cross-mesh protocol's table. Semi-synthetic cases, when
    asked for, are summarised apart (``"synthetic"``), never mixed into the real faults' figures."""
    names = mesh_names(paths)
    meshes: dict[str, Any] = {}
    pooled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, path in zip(names, paths):
        sub = Path(workdir) / name if workdir and len(paths) > 1 else workdir
        rows, skipped, relocated = _run_dataset(Path(path), run_incident, max_cases=max_cases, progress=progress,
                                                workdir=sub, aggregates=aggregates)
        meshes[name] = summarise(rows, skipped, relocated)
        parts = {"rows": rows, "skipped": skipped, "relocated": relocated}
        if synthetic != 0:
            parts["synthetic"] = synthetic_rows(Path(path), limit=synthetic, progress=progress)
            meshes[name]["synthetic"] = summarise(parts["synthetic"], [])
        for key, items in parts.items():
            pooled[key] += [{**item, "case": f"{name} {item['case']}"} for item in items]
    out = summarise(pooled["rows"], pooled["skipped"], pooled["relocated"])
    if synthetic != 0:
        out["synthetic"] = summarise(pooled["synthetic"], [])
    return {"meshes": meshes, "pooled": out}


def mesh_names(paths: list[Path]) -> list[str]:
    """A short name per dataset: its directory's name, or its whole path where two names clash."""
    short = [Path(p).resolve().name for p in paths]
    return [s if short.count(s) == 1 else str(Path(p)) for s, p in zip(short, paths)]


def _run_dataset(path: Path, run_incident: IncidentRunner, *, max_cases: int | None,
                 progress: Callable[[str], None] | None, workdir: Path | None, aggregates: bool = False
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    all_cases = list_cases(path)
    skipped = [{"case": c.name, "reason": "no span file covers the fault's window (neither its inject_timestamp "
                "nor its inject_time)"} for c in all_cases if not c.trace_files]
    cases = [c for c in all_cases if c.trace_files]
    if max_cases is not None:
        cases = cases[:max_cases]
    relocated = [{"case": c.name, "reason": c.relocated} for c in cases if c.relocated]
    normal = normal_trace_files(path)
    if not normal:
        raise FileNotFoundError(f"no normal-phase span files under {path}/normal/*/trace: no baseline")
    work = Path(workdir or tempfile.mkdtemp(prefix="baynet-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    server_logs_to(work / "servers.log")
    rows: list[dict[str, Any]] = []
    used_ids: set[str] = set()
    metric_days: dict[str, Any] = {}
    # The Loki stand-in runs when the dataset has logs; each case's lines are pushed into it in turn.
    has_logs = bool(normal_log_files(path)) or any((Path(path) / c.day / "log").is_dir() for c in cases[:1])
    with LocalStack(work, use_prometheus=False, logs=pd.DataFrame() if has_logs else None) as stack:
        settings = stack.settings(sqs_wait_seconds=1)
        for i, case in enumerate(cases, 1):
            started = time.monotonic()
            try:
                row = _run_case(case, path, normal, stack, settings, run_incident, used_ids, work, metric_days,
                                aggregates)
            except Exception as exc:  # one broken case is reported, not fatal
                skipped.append({"case": case.name, "reason": f"{type(exc).__name__}: {exc}"})
                # its message is still on the queue (a failed analysis is retried): the next case's
                # consumer would take it instead of its own and find none of its traces
                stack.sqs.purge_queue(QueueUrl=stack.queue_url)
                continue
            row["seconds"] = time.monotonic() - started
            rows.append(row)
            if progress:
                progress(f"[{i}/{len(cases)}] {case.name}: truth {row['truth']}, baynet top "
                         f"{row['rankings']['baynet'][:3]}")
    return rows, skipped, relocated


def synthetic_rows(path: Path, *, limit: int | None = None, progress: Callable[[str], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Semi-synthetic incidents made from the dataset's normal phase (:mod:`baynet.lab.datasets.semisynthetic`),
    analysed in-process by the same functions the incident flow's tasks call (evidence, topology from the
    traces, a fresh model, inference) -- no queue or Tempo in between, so hundreds of cases take minutes."""
    from baynet.lab.datasets.semisynthetic import make_cases

    normal = [s for f in normal_trace_files(path) for s in read_spans(f, salt="synthetic")]
    if not normal:
        raise FileNotFoundError(f"no normal-phase span files under {path}/normal/*/trace: nothing to build from")
    settings = Settings()
    cases = make_cases(normal, settings.window_s, limit=limit)
    rows = []
    for i, case in enumerate(cases, 1):
        started = time.monotonic()
        rows.append({**analyse_synthetic(case, settings), "seconds": time.monotonic() - started})
        if progress:
            progress(f"[{i}/{len(cases)}] synthetic {case.name}: baynet top {rows[-1]['rankings']['baynet'][:3]}")
    return rows


def analyse_synthetic(case: Any, settings: Settings) -> dict[str, Any]:
    """One semi-synthetic case through :func:`baynet.analysis.analyse` on a fresh model: its baseline ends
    where the baseline window does, its incident fills the last slices up to the anomaly time; the event
    names the entry service, as for the real faults."""
    event_time = 1_700_000_000.0  # any past time: the cases carry no clock of their own
    windows = Windows.around(event_time, settings)
    # The incident's whole windows become the last slices; the baseline ends where its window does.
    shift = int((event_time - case.incident_s - case.incident_start) * 1e9)
    frame = spans_frame(moved(case.baseline, windows.baseline[1] - 1) + shifted(case.incident, shift))
    (event,) = parse_object({"id": "synthetic", "service": entry_service(case.incident), "event_type": "latency",
                             "timestamp": event_time, "severity": "critical"})
    result = analyse(event, Observations([Observed("traces", {"spans": frame})]), DBNModel(), settings)
    return {"case": case.name, "fault_type": case.fault_type, "truth": case.truth,
            "candidates": len({s.service for s in case.incident}),
            "rankings": {"baynet": [r["service"] for r in result.ranking],
                         "baro": baro_rank(frame, windows.baseline, windows.slices),
                         "microrank": microrank_rank(frame, windows.baseline, windows.slices)}}


def case_bundle(case: NezhaCase, root: Path, normal: list[Path], out: Path,
                metric_days: dict[str, Any] | None = None) -> Path:
    """The fault as an incident bundle at ``out`` (:func:`baynet.lab.datasets.convert.nezha_bundle`): its spans
    and, as the baseline, the normal phase moved to end just before the baseline window (fresh trace ids),
    its metrics, and the anomaly event. ``metric_days`` caches the day's metric files between cases."""
    from baynet.lab.datasets.convert import _read_metric_day, nezha_bundle

    days = metric_days if metric_days is not None else {}
    if case.day not in days:
        days.clear()
        days[case.day] = _read_metric_day(Path(root) / case.day / "metric")
    return nezha_bundle(case, Path(root), out, metrics_day=days[case.day], traces=True, normal_files=normal)


def replay_case(bundle_dir: Path) -> tuple[Any, dict[str, Any], Any, pd.DataFrame | None]:
    """A trace store holding the bundle's traces, its anomaly event, its spans as a frame and its log lines
    (the bundle was just written by :func:`case_bundle`; its traces are parsed once, here)."""
    from baynet.local.tempo import TraceStore

    store = TraceStore()
    store.load_dir(Path(bundle_dir) / "traces")
    event = json.loads((Path(bundle_dir) / "event.json").read_text())
    logs_csv = Path(bundle_dir) / "logs.csv"
    logs = pd.read_csv(logs_csv, dtype=str, keep_default_na=False) if logs_csv.is_file() else None
    return store, event, spans_frame([s for t in store.traces.values() for s in t.spans]), logs


def _run_case(case: NezhaCase, root: Path, normal: list[Path], stack: LocalStack, settings: Settings,
              run_incident: IncidentRunner, used_ids: set[str], work: Path, metric_days: dict[str, Any],
              aggregates: bool = False) -> dict[str, Any]:
    """One fault through bundles underneath: written as a bundle, its traces loaded into the stack's
    Tempo-compatible server, its event on SQS, the incident flow; the bundle is removed afterwards. With
    ``aggregates`` a Prometheus of its own holds the case's metrics-generator series (:func:`_aggregated`)."""
    import shutil

    from baynet.artifacts import LocalStore

    bundle_dir = work / "bundles" / f"{case.day}-{case.inject_ts}-{len(used_ids)}"
    try:
        store, event, frame, logs = replay_case(case_bundle(case, root, normal, bundle_dir, metric_days))
    finally:
        shutil.rmtree(bundle_dir, ignore_errors=True)
    while event["id"] in used_ids:  # two faults listed at one time must not share an incident
        event["id"] += "+"
    used_ids.add(event["id"])
    stack.tempo.store = store
    if stack.loki is not None:
        from baynet.local.loki import LogStore, push_logs

        stack.loki.store = LogStore()
        if logs is not None:
            push_logs(stack.loki.url, logs, event.get("namespace") or "default")
    event_id = event["id"]
    windows = Windows.around(event["timestamp"], settings)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
    with _aggregated(store, work, settings, aggregates) as case_settings:
        outcomes = run_consumer(case_settings, run_incident, max_messages=1, idle_polls=5)
    if not outcomes or outcomes[0].result != "analysed":
        raise RuntimeError(outcomes[0].detail if outcomes else "the event was not received")
    summary = LocalStore(settings.artifacts_dir).get_json(f"incidents/{event_id}/ranking.json")
    baynet_rank = [r["service"] for r in summary["ranking"]]
    # The candidates are the services of the fault's own spans (the normal phase ends before the baseline does).
    candidates = sorted(set(frame.loc[frame["start_ns"] >= windows.baseline[1] * 1e9, "service"]))
    return {
        "case": case.name, "fault_type": case.fault_type, "truth": case.truth, "candidates": len(candidates),
        "rankings": {"baynet": baynet_rank,
                     "baro": baro_rank(frame, windows.baseline, windows.slices),
                     "microrank": microrank_rank(frame, windows.baseline, windows.slices)},
    }


@contextmanager
def _aggregated(store: Any, work: Path, settings: Settings, aggregates: bool) -> Iterator[Settings]:
    """``settings`` as they are, or -- with ``aggregates`` -- pointing at a Prometheus backfilled with what
    Tempo's metrics-generator would have written for the case's spans (:mod:`baynet.local.metrics_generator`).
    Nezha's spans carry no kind and no client side: a span entering a service (a root, or a child of
    another service's span) is counted as ``SPAN_KIND_SERVER``, and each call between services gets the
    client span an instrumented caller would have written, timed as the server span (the data hold no
    caller's view, so the service graph's network gap is zero)."""
    if not aggregates:
        yield settings
        return
    import shutil
    from dataclasses import replace

    from baynet.local.metrics_generator import generator_openmetrics
    from baynet.local.stack import PrometheusServer

    spans = []
    for trace in store.traces.values():
        by_id = {s.span_id: s for s in trace.spans}
        for s in trace.spans:
            parent = by_id.get(s.parent_span_id)
            if parent is not None and parent.service == s.service:
                spans.append(s)
                continue
            if parent is None:
                spans.append(replace(s, kind="server"))
                continue
            # the caller's client span between the two, as Tempo pairs them
            client_id = f"{hash((s.trace_id, s.span_id, 'client')) & 0xFFFFFFFFFFFFFFFF:016x}"
            spans += [replace(s, kind="server", parent_span_id=client_id),
                      replace(s, span_id=client_id, parent_span_id=parent.span_id, service=parent.service,
                              kind="client")]
    place = Path(tempfile.mkdtemp(prefix="generator-", dir=work))
    (place / "generator.om").write_text(generator_openmetrics(spans))
    prometheus = PrometheusServer(place / "generator.om", place / "prometheus").start()
    try:
        yield settings.model_copy(update={"prometheus_url": prometheus.url})
    finally:
        prometheus.stop()
        shutil.rmtree(place, ignore_errors=True)
