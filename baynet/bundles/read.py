"""A checked bundle, loaded: the event, spans, signals, resources, topology and changes as frames.

:func:`load_bundle` runs :func:`baynet.bundles.format.check_bundle` first, so everything here may assume
a valid bundle. ``truth.json`` is not read (the scorer reads it with :func:`read_truth`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from baynet.bundles.format import LOG_COLUMNS, BundleError, check_bundle
from baynet.events import AnomalyEvent, parse_object

SIGNAL_NUMBERS = ["time", "window_s", "requests", "error_ratio", "latency_ms_avg", "latency_ms_p50",
                  "latency_ms_p90", "latency_ms_p99"]
SIGNAL_TEXT = ["source", "destination", "destination_version", "reporter"]
LOG_TEXT = ["service", "pod", "trace_id", "span_id", "level", "line"]


@dataclass
class Bundle:
    path: Path
    event: AnomalyEvent
    spans: pd.DataFrame | None         # spans_frame columns, or None without traces/
    signals: pd.DataFrame | None
    resources: pd.DataFrame | None
    topology: list[tuple[str, str]]
    changes: pd.DataFrame | None
    logs: pd.DataFrame | None = None   # LOG_COLUMNS; ``level`` upper case, blank where not recorded

    @property
    def sources(self) -> list[str]:
        """What the bundle offers the analysis: ``traces``, ``signals``, ``resources``, ``logs``."""
        return [name for name, x in (("traces", self.spans), ("signals", self.signals),
                                     ("resources", self.resources), ("logs", self.logs)) if x is not None and len(x)]


def _csv(path: Path, text: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, na_values={})
    for col in frame.columns:
        if col not in text:
            frame[col] = pd.to_numeric(frame[col].replace("", None), errors="coerce")
    return frame


def load_bundle(path: Path) -> Bundle:
    path = Path(path)
    check_bundle(path)
    events = parse_object(json.loads((path / "event.json").read_text()))
    if len(events) != 1:
        raise BundleError("event.json", f"holds {len(events)} events; a bundle is one incident")
    spans = None
    trace_dir = path / "traces"
    if trace_dir.is_dir() and any(trace_dir.glob("*.json")):
        from baynet.otlp import IdTable, frame_from_columns, loads, new_columns, trace_columns

        cols, ids = new_columns(), IdTable()
        for f in sorted(trace_dir.glob("*.json")):
            trace_columns(loads(f.read_bytes()), cols, ids)
        spans = frame_from_columns(cols)
    signals = _csv(path / "signals.csv", SIGNAL_TEXT)
    if signals is not None:
        for col in SIGNAL_NUMBERS + SIGNAL_TEXT:
            if col not in signals:
                signals[col] = "" if col in SIGNAL_TEXT else float("nan")
        signals["reporter"] = signals["reporter"].replace("", "destination")
    resources = _csv(path / "resources.csv", ["service", "metric", "pod"])
    topo = _csv(path / "topology.csv", ["source", "destination"])
    topology = [(a, b) for a, b in zip(topo["source"], topo["destination"])] if topo is not None else []
    changes = _csv(path / "changes.csv", ["service", "kind", "detail"])
    logs = _csv(path / "logs.csv", LOG_TEXT)
    if logs is not None:
        for col in LOG_TEXT:
            if col not in logs:
                logs[col] = ""
        logs["level"] = logs["level"].str.upper().replace({"WARNING": "WARN", "CRITICAL": "FATAL"})
        logs["trace_id"] = logs["trace_id"].str.lower()
        logs["span_id"] = logs["span_id"].str.lower()
        logs = logs[LOG_COLUMNS]
    return Bundle(path, events[0], spans, signals, resources, topology, changes, logs)


def read_truth(path: Path) -> dict | None:
    """The scorer's side: ``truth.json`` of a bundle, or None."""
    f = Path(path) / "truth.json"
    return json.loads(f.read_text()) if f.is_file() else None
