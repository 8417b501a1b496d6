"""Evidence for the DBN: what each source says about each service in each time slice.

``traces`` turns spans into per-service, per-window evidence and per-edge propagation counts.
"""

from baynet.evidence.traces import (
    BAND_COLUMNS,
    EDGE_COLUMNS,
    EVIDENCE_COLUMNS,
    Thresholds,
    build_evidence,
    spans_frame,
)

__all__ = ["BAND_COLUMNS", "EDGE_COLUMNS", "EVIDENCE_COLUMNS", "Thresholds", "build_evidence", "spans_frame"]
