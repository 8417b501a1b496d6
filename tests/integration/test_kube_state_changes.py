"""The cluster's own record of changes, end to end through Debian's Prometheus: a hard rollout's
``changes.csv`` rendered as kube-state-metrics series (ReplicaSets created, Deployment generations),
backfilled, read back by :class:`baynet.sources.kube_state.KubeStateChanges` beside the Istio and cAdvisor
readers, and analysed: the changes are found where they happened and the bad version is named."""

from __future__ import annotations

import json
import math
import random

import pytest

from baynet.analysis import analyse
from baynet.bundles.read import load_bundle
from baynet.dbn import DBNModel
from baynet.local.openmetrics import render
from baynet.local.stack import PrometheusServer, prometheus_available
from baynet.settings import Settings
from baynet.sources import gather
from baynet.sources.kube_state import KubeStateChanges, changes_from_series, service_of
from baynet.sources.prometheus import IstioVersions, PrometheusMetrics
from baynet.windows import Windows
from tests.conftest import require

pytestmark = pytest.mark.integration


def _clear_latency_seed() -> int:
    from baynet.lab.datasets.rollouts import CLEAR, EFFECT_RANGES, EFFECTS
    from baynet.lab.generator import MESHES

    spec = MESHES["sock-shop"]
    eligible = [s for s in sorted(spec["services"]) if s != spec["entry"]]
    for seed in range(1, 80):
        rng = random.Random(seed)
        changed = rng.sample(eligible, min(len(eligible), rng.randint(2, 6)))
        rng.choice(changed)
        effect = rng.choice(EFFECTS)
        lo, hi = EFFECT_RANGES[effect]
        size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        if effect == "latency" and size >= 2 * CLEAR[effect] and len(changed) >= 3:
            return seed
    raise AssertionError("no clear latency rollout among the seeds")


@pytest.fixture(scope="module")
def rollout_in_prometheus(tmp_path_factory):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from baynet.lab.datasets.rollouts import hard_rollout_bundle

    work = tmp_path_factory.mktemp("ksm")
    path = hard_rollout_bundle(work / "bundle", "sock-shop", _clear_latency_seed())
    bundle = load_bundle(path)
    om = work / "series.om"
    om.write_text(render(bundle.signals, bundle.resources, "default", bundle.changes).text)
    server = PrometheusServer(om, work / "prometheus").start()
    yield server, bundle, json.loads((path / "truth.json").read_text())
    server.stop()


def _settings(server) -> Settings:
    return Settings(prometheus_url=server.url, namespace="default", tempo_url="http://127.0.0.1:9",
                    metrics_step_s=15, _env_file=None)


def test_kube_state_metrics_give_each_rollout_where_it_began(rollout_in_prometheus):
    server, bundle, truth = rollout_in_prometheus
    settings = _settings(server)
    windows = Windows.around(bundle.event.unix, settings)
    observed = KubeStateChanges(settings).fetch(bundle.event, windows)
    rows = observed.tables["changes"]
    expected = bundle.changes[bundle.changes["time"] >= windows.baseline[0]]
    assert rows is not None and set(rows["service"]) == set(expected["service"])
    assert (rows["kind"] == "deploy").all() and (rows["source"] == "kube-state-metrics").all()
    for r in expected.itertuples():  # the ReplicaSet's creation time is the change's, to the second
        found = rows[rows["service"] == r.service]
        assert abs(float(found["time"].iloc[0]) - r.time) < 1.0
    assert truth["root_cause"] in set(rows["service"])


def test_a_rollout_read_live_is_analysed_as_the_bundle_is(rollout_in_prometheus):
    server, bundle, truth = rollout_in_prometheus
    settings = _settings(server)
    windows = Windows.around(bundle.event.unix, settings)
    observations = gather(bundle.event, windows, [PrometheusMetrics(settings), IstioVersions(settings),
                                                  KubeStateChanges(settings)])
    result = analyse(bundle.event, observations, DBNModel(), settings)
    assert result.ranking[0]["service"] == truth["root_cause"]
    assert any("ReplicaSet" in line and "created" in line for line in result.fetch["changes"])
    assert "answers in" in result.ranking[0]["evidence"]  # the versions compared, read from Istio's series


def test_generations_without_a_new_replicaset_and_new_images_are_changes_too():
    t0 = 1_700_000_000.0
    answers = {
        "replicasets": [{"metric": {"replicaset": "cart-v2-abc", "owner_name": "cart-v2"},
                         "values": [[t0 + 60, str(t0 + 50)], [t0 + 75, str(t0 + 50)]]}],
        "generations": [
            {"metric": {"deployment": "cart-v2"}, "values": [[t0, "3"], [t0 + 60, "4"], [t0 + 75, "4"]]},
            {"metric": {"deployment": "user"}, "values": [[t0, "7"], [t0 + 300, "8"]]}],
        "images": [
            {"metric": {"container": "cart", "image": "shop/cart:1.4"}, "values": [[t0, "1"], [t0 + 45, "1"]]},
            {"metric": {"container": "cart", "image": "shop/cart:1.5"}, "values": [[t0 + 60, "1"]]},
            {"metric": {"container": "pay", "image": "shop/pay:2.0"}, "values": [[t0 + 600, "1"]]}],
    }
    rows = changes_from_series(answers, t0, t0 + 900, 15.0)
    by = {(r.service, r.kind): r for r in rows.itertuples()}
    assert set(by) == {("cart", "deploy"), ("user", "spec")}  # cart's generation rose with its ReplicaSet
    assert by[("cart", "deploy")].time == t0 + 50
    assert "image shop/cart:1.5 (was shop/cart:1.4)" in by[("cart", "deploy")].detail
    assert by[("user", "spec")].time == t0 + 300 and "generation 7 -> 8" in by[("user", "spec")].detail
    assert service_of("reviews-v2") == "reviews" and service_of("orders-db") == "orders-db"
    # pay's only image, first seen late: a container that started, not a change of image
    assert ("pay", "image") not in by
    assert changes_from_series({}, t0, t0 + 900, 15.0) is None
