"""What an evidence source is: something that reads one kind of observation for an incident's windows.

A source reads; it does not judge. It returns rows in the incident bundle's neutral shapes
(:mod:`baynet.bundles.format`), one table or a few, so live backends and bundle files feed the same
evidence code (:mod:`baynet.evidence`), which turns the rows into per-service, per-slice evidence:

=========  ======================================  ============================================
kind       tables                                  read live from
=========  ======================================  ============================================
traces     ``spans`` (span frame)                  Tempo (:mod:`baynet.sources.tempo`)
metrics    ``signals``, ``resources``              Prometheus (:mod:`baynet.sources.prometheus`; Tempo's
                                                   metrics-generator first, :mod:`baynet.sources.tempo_metrics`)
logs       ``logs`` (``logs.csv`` rows)                Loki (:mod:`baynet.sources.loki`)
changes    ``changes``, ``versions``               Prometheus (Istio ``destination_version``;
                                                   kube-state-metrics, :mod:`baynet.sources.kube_state`)
=========  ======================================  ============================================

A source that cannot answer raises; the errors in its ``unavailable`` mean "no data from here now" and
the analysis goes on with the other sources, marked partial. Any other error (a request the backend
rejects) fails the run with its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pandas as pd

if TYPE_CHECKING:
    from baynet.events import AnomalyEvent
    from baynet.windows import Windows

KINDS = ("traces", "metrics", "logs", "changes")


@dataclass
class Observed:
    """What one source read for one incident: neutral tables by name, and what the reading saw."""

    kind: str
    tables: dict[str, pd.DataFrame | None]
    stats: dict[str, Any] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)   # why what was read is incomplete
    origin: str = ""                                    # where it came from (a URL, a bundle directory)

    @property
    def has_data(self) -> bool:
        return any(t is not None and len(t) for t in self.tables.values())


class EvidenceSource(Protocol):
    """Reads one kind of observation (:data:`KINDS`) for an incident's windows."""

    name: ClassVar[str]                                  # e.g. "tempo", "prometheus"
    kind: ClassVar[str]                                  # which evidence it feeds
    unavailable: ClassVar[tuple[type[BaseException], ...]]  # "no data from here now": go on without it

    def fetch(self, event: "AnomalyEvent", windows: "Windows") -> Observed: ...


@dataclass
class Observations:
    """Everything read for one incident: what each source answered and which sources failed, and why."""

    parts: list[Observed] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # source kind -> why it gave nothing
    remarks: dict[str, Any] = field(default_factory=dict)  # more for the run's report (e.g. "topology")

    def table(self, name: str) -> pd.DataFrame | None:
        """One table over every part that has it (None when none has rows)."""
        frames = [p.tables[name] for p in self.parts if p.tables.get(name) is not None and len(p.tables[name])]
        if not frames:
            return None
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    @property
    def kinds(self) -> list[str]:
        """The kinds that gave rows, in :data:`KINDS` order."""
        have = {p.kind for p in self.parts if p.has_data}
        return [k for k in KINDS if k in have]

    def stats(self) -> dict[str, Any]:
        """What the reading saw, for ``ranking.json``'s ``fetch``: every part's stats, and
        ``evidence_complete``/``partial_reasons`` over all of them."""
        out: dict[str, Any] = {}
        reasons: list[str] = []
        complete = True
        for p in self.parts:
            out.update(p.stats)
            reasons += [r for r in p.stats.get("partial_reasons", []) + p.partial if r not in reasons]
            complete = complete and p.stats.get("evidence_complete", True) and not p.partial
        answered = [k for k in self.kinds if k != "changes"]
        for kind, why in self.failed.items():
            out[kind] = f"unavailable: {why}"
            reasons.append(f"no {kind}: {why}; {' and '.join(answered) or 'nothing'} alone")
            complete = False
        out["evidence_complete"] = complete
        out["partial_reasons"] = reasons
        out.update(self.remarks)
        return out
