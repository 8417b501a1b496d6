"""Bundle files as evidence sources: what a bundle holds, read as the live sources would have answered."""

from __future__ import annotations

from baynet.bundles.read import Bundle
from baynet.sources.base import Observations, Observed


def bundle_observations(bundle: Bundle, use: set[str] | None = None) -> Observations:
    """One :class:`Observed` per kind the bundle holds (and ``use`` allows): ``traces`` (its traces),
    ``metrics`` (``signals.csv``, ``resources.csv``), ``logs`` (``logs.csv``), ``changes`` (``changes.csv`` and the signal rows that
    name a ``destination_version``)."""
    origin = str(bundle.path)
    parts = []
    if bundle.spans is not None and len(bundle.spans):
        parts.append(Observed("traces", {"spans": bundle.spans}, origin=origin))
    if bundle.signals is not None or bundle.resources is not None:
        parts.append(Observed("metrics", {"signals": bundle.signals, "resources": bundle.resources}, origin=origin))
    if bundle.logs is not None and len(bundle.logs):
        parts.append(Observed("logs", {"logs": bundle.logs}, origin=origin))
    versions = None
    if bundle.signals is not None and (bundle.signals["destination_version"] != "").any():
        versions = bundle.signals[bundle.signals["destination_version"] != ""]
    if bundle.changes is not None or versions is not None:
        parts.append(Observed("changes", {"changes": bundle.changes, "versions": versions}, origin=origin))
    return Observations([p for p in parts if use is None or p.kind in use])
