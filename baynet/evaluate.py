"""Root-cause accuracy on datasets in the Nezha layout, through the real path, and on incident bundles.

For every fault with span data: write it as an incident bundle (:func:`case_bundle`: its spans -- every
span file covering the analysed window -- and the normal phase as the baseline before it), load the
bundle's traces into the Tempo-compatible server; put the anomaly event a latency detector would send — the entry service at
the injection time plus :data:`DETECTION_DELAY_S` — on the (moto) SQS queue; let the consumer run the
real incident flow; read the ranking from the artifact store and score it against ``inject_pod``, which
only this module reads. Baselines rank the same spans in the same windows.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from baynet.analysis import Windows
from baynet.baselines import ac_at_k, baro_rank, microrank_rank, random_ac_at_k
from baynet.datasets.nezha import NezhaCase, entry_service, list_cases, normal_trace_files, read_spans
from baynet.evidence import spans_frame
from baynet.evidence.fuse import states_from_evidence
from baynet.settings import Settings

# A detector watching user-facing latency fires about two minutes after a fault starts (it needs a
# few scrape intervals of evidence); the incident slices end then.
DETECTION_DELAY_S = 120
KS = (1, 2, 3, 4, 5)


def metrics(hits: list[dict[int, float]]) -> dict[str, float]:
    if not hits:
        return {"AC@1": 0.0, "AC@3": 0.0, "AC@5": 0.0, "Avg@5": 0.0, "n": 0}
    ac = {k: sum(h[k] for h in hits) / len(hits) for k in KS}
    return {"AC@1": ac[1], "AC@3": ac[3], "AC@5": ac[5], "Avg@5": sum(ac.values()) / len(KS), "n": len(hits)}


def _hits(ranking: list[str], truth: str) -> dict[int, float]:
    return {k: ac_at_k(ranking, truth, k) for k in KS}


def evaluate_nezha(path: Path, *, max_cases: int | None = None, synthetic: int | None = 0,
                   progress: Callable[[str], None] | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Run the harness on one dataset; return the JSON object ``baynet eval nezha PATH --json`` prints.
    ``synthetic``: how many semi-synthetic cases to add beside the real faults (``None``: all, 0: none)."""
    result = evaluate_meshes([Path(path)], max_cases=max_cases, synthetic=synthetic, progress=progress,
                             workdir=workdir)
    return next(iter(result["meshes"].values()))


