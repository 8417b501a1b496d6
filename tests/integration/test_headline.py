"""The headline on every development mesh's bundles: it names the ranking's top service, and every piece of
evidence it cites comes from a source present in that incident (traces, metrics, logs)."""

from __future__ import annotations

import pytest

from baynet.analysis.headline import findings
from baynet.bundles.analyse import analyse_bundle
from baynet.bundles.read import load_bundle
from tests.conftest import SHARED, require

pytestmark = pytest.mark.integration

NEZHA = SHARED / "datasets" / "nezha"
RCD = SHARED / "datasets" / "rcd-sockshop"


def _nezha(root, kinds, out):
    from baynet.lab.datasets.convert import _read_metric_day, nezha_bundle
    from baynet.lab.datasets.nezha import list_cases

    cases = [c for c in list_cases(root) if c.trace_files]
    picked = [next(c for c in cases if c.fault_type == k) for k in kinds]
    days = {}
    for i, case in enumerate(picked):
        days.setdefault(case.day, _read_metric_day(root / case.day / "metric"))
        yield nezha_bundle(case, root, out / f"{root.name}-{i}", metrics_day=days[case.day])


def _bundles(tmp_path):
    from baynet.lab.datasets.convert import rcd_bundle
    from baynet.lab.datasets.rollouts import rollout_bundle

    require(NEZHA.is_dir() and RCD.is_dir(), f"the development datasets under {SHARED / 'datasets'}")
    yield from _nezha(NEZHA / "onlineboutique", ["cpu_contention", "network_delay"], tmp_path)
    yield from _nezha(NEZHA / "trainticket", ["exception", "return"], tmp_path)
    yield rcd_bundle(RCD / "carts-cpu" / "1", tmp_path / "rcd")
    yield rollout_bundle(tmp_path / "rollout", "sock-shop", "carts", 1)


def test_the_headline_names_the_top_service_and_only_evidence_that_is_there(tmp_path):
    seen_sources = set()
    for path in _bundles(tmp_path):
        bundle = load_bundle(path)
        result = analyse_bundle(bundle)
        top = result.ranking[0]["service"]
        assert result.headline.startswith(f"{top} is the likely cause (P="), path.name
        assert result.headline_short.startswith(top)
        cited = findings(result.evidence, top)
        sources = {source for _, _, source, _ in cited}
        assert sources <= set(result.used), (path.name, sources, result.used)
        for _, phrase, _, _ in cited[:2]:
            assert phrase in result.headline
        if "logs" not in result.used:
            assert "logged" not in result.headline
        seen_sources |= sources
    assert {"traces", "metrics", "logs"} <= seen_sources  # every source was cited somewhere
