"""Bundle files as evidence sources: what a bundle holds, read as the live sources would have answered."""

from __future__ import annotations

import pandas as pd

from baynet.bundles.read import Bundle
from baynet.sources.base import Observations, Observed


def _until(frame: pd.DataFrame | None, until: float | None, column: str = "time") -> pd.DataFrame | None:
    if frame is None or until is None or column not in frame:
        return frame
    return frame[frame[column].astype(float) <= until].reset_index(drop=True)


def _traces_until(spans: pd.DataFrame | None, until: float | None) -> pd.DataFrame | None:
    """Whole traces that began by ``until``, as a trace search ending there finds them."""
    if spans is None or until is None or not len(spans):
        return spans
    began = spans.groupby("trace_id")["start_ns"].transform("min") / 1e9
    return spans[began <= until].reset_index(drop=True)


def bundle_observations(bundle: Bundle, use: set[str] | None = None, until: float | None = None) -> Observations:
    """One :class:`Observed` per kind the bundle holds (and ``use`` allows): ``traces`` (its traces),
    ``metrics`` (``signals.csv``, ``resources.csv``), ``logs`` (``logs.csv``), ``changes`` (``changes.csv`` and the signal rows that
    name a ``destination_version``). ``until`` (unix seconds; the incident window's end): nothing later, as
    the live sources, asked for the incident's windows, answer nothing later -- a bundle often holds
    minutes past the alert, which the analysis in production cannot have seen."""
    origin = str(bundle.path)
    spans = _traces_until(bundle.spans, until)
    signals, resources = _until(bundle.signals, until), _until(bundle.resources, until)
    logs, changes = _until(bundle.logs, until), _until(bundle.changes, until)
    parts = []
    if spans is not None and len(spans):
        parts.append(Observed("traces", {"spans": spans}, origin=origin))
    if signals is not None or resources is not None:
        parts.append(Observed("metrics", {"signals": signals, "resources": resources}, origin=origin))
    if logs is not None and len(logs):
        parts.append(Observed("logs", {"logs": logs}, origin=origin))
    versions = None
    if signals is not None and (signals["destination_version"] != "").any():
        versions = signals[signals["destination_version"] != ""]
    if changes is not None or versions is not None:
        parts.append(Observed("changes", {"changes": changes, "versions": versions}, origin=origin))
    return Observations([p for p in parts if use is None or p.kind in use])
