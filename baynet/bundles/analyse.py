"""Analyse a bundle in-process: :func:`baynet.analysis.analyse` on what the bundle holds, without queue,
Tempo or Prometheus in between -- the same analysis the incident flow runs, fast enough for hundreds of
bundles in ``baynet eval bundles``.

Evidence comes from every kind the bundle holds (``use`` restricts it: ``{"traces"}``, ``{"metrics"}``,
...), fused per service and window (:mod:`baynet.evidence.fuse`). The graph is ``topology.csv``, else
the call edges the signals and the traces show.
"""

from __future__ import annotations

import copy

from baynet.analysis import AnalysisResult, analyse
from baynet.analysis.look_again import until_settled
from baynet.bundles.read import Bundle
from baynet.dbn import DBNModel
from baynet.settings import Settings
from baynet.sources.base import Observations
from baynet.sources.bundle import bundle_observations
from baynet.topology import topology_from_edges
from baynet.windows import Windows


def analyse_bundle(bundle: Bundle, settings: Settings | None = None, *, use: set[str] | None = None,
                   model: DBNModel | None = None) -> AnalysisResult:
    """``model``: the persistent model to re-estimate and rank with (as the flow's is; updated in place),
    else a fresh one. Where the first look calls for a second (:mod:`baynet.analysis.look_again`), the
    bundle is read that much further and ranked again, as the flow does after waiting; the model keeps
    the update of the look that stands only."""
    settings = settings or Settings()
    given = topology_from_edges([(a, b, 0.0, 0.0) for a, b in bundle.topology], settings.namespace, "bundle") \
        if bundle.topology else None
    model = model if model is not None else DBNModel()

    def read(s: Settings) -> Observations:
        return bundle_observations(bundle, use, Windows.around(bundle.event.unix, s).incident[1])

    observations = read(settings)
    before = copy.deepcopy(model)
    first = analyse(bundle.event, observations, model, settings, topology=given, use=use)

    def again(s: Settings, why: str) -> tuple[AnalysisResult, Observations]:
        seen = read(s)  # each later look on the model as it came, as the flow reloads it
        return analyse(bundle.event, seen, copy.deepcopy(before), s, topology=given, use=use), seen

    result = until_settled(first, observations, settings, again)
    if result.model is not model:  # a later look stands: its update is the one the model keeps
        model.__dict__.update(result.model.__dict__)
    return result
