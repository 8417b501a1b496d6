"""One analysis, shared by production and evaluation: observations in, ranked root causes out.

:func:`analyse` is the domain part of the incident flow's steps 2-5 -- judge what the sources read, fuse
it, complete the graph, re-estimate the DBN, infer -- as one function. The Prefect flow
(``flows/incident.py``) reads the sources and the topology, calls it, and stores the result; the
in-process bundle analysis (``baynet eval bundles``), the replay and the accuracy harness call the same
function, so every accuracy figure is measured on what production runs. Settings are passed, never
read from the environment here.

Modules: ``topology`` (step 3), ``infer`` (steps 4-5: model and ranking), ``look_again`` (when a first
ranking calls for a second look, a little later: the flow and the bundle analysis both ask it),
``exemplars`` (traces that show the problem), ``store`` (step 6: artifacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from baynet.analysis.exemplars import exemplars, log_templates
from baynet.analysis.headline import describe
from baynet.analysis.infer import call_graph_unknown, infer, reestimate
from baynet.analysis.topology import incident_topology
from baynet.dbn import DBNModel
from baynet.events import AnomalyEvent
from baynet.evidence import JUDGES, Judged
from baynet.evidence.fuse import fuse
from baynet.evidence.traces import EDGE_COLUMNS
from baynet.settings import Settings
from baynet.sources.base import Observations
from baynet.topology import Topology
from baynet.windows import Windows

__all__ = ["AnalysisResult", "Windows", "analyse"]


@dataclass
class AnalysisResult:
    """What one analysis found, and what it rested on."""

    event: AnomalyEvent
    ranking: list[dict[str, Any]]          # rank, service, posterior, prior, evidence, why (+ exemplars)
    path: list[str]                        # the most probable propagation path, root cause first
    evidence: pd.DataFrame                 # the fused evidence, one row per service and window
    topology: Topology                     # the graph the model was built on
    model: DBNModel                        # the model after this incident's update
    model_update: pd.DataFrame             # the per-edge span counts this incident adds to the model
    used: list[str]                        # the kinds that gave evidence
    notes: list[str] = field(default_factory=list)
    fetch: dict[str, Any] = field(default_factory=dict)   # what the reading saw (ranking.json's "fetch")
    structure_changes: dict[str, Any] = field(default_factory=dict)
    judged: dict[str, Judged] = field(default_factory=dict)
    spans: pd.DataFrame | None = None
    log_templates: list[str] = field(default_factory=list)   # the log vocabulary this incident adds
    headline: str = ""                     # the sentence an SRE reads first (analysis/headline.py)
    headline_short: str = ""               # its short form, for the index


def analyse(event: AnomalyEvent, observations: Observations, model: DBNModel, settings: Settings, *,
            topology: Topology | None = None, use: set[str] | None = None) -> AnalysisResult:
    """Judge the observations (every kind in :data:`baynet.evidence.JUDGES`, or those in ``use``), fuse
    them, build the incident's graph on ``topology`` (live, a snapshot or a bundle's; None: from the data),
    re-estimate ``model`` in place and rank the services of the blast radius."""
    windows = Windows.around(event.unix, settings)
    judged: dict[str, Judged] = {}
    for kind, judge in JUDGES.items():
        if use is not None and kind not in use:
            continue
        found = judge(observations, windows, settings, model)
        if found is not None:
            judged[kind] = found
    evidence = fuse(*(judged[k].evidence if k in judged else None for k in ("traces", "metrics", "logs")))
    traces = judged.get("traces")
    edges = traces.edges if traces is not None and traces.edges is not None else pd.DataFrame(columns=EDGE_COLUMNS)
    graph = incident_topology(topology, list(judged.values()), set(evidence["service"]), settings.namespace,
                              windows.incident[1] - windows.incident[0])
    templates = judged["logs"].templates if "logs" in judged else []
    structure_changes = reestimate(model, graph, edges, templates)
    factors = {s: f for j in judged.values() for s, f in j.prior_factor.items()} or None
    ranking, path = infer(model, event, evidence, graph, settings, factors) if not evidence.empty else ([], [])
    spans = observations.table("spans") if "traces" in judged else None
    exemplars(spans, ranking, windows, settings.trace_url_template)
    log_templates(judged["logs"].lines if "logs" in judged else None, ranking, windows,
                  settings.trace_url_template)
    used = [k for k, j in judged.items() if j.evidence is not None or j.prior_factor]
    notes = [n for j in judged.values() for n in j.notes]
    if ranking and call_graph_unknown(model, [r["service"] for r in ranking]):
        notes.append("no call graph known (no traces, topology or callers on the series): what callers "
                     "experience is not used to tell the cause from services that only passed it on")
    fetch = observations.stats()
    fetch["sources"] = used
    if notes:
        fetch["notes"] = notes
    if "changes" in judged:
        fetch["changes"] = judged["changes"].found
        fetch["change_ages"] = {s: round(a, 1) for s, a in judged["changes"].change_ages.items()}
    n_slices = int(evidence["window"].max()) + 1 if len(evidence) else settings.slices
    story = describe(ranking, path, evidence, event.service, event.unix, settings.window_s, n_slices, fetch)
    for row in ranking:
        row["in_words"] = story["words"].get(row["service"], "")
    return AnalysisResult(event, ranking, path, evidence, graph, model, edges, used, notes, fetch,
                          structure_changes, judged, spans, templates, story["headline"], story["short"])
