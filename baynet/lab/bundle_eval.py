"""Root-cause accuracy on incident bundles (``baynet eval bundles``): every bundle analysed by
:func:`baynet.analysis.analyse` in-process (or through the real path with ``--replay``), scored against its
``truth.json`` -- read by the scorer only, after the analysis -- beside the simple baselines of the same
data (:data:`baynet.lab.baselines.RANKERS`)."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from baynet.analysis.look_again import later
from baynet.bundles.analyse import analyse_bundle
from baynet.bundles.format import BundleError
from baynet.bundles.read import Bundle, load_bundle, read_truth
from baynet.consumer import IncidentRunner
from baynet.dbn import DBNModel, confirmed_propagation
from baynet.evidence.fuse import states_from_evidence
from baynet.lab.baselines import RANKERS
from baynet.lab.degrade import SHAPES, NotApplicable, degrade
from baynet.lab.scoring import hits_of, metrics, summarise_bundles
from baynet.settings import Settings
from baynet.sources.bundle import bundle_observations
from baynet.windows import Windows


def bundle_row(path: Path, settings: Settings, sources: set[str] | None = None,
               replayed: IncidentRunner | None = None, bundle: Bundle | None = None) -> dict[str, Any]:
    """Analyse one bundle -- in-process, or with ``replayed`` (the incident flow) through
    :func:`baynet.local.replay.replay` (Tempo, Prometheus, SQS) -- and rank the baselines on the same data;
    the truth is read here, after the analysis, and only for scoring. ``bundle``: the bundle at ``path``
    already loaded (and perhaps put into another shape, :mod:`baynet.lab.degrade`)."""
    started = time.monotonic()
    bundle = bundle if bundle is not None else load_bundle(path)
    result = analyse_bundle(bundle, settings, use=sources)
    if not result.used:
        raise ValueError(f"the bundle has none of the evidence asked for ({', '.join(sorted(sources or []))}); "
                         f"it holds {', '.join(bundle.sources) or 'only an event'}")
    rankings = {"baynet": [r["service"] for r in result.ranking]}
    if replayed is not None:
        from baynet.local.replay import replay

        summary = replay(path, replayed)
        rankings = {"baynet": [r["service"] for r in summary["ranking"]], "in-process": rankings["baynet"]}
    # the baselines read what the analysis read last: up to the window's end (a second look's, where it
    # looked again), all the bundle holds whatever --sources says
    after = result.fetch.get("looked_again", {}).get("after_s")
    windows = Windows.around(bundle.event.unix, later(settings, after) if after else settings)
    everything = bundle_observations(bundle, until=windows.incident[1])
    for ranker in RANKERS:
        rankings.update(ranker(everything, windows))
    seconds = time.monotonic() - started
    truth = read_truth(path)
    if not truth or not truth.get("root_cause"):
        raise ValueError(f"{path}/truth.json is missing or names no root_cause: the bundle cannot be scored")
    candidates = set(result.evidence["service"]) if not result.evidence.empty else set()
    return {"case": path.name, "directory": str(path.parent), "fault_type": str(truth.get("fault_type") or "unknown"),
            "truth": truth["root_cause"], "candidates": max(1, len(candidates)), "rankings": rankings,
            "sources": result.used, "notes": result.notes, "seconds": seconds,
            "truth_fields": {k: v for k, v in truth.items() if k != "root_cause" and isinstance(v, (str, int, float, bool))}}


def find_bundles(directories: list[Path]) -> list[Path]:
    """Every directory holding an ``event.json`` under the given ones (a bundle itself counts)."""
    found = []
    for d in directories:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a directory")
        found += sorted({Path(root) for root, _, files in os.walk(d, followlinks=True) if "event.json" in files})
    return found


def evaluate_bundles(directories: list[Path], *, sources: set[str] | None = None,
                     replayed: IncidentRunner | None = None, progress: Callable[[str], None] | None = None,
                     settings: Settings | None = None, shape: str = "as_is", by: tuple[str, ...] = ()
                     ) -> dict[str, Any]:
    """Every bundle under ``directories``, analysed and scored against its ``truth.json``. A bundle that
    cannot be read or scored is listed in ``skipped`` with the reason; the others go on. With
    ``replayed`` (the incident flow), each goes through the real path (and the in-process ranking is
    scored beside it). ``by``: ``truth.json`` fields to break the scores down by (``by_field``: per field
    and value, Baynet's scores and each baseline's AC@1; bundles without the field under ``(none)``)."""
    settings = settings or Settings()
    paths = find_bundles(directories)
    rows, skipped = [], []
    for i, path in enumerate(paths, 1):
        try:
            bundle = degrade(load_bundle(path), shape) if shape != "as_is" else None
            rows.append(bundle_row(path, settings, sources, replayed, bundle))
            top = rows[-1]["rankings"]["baynet"][:3]
            line = f"[{i}/{len(paths)}] {path.name}: top {top}"
        except (BundleError, NotApplicable, ValueError, KeyError, OSError, RuntimeError) as exc:
            skipped.append({"case": str(path), "reason": str(exc)})
            line = f"[{i}/{len(paths)}] {path.name}: skipped ({exc})"
        if progress:
            progress(line)
    result = summarise_bundles(rows, skipped)
    result["by_directory"] = {}
    for d in sorted({r["directory"] for r in rows}):
        part = summarise_bundles([r for r in rows if r["directory"] == d], [])
        result["by_directory"][d] = {k: part[k] for k in ("overall", "by_type", "seconds_per_case", "baselines")}
    if by:
        result["by_field"] = by_field(rows, by)
    return result


def by_field(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Scores per value of each ``truth.json`` field (read by the scorer only, after the analyses)."""
    out: dict[str, dict[str, Any]] = {}
    for field in fields:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            value = r.get("truth_fields", {}).get(field)
            groups["(none)" if value is None else str(value).lower() if isinstance(value, bool) else str(value)].append(r)
        out[field] = {}
        for value, group in sorted(groups.items()):
            part = summarise_bundles(group, [])
            out[field][value] = {"n": part["overall"]["n"], "AC@1": part["overall"]["AC@1"],
                                 "Avg@5": part["overall"]["Avg@5"],
                                 "baselines": {m: b["overall"]["AC@1"] for m, b in part["baselines"].items()}}
    return out


