"""Evidence for the DBN: what each kind of observation says about each service in each time slice.

One module per kind, side by side, each with a ``judge(observations, windows, settings)`` that returns a
:class:`~baynet.evidence.base.Judged` (or None when the incident has none of its data): ``traces``
(spans -> per-service evidence and per-edge propagation counts), ``metrics`` (golden signals and
resources), ``logs`` (log templates: new warnings and errors, vanished steps within spans), ``changes``
(deployments: a prior, and the canary comparison). ``fuse`` puts the kinds into
one frame for the DBN. A new kind is one module and one entry in :data:`JUDGES`.
"""

from __future__ import annotations

from typing import Callable

from baynet.evidence import changes, logs, metrics, traces
from baynet.evidence.base import Judged
from baynet.evidence.traces import (
    BAND_COLUMNS,
    EDGE_COLUMNS,
    EVIDENCE_COLUMNS,
    Thresholds,
    build_evidence,
    spans_frame,
)

# Judged in this order: the metric evidence follows the slices the trace evidence keeps.
JUDGES: dict[str, Callable[..., Judged | None]] = {
    "traces": traces.judge,
    "metrics": metrics.judge,
    "logs": logs.judge,
    "changes": changes.judge,
}

__all__ = ["BAND_COLUMNS", "EDGE_COLUMNS", "EVIDENCE_COLUMNS", "JUDGES", "Judged", "Thresholds", "build_evidence",
           "spans_frame"]
