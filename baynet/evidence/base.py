"""What an evidence kind returns: its per-service, per-slice judgement of what the sources read."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Judged:
    """One kind's evidence for one incident.

    ``evidence``: one row per service and window (-1 the baseline, 0.. the incident slices) with the
    kind's columns and its DBN observation levels (None when the kind judges no service, e.g. changes);
    ``notes``: what it could not judge, or how it read the data; ``edges``: per call edge propagation
    counts (traces); ``call_edges``: caller -> callee pairs the data shows; ``prior_factor``: root-cause
    prior odds multipliers (changes); ``found``: what it found, one line each (changes: every change)."""

    kind: str
    evidence: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    edges: pd.DataFrame | None = None
    call_edges: set[tuple[str, str]] = field(default_factory=set)
    prior_factor: dict[str, float] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)   # logs: the vocabulary the lines were keyed by
    change_ages: dict[str, float] = field(default_factory=dict)  # changes: seconds since each service changed
    lines: pd.DataFrame | None = None  # logs: every line with its template ``key`` (as :func:`keyed` gives them)
