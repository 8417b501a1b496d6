"""The one bundle writer: every tool that makes bundles (converters, generators, export) writes through it.

A bundle is written whole or not at all: into a sibling ``<name>.partial`` directory first, renamed into
place at the end; an existing non-empty directory is never overwritten (:class:`BundleExists`).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from baynet.bundles.format import (
    CHANGE_COLUMNS, FORMAT, LOG_COLUMNS, RESOURCE_COLUMNS, SIGNAL_COLUMNS, TOPOLOGY_COLUMNS,
)
from baynet.otlp import Span, render_resource_spans


class BundleExists(FileExistsError):
    """The output directory exists and holds something: nothing is overwritten."""


def fresh_directory(out: Path) -> Path:
    """``out`` as an empty directory; an existing non-empty one raises :class:`BundleExists`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleExists(f"{out} exists and is not empty; remove it or choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_traces(spans: list[Span], directory: Path, chunk_s: int = 60) -> list[Path]:
    """OTLP JSON export files (hex ids, as OTLP/HTTP ingest uses), one per ``chunk_s`` of traces."""
    directory.mkdir(parents=True, exist_ok=True)
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    chunks: dict[int, list[Span]] = {}
    for group in by_trace.values():
        start = min(s.start_ns for s in group) // 10**9
        chunks.setdefault(int(start // chunk_s), []).extend(group)
    paths = []
    for key, group in sorted(chunks.items()):
        path = directory / f"traces-{key * chunk_s}.json"
        path.write_bytes(orjson.dumps({"resourceSpans": render_resource_spans(group, id_encoding="hex")}))
        paths.append(path)
    return paths


def spans_from_frame(frame: pd.DataFrame) -> list[Span]:
    """A span frame (:func:`baynet.evidence.traces.spans_frame` columns) back as spans, for writing."""
    return [Span(r["trace_id"], r["span_id"], r["parent_span_id"], r["service"], r["name"], "unspecified",
                 int(r["start_ns"]), int(r["end_ns"]), "error" if r["failed"] else "unset",
                 resource={"service.name": r["service"]}) for r in frame.to_dict("records")]


def _write_csv(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    extra = [c for c in frame.columns if c not in columns]  # a writer's own columns go after the known ones
    frame.reindex(columns=columns + extra).to_csv(path, index=False, float_format="%.15g",
                                                  quoting=csv.QUOTE_MINIMAL)


def write_bundle(out: Path, event: dict[str, Any], *, truth: dict[str, Any] | None = None,
                 spans: list[Span] | pd.DataFrame | None = None, signals: pd.DataFrame | None = None,
                 resources: pd.DataFrame | None = None, topology: list[tuple[str, str]] | None = None,
                 changes: pd.DataFrame | None = None, logs: pd.DataFrame | None = None) -> Path:
    """Write one bundle at ``out`` (see :mod:`baynet.bundles.format`); empty parts are left out."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        (tmp / "bundle.json").write_text(json.dumps({"format": FORMAT}) + "\n")
        (tmp / "event.json").write_text(json.dumps(event, indent=1) + "\n")
        if truth is not None:
            (tmp / "truth.json").write_text(json.dumps(truth) + "\n")
        if signals is not None and not signals.empty:
            _write_csv(tmp / "signals.csv", signals.sort_values(["time", "destination"], kind="stable"),
                       SIGNAL_COLUMNS)
        if resources is not None and not resources.empty:
            _write_csv(tmp / "resources.csv", resources.sort_values(["time", "service", "metric"], kind="stable"),
                       RESOURCE_COLUMNS)
        if topology:
            _write_csv(tmp / "topology.csv", pd.DataFrame(sorted(set(topology)), columns=TOPOLOGY_COLUMNS),
                       TOPOLOGY_COLUMNS)
        if changes is not None and not changes.empty:
            _write_csv(tmp / "changes.csv", changes.sort_values("time", kind="stable"), CHANGE_COLUMNS)
        if logs is not None and not logs.empty:
            _write_csv(tmp / "logs.csv", logs.sort_values(["time", "service"], kind="stable"), LOG_COLUMNS)
        if isinstance(spans, pd.DataFrame):
            spans = spans_from_frame(spans) if len(spans) else None
        if spans:
            write_traces(spans, tmp / "traces")
        fresh_directory(out)
        out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