def evaluate_online(directories: list[Path], *, sources: set[str] | None = None,
                    progress: Callable[[str], None] | None = None, settings: Settings | None = None
                    ) -> dict[str, Any]:
    """The operator's loop, replayed: per directory (one mesh), the bundles in event-time order through one
    persistent model each way -- ``learning``: after each case's ranking is recorded, its true cause is
    confirmed (:meth:`baynet.dbn.DBNModel.confirm`), as an operator would; ``static``: the same persistent
    model, never confirmed. A case's own truth is read only after both its rankings are recorded.
    AC@1 and Avg@5 each way, overall and over the first and second half of each sequence."""
    settings = settings or Settings()
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
                hits[d][way].append(hits_of(ranked[way], truth))
            if truth in ranked["learning"]:
                states = states_from_evidence(results["learning"].evidence, ranked["learning"]).states
                models["learning"].confirm(truth, ranked["learning"],
                                           confirmed_propagation(truth, states, models["learning"].callees),
                                           results["learning"].fetch.get("change_ages"))
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


def evaluate_matrix(directories: list[Path], *, shapes: tuple[str, ...] = SHAPES, sources: set[str] | None = None,
                    progress: Callable[[str], None] | None = None, settings: Settings | None = None
                    ) -> dict[str, Any]:
    """Every bundle of every directory (one mesh each) in every shape: per mesh and shape AC@1 and Avg@5,
    the best simple baseline of that cell (the highest AC@1 of the baselines ranked on the same data) and
    random. A shape that applies to no bundle of a mesh is listed in ``excluded`` with the reason."""
    settings = settings or Settings()
    matrix: dict[str, dict[str, Any]] = {}
    excluded: dict[str, dict[str, str]] = {}
    names = {str(Path(d)): Path(d).resolve().name for d in directories}
    for d in directories:
        mesh = names[str(Path(d))]
        rows: dict[str, list[dict[str, Any]]] = {s: [] for s in shapes}
        reasons: dict[str, list[str]] = {s: [] for s in shapes}
        for path in find_bundles([Path(d)]):
            try:
                loaded = load_bundle(path)
            except BundleError as exc:
                if progress:
                    progress(f"{mesh} {path.name}: skipped ({exc})")
                continue
            for shape in shapes:
                try:
                    rows[shape].append(bundle_row(path, settings, sources, None, degrade(loaded, shape)))
                except NotApplicable as exc:
                    reasons[shape].append(str(exc))
                except ValueError as exc:  # the shape left none of the evidence asked for
                    reasons[shape].append(str(exc))
            if progress:
                progress(f"{mesh} {path.name}")
        matrix[mesh], excluded[mesh] = {}, {}
        for shape in shapes:
            if not rows[shape]:
                why = max(set(reasons[shape]), key=reasons[shape].count) if reasons[shape] else "no bundle"
                excluded[mesh][shape] = why
                continue
            part = summarise_bundles(rows[shape], [])
            simple = {m: b["overall"]["AC@1"] for m, b in part["baselines"].items() if m != "random"}
            best = max(simple, key=lambda m: (simple[m], m)) if simple else None
            matrix[mesh][shape] = {"AC@1": part["overall"]["AC@1"], "Avg@5": part["overall"]["Avg@5"],
                                   "best_baseline": best, "best_baseline_AC@1": simple.get(best, 0.0),
                                   "random_AC@1": part["baselines"]["random"]["overall"]["AC@1"],
                                   "n": part["overall"]["n"], "skipped": len(reasons[shape])}
    return {"matrix": matrix, "excluded": excluded}