def evaluate_meshes(paths: list[Path], *, max_cases: int | None = None, synthetic: int | None = 0,
                    progress: Callable[[str], None] | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Run the harness on several datasets: one result per mesh (keyed by its directory name) and the
    pooled result over all their cases -- the cross-mesh protocol's table. Semi-synthetic cases, when
    asked for, are summarised apart (``"synthetic"``), never mixed into the real faults' figures."""
    names = mesh_names(paths)
    meshes: dict[str, Any] = {}
    pooled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, path in zip(names, paths):
        sub = Path(workdir) / name if workdir and len(paths) > 1 else workdir
        rows, skipped, relocated = _run_dataset(Path(path), max_cases=max_cases, progress=progress, workdir=sub)
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


def _run_dataset(path: Path, *, max_cases: int | None, progress: Callable[[str], None] | None,
                 workdir: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    from baynet.cli import run_consumer, server_logs_to
    from baynet.stack import LocalStack

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
    saved_env = dict(os.environ)
    used_ids: set[str] = set()
    metric_days: dict[str, Any] = {}
    try:
        with LocalStack(work, use_prometheus=False) as stack:
            os.environ.update(stack.env)
            os.environ["BAYNET_SQS_WAIT_SECONDS"] = "1"
            settings = Settings()
            for i, case in enumerate(cases, 1):
                started = time.monotonic()
                try:
                    row = _run_case(case, path, normal, stack, settings, run_consumer, used_ids, work, metric_days)
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
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return rows, skipped, relocated


def synthetic_rows(path: Path, *, limit: int | None = None, progress: Callable[[str], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Semi-synthetic incidents made from the dataset's normal phase (:mod:`baynet.datasets.semisynthetic`),
    analysed in-process by the same functions the incident flow's tasks call (evidence, topology from the
    traces, a fresh model, inference) -- no queue or Tempo in between, so hundreds of cases take minutes."""
    from baynet.datasets.semisynthetic import make_cases

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
    """One semi-synthetic case: its baseline ends where the baseline window does, its incident fills the
    last slices up to the anomaly time; the event names the entry service, as for the real faults."""
    from baynet.analysis import infer, reestimate, trace_topology
    from baynet.dbn import DBNModel
    from baynet.events import parse_object
    from baynet.evidence import build_evidence

    event_time = 1_700_000_000.0  # any past time: the cases carry no clock of their own
    windows = Windows.around(event_time, settings)
    # The incident's whole windows become the last slices; the baseline ends where its window does.
    shift = int((event_time - case.incident_s - case.incident_start) * 1e9)
    spans = _moved(case.baseline, windows.baseline[1] - 1) + _shifted(case.incident, shift)
    frame = spans_frame(spans)
    evidence, edges = build_evidence(frame, windows.baseline, windows.slices)
    topology = trace_topology(edges, settings.namespace, windows.incident[1] - windows.incident[0])
    model = DBNModel()
    reestimate(model, topology, edges)
    (event,) = parse_object({"id": "synthetic", "service": entry_service(case.incident), "event_type": "latency",
                             "timestamp": event_time, "severity": "critical"})
    ranking, _ = infer(model, event, evidence, topology, settings)
    return {"case": case.name, "fault_type": case.fault_type, "truth": case.truth,
            "candidates": len({s.service for s in case.incident}),
            "rankings": {"baynet": [r["service"] for r in ranking],
                         "baro": baro_rank(frame, windows.baseline, windows.slices),
                         "microrank": microrank_rank(frame, windows.baseline, windows.slices)}}


def _shifted(spans: list[Any], shift_ns: int) -> list[Any]:
    """Copies of ``spans`` moved ``shift_ns`` later."""
    return [replace(s, start_ns=s.start_ns + shift_ns, end_ns=s.end_ns + shift_ns) for s in spans]


def _moved(spans: list[Any], end_s: float) -> list[Any]:
    """Copies of ``spans`` moved in time so that the last one starts at ``end_s``."""
    return _shifted(spans, int(end_s * 1e9) - max(s.start_ns for s in spans))


def case_bundle(case: NezhaCase, root: Path, normal: list[Path], out: Path,
                metric_days: dict[str, Any] | None = None) -> Path:
    """The fault as an incident bundle at ``out`` (:func:`baynet.datasets.convert.nezha_bundle`): its spans
    and, as the baseline, the normal phase moved to end just before the baseline window (fresh trace ids),
    its metrics, and the anomaly event. ``metric_days`` caches the day's metric files between cases."""
    from baynet.datasets.convert import _read_metric_day, nezha_bundle

    days = metric_days if metric_days is not None else {}
    if case.day not in days:
        days.clear()
        days[case.day] = _read_metric_day(Path(root) / case.day / "metric")
    return nezha_bundle(case, Path(root), out, metrics_day=days[case.day], traces=True, normal_files=normal)


def replay_case(bundle_dir: Path) -> tuple[Any, dict[str, Any], Any]:
    """A trace store holding the bundle's traces, its anomaly event, and its spans as a frame (the bundle
    was just written by :func:`case_bundle`; its traces are parsed once, here)."""
    from baynet.tempo.server import TraceStore

    store = TraceStore()
    store.load_dir(Path(bundle_dir) / "traces")
    event = json.loads((Path(bundle_dir) / "event.json").read_text())
    return store, event, spans_frame([s for t in store.traces.values() for s in t.spans])


def _run_case(case: NezhaCase, root: Path, normal: list[Path], stack: Any, settings: Settings, run_consumer: Any,
              used_ids: set[str], work: Path, metric_days: dict[str, Any]) -> dict[str, Any]:
    """One fault through bundles underneath: written as a bundle, its traces loaded into the stack's
    Tempo-compatible server, its event on SQS, the incident flow; the bundle is removed afterwards."""
    import shutil

    from baynet.artifacts import LocalStore

    bundle_dir = work / "bundles" / f"{case.day}-{case.inject_ts}-{len(used_ids)}"
    try:
        store, event, frame = replay_case(case_bundle(case, root, normal, bundle_dir, metric_days))
    finally:
        shutil.rmtree(bundle_dir, ignore_errors=True)
    while event["id"] in used_ids:  # two faults listed at one time must not share an incident
        event["id"] += "+"
    used_ids.add(event["id"])
    stack.tempo.store = store
    event_id = event["id"]
    windows = Windows.around(event["timestamp"], settings)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
    outcomes = run_consumer(settings, max_messages=1, idle_polls=5)
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


def _rank(ranking: list[str], truth: str) -> int | None:
    return ranking.index(truth) + 1 if truth in ranking else None


def summarise(rows: list[dict[str, Any]], skipped: list[dict[str, Any]],
              relocated: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    methods = ["baynet", "baro", "microrank"]
    hits: dict[str, list[dict[int, float]]] = defaultdict(list)
    by_type: dict[str, dict[str, list[dict[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for m in methods:
            h = _hits(row["rankings"][m], row["truth"])
            hits[m].append(h)
            by_type[m][row["fault_type"]].append(h)
        rnd = {k: random_ac_at_k(row["candidates"], k) for k in KS}
        hits["random"].append(rnd)
        by_type["random"][row["fault_type"]].append(rnd)
    cases = [{"case": r["case"], "fault_type": r["fault_type"], "truth": r["truth"],
              "top5": r["rankings"]["baynet"][:5], "rank": _rank(r["rankings"]["baynet"], r["truth"]),
              "ranks": {m: _rank(r["rankings"][m], r["truth"]) for m in methods},
              "candidates": r["candidates"], "seconds": round(r["seconds"], 3)} for r in rows]
    return {
        "overall": metrics(hits["baynet"]),
        "by_type": {t: metrics(v) for t, v in sorted(by_type["baynet"].items())},
        "cases": cases,
        "skipped": skipped,
        "relocated": relocated or [],
        "seconds_per_case": statistics.mean(r["seconds"] for r in rows) if rows else 0.0,
        "baselines": {m: {"overall": metrics(hits[m]),
                          "by_type": {t: metrics(v) for t, v in sorted(by_type[m].items())}}
                      for m in ("baro", "microrank", "random")},
        "detection_delay_s": DETECTION_DELAY_S,
    }


# --- incident bundles -----------------------------------------------------------------------------

METRIC_BASELINES = ("error_rise", "latency_rise", "random")


def _metric_baselines(bundle: Any, settings: Settings) -> dict[str, list[str]]:
    """The service whose error ratio rose most, and whose latency rose most (in baseline spreads), over
    the incident slices; ties by name. Services where it did not rise are not ranked (a baseline without
    the signal must not score by alphabetical luck)."""
    from baynet.evidence.metrics import build_metric_evidence, slices_for_step

    windows = Windows.around(bundle.event.timestamp.timestamp(), settings)
    slices, _ = slices_for_step(bundle.signals, bundle.resources, windows.slices)
    ev = build_metric_evidence(bundle.signals, bundle.resources,
                               (windows.baseline[0], min(windows.baseline[1], slices[0][0])), slices)
    ev = ev[ev["window"] >= 0]
    out = {}
    for name, col in (("error_rise", "error_up"), ("latency_rise", "latency_z")):
        top = ev.groupby("service")[col].max()
        top = top[top > 0]
        out[name] = sorted(top.index, key=lambda s: (-top[s], s))
    return out


def bundle_row(path: Path, settings: Settings, sources: set[str] | None = None, replayed: bool = False
               ) -> dict[str, Any]:
    """Analyse one bundle -- in-process, or with ``replayed`` through :func:`baynet.bundles.replay.replay`
    (Tempo, Prometheus, SQS, the incident flow) -- and rank the baselines on the same data; the truth is
    read here, after the analysis, and only for scoring."""
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle, read_truth

    started = time.monotonic()
    bundle = load_bundle(path)
    result = analyse_bundle(bundle, settings, use=sources)
    if not result.used:
        raise ValueError(f"the bundle has none of the evidence asked for ({', '.join(sorted(sources or []))}); "
                         f"it holds {', '.join(bundle.sources) or 'only an event'}")
    rankings = {"baynet": [r["service"] for r in result.ranking]}
    if replayed:
        from baynet.bundles.replay import replay

        summary = replay(path)
        rankings = {"baynet": [r["service"] for r in summary["ranking"]], "in-process": rankings["baynet"]}
    if bundle.signals is not None or bundle.resources is not None:
        rankings.update(_metric_baselines(bundle, settings))
    if bundle.spans is not None and len(bundle.spans):
        windows = Windows.around(bundle.event.timestamp.timestamp(), settings)
        rankings["baro"] = baro_rank(bundle.spans, windows.baseline, windows.slices)
        rankings["microrank"] = microrank_rank(bundle.spans, windows.baseline, windows.slices)
    seconds = time.monotonic() - started
    truth = read_truth(path)
    if not truth or not truth.get("root_cause"):
        raise ValueError(f"{path}/truth.json is missing or names no root_cause: the bundle cannot be scored")
    candidates = set(result.evidence["service"]) if not result.evidence.empty else set()
    return {"case": path.name, "directory": str(path.parent), "fault_type": str(truth.get("fault_type") or "unknown"),
            "truth": truth["root_cause"], "candidates": max(1, len(candidates)), "rankings": rankings,
            "sources": result.used, "notes": result.notes, "seconds": seconds}


def find_bundles(directories: list[Path]) -> list[Path]:
    """Every directory holding an ``event.json`` under the given ones (a bundle itself counts)."""
    found = []
    for d in directories:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a directory")
        found += sorted({Path(root) for root, _, files in os.walk(d, followlinks=True) if "event.json" in files})
    return found


def evaluate_bundles(directories: list[Path], *, sources: set[str] | None = None, replayed: bool = False,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every bundle under ``directories``, analysed and scored against its ``truth.json``. A bundle that
    cannot be read or scored is listed in ``skipped`` with the reason; the others go on. With
    ``replayed``, each goes through the real path (and the in-process ranking is scored beside it)."""
    from baynet.bundles.format import BundleError

    settings = Settings()
    paths = find_bundles(directories)
    rows, skipped = [], []
    for i, path in enumerate(paths, 1):
        try:
            rows.append(bundle_row(path, settings, sources, replayed))
            top = rows[-1]["rankings"]["baynet"][:3]
            line = f"[{i}/{len(paths)}] {path.name}: top {top}"
        except (BundleError, ValueError, KeyError, OSError, RuntimeError) as exc:
            skipped.append({"case": str(path), "reason": str(exc)})
            line = f"[{i}/{len(paths)}] {path.name}: skipped ({exc})"
        if progress:
            progress(line)
    result = summarise_bundles(rows, skipped)
    result["by_directory"] = {}
    for d in sorted({r["directory"] for r in rows}):
        part = summarise_bundles([r for r in rows if r["directory"] == d], [])
        result["by_directory"][d] = {k: part[k] for k in ("overall", "by_type", "seconds_per_case", "baselines")}
    return result


def evaluate_online(directories: list[Path], *, sources: set[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The operator's loop, replayed: per directory (one mesh), the bundles in event-time order through one
    persistent model each way -- ``learning``: after each case's ranking is recorded, its true cause is
    confirmed (:meth:`baynet.dbn.DBNModel.confirm`), as an operator would; ``static``: the same persistent
    model, never confirmed. A case's own truth is read only after both its rankings are recorded.
    AC@1 and Avg@5 each way, overall and over the first and second half of each sequence."""
    from baynet.bundles.analyse import analyse_bundle
    from baynet.bundles.read import load_bundle, read_truth
    from baynet.dbn import DBNModel, confirmed_propagation

    settings = Settings()
    by_dir: dict[str, list[Path]] = defaultdict(list)
    for path in find_bundles(directories):
        by_dir[str(path.parent)].append(path)
    hits: dict[str, dict[str, list[dict[int, float]]]] = {}
    for d, paths in sorted(by_dir.items()):
        loaded = []
        for path in paths:
            try:
                loaded.append((load_bundle(path), path))
            except Exception as exc:  # listed by the static evaluation as skipped; the order needs none
                if progress:
                    progress(f"{path.name}: skipped ({exc})")
        loaded.sort(key=lambda bp: (bp[0].event.timestamp, bp[1].name))
        models = {"learning": DBNModel(), "static": DBNModel()}
        hits[d] = {"learning": [], "static": []}
        for i, (bundle, path) in enumerate(loaded, 1):
            ranked = {}
            results = {}
            for way, model in models.items():
                results[way] = analyse_bundle(bundle, settings, use=sources, model=model)
                ranked[way] = [r["service"] for r in results[way].ranking]
            truth = (read_truth(path) or {}).get("root_cause")  # read only now, after both rankings
            if not truth:
                continue
            for way in models:
                hits[d][way].append(_hits(ranked[way], truth))
            if truth in ranked["learning"]:
                states = states_from_evidence(results["learning"].evidence, ranked["learning"])[0]
                models["learning"].confirm(truth, ranked["learning"],
                                           confirmed_propagation(truth, states, models["learning"].callees))
            if progress:
                progress(f"[{i}/{len(loaded)}] {path.name}: learning top {ranked['learning'][:1]}, "
                         f"static top {ranked['static'][:1]}")

    def summary(parts: dict[str, list[dict[int, float]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for way, h in parts.items():
            m = metrics(h)
            out[way] = {"AC@1": m["AC@1"], "Avg@5": m["Avg@5"], "n": m["n"]}
        out["halves"] = {way: [{k: metrics(half)[k] for k in ("AC@1", "Avg@5")}
                               for half in (h[:len(h) // 2], h[len(h) // 2:])] for way, h in parts.items()}
        return out

    pooled = {way: [x for d in hits for x in hits[d][way]] for way in ("learning", "static")}
    return {**summary(pooled), "by_directory": {d: summary(parts) for d, parts in hits.items()}}


def summarise_bundles(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    methods = sorted({m for r in rows for m in r["rankings"]} - {"baynet"}) + ["random"]
    hits: dict[str, list[dict[int, float]]] = defaultdict(list)
    by_type: dict[str, dict[str, list[dict[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        scored = dict(row["rankings"])
        for m in ["baynet"] + methods:
            h = ({k: random_ac_at_k(row["candidates"], k) for k in KS} if m == "random"
                 else _hits(scored[m], row["truth"]) if m in scored else None)
            if h is None:
                continue
            hits[m].append(h)
            by_type[m][row["fault_type"]].append(h)
    cases = [{"case": r["case"], "directory": r["directory"], "fault_type": r["fault_type"], "truth": r["truth"],
              "top5": r["rankings"]["baynet"][:5], "rank": _rank(r["rankings"]["baynet"], r["truth"]),
              "ranks": {m: _rank(v, r["truth"]) for m, v in r["rankings"].items()}, "sources": r["sources"],
              "notes": r["notes"], "candidates": r["candidates"], "seconds": round(r["seconds"], 3)} for r in rows]
    return {
        "overall": metrics(hits["baynet"]) if rows else metrics([]),
        "by_type": {t: metrics(v) for t, v in sorted(by_type["baynet"].items())},
        "cases": cases,
        "skipped": skipped,
        "seconds_per_case": statistics.mean(r["seconds"] for r in rows) if rows else 0.0,
        "baselines": {m: {"overall": metrics(hits[m]), "by_type": {t: metrics(v) for t, v in sorted(by_type[m].items())}}
                      for m in methods if hits[m]},
    }
