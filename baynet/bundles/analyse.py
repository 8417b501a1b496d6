"""Analyse a bundle in-process: :func:`baynet.analysis.analyse` on what the bundle holds, without queue,
Tempo or Prometheus in between -- the same analysis the incident flow runs, fast enough for hundreds of
bundles in ``baynet eval bundles``.

Evidence comes from every kind the bundle holds (``use`` restricts it: ``{"traces"}``, ``{"metrics"}``,
...), fused per service and window (:mod:`baynet.evidence.fuse`). The graph is ``topology.csv``, else
the call edges the signals and the traces show.
"""

from __future__ import annotations

from baynet.analysis import AnalysisResult, analyse
from baynet.bundles.read import Bundle
from baynet.dbn import DBNModel
from baynet.settings import Settings
from baynet.sources.bundle import bundle_observations
from baynet.topology import topology_from_edges
from baynet.windows import Windows


def analyse_bundle(bundle: Bundle, settings: Settings | None = None, *, use: set[str] | None = None,
                   model: DBNModel | None = None) -> AnalysisResult:
    """``model``: the persistent model to re-estimate and rank with (as the flow's is; updated in place),
    else a fresh one."""
    settings = settings or Settings()
    given = topology_from_edges([(a, b, 0.0, 0.0) for a, b in bundle.topology], settings.namespace, "bundle") \
        if bundle.topology else None
    until = Windows.around(bundle.event.unix, settings).incident[1]
    return analyse(bundle.event, bundle_observations(bundle, use, until), model if model is not None else DBNModel(),
                   settings, topology=given, use=use)
