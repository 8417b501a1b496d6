"""Looking again where the first look saw nothing of any service's own (baynet/analysis/look_again.py): the
second look stands only where it saw more, and only where the data delivered the wait."""

from __future__ import annotations

import dataclasses
import json

import pytest

from baynet.analysis.look_again import QUIET, nothing_of_its_own, uncovered
from baynet.bundles.analyse import analyse_bundle
from baynet.bundles.read import load_bundle
from baynet.dbn import DBNModel
from baynet.lab.datasets.rollouts import hard_rollout_bundle
from baynet.settings import Settings


def _bundle(tmp_path, seed):
    bundle = load_bundle(hard_rollout_bundle(tmp_path / f"b{seed}", "sock-shop", seed))
    return bundle, json.loads((bundle.path / "truth.json").read_text())["root_cause"]


def test_a_first_look_that_saw_nothing_of_its_own_reads_a_slice_later_and_takes_what_it_saw(tmp_path):
    """Seed 41: a bad catalogue v2 logs an exception in ~4 % of its lines; at the alert no service's own work
    looks anomalous (the changed services tie on their change priors, orders first). A minute later the
    exceptions have reached catalogue's log threshold."""
    bundle, truth = _bundle(tmp_path, 41)
    once = analyse_bundle(bundle, Settings(look_again_max_s=0))
    assert nothing_of_its_own(once) and once.ranking[0]["service"] == "orders" != truth
    twice = analyse_bundle(bundle)
    assert not nothing_of_its_own(twice)
    assert twice.ranking[0]["service"] == truth == "catalogue"
    looked = twice.fetch["looked_again"]
    assert looked["after_s"] == 60.0 and looked["because"] == QUIET and looked["first_look"][0]["service"] == "orders"
    assert "the first look had ranked orders first" in twice.headline
    capped = analyse_bundle(bundle, Settings(look_again_max_s=59))   # a slice away: over the limit, said so
    assert capped.ranking[0]["service"] == "orders"
    assert any("another look was called for" in n and "BAYNET_LOOK_AGAIN_MAX_S=59" in n for n in capped.notes)


def test_a_second_look_that_sees_nothing_more_leaves_the_first_standing_and_the_model_its_update(tmp_path):
    """Seed 35: a user-db v2 logs one exception line in the window; a minute later still no service's own work
    looks anomalous. The first look's ranking stands, and the model keeps the first look's update."""
    bundle, _ = _bundle(tmp_path, 35)
    one, two = DBNModel(), DBNModel()
    once = analyse_bundle(bundle, Settings(look_again_max_s=0), model=one)
    twice = analyse_bundle(bundle, model=two)
    assert [r["service"] for r in twice.ranking] == [r["service"] for r in once.ranking]
    assert "looked_again" not in twice.fetch
    assert any(n.endswith("still no service's own work looked anomalous: the first look stands") for n in twice.notes)
    assert two.to_json() == one.to_json()


def test_a_second_look_the_data_did_not_deliver_is_set_aside(tmp_path):
    """Seed 41 with its metrics ending at the alert (data still to land, or a recording that ended): the
    minute after it holds logs only, and a second look would judge a slice the metrics never delivered."""
    bundle, _ = _bundle(tmp_path, 41)
    end = bundle.event.unix
    cut = dataclasses.replace(bundle, signals=bundle.signals[bundle.signals["time"] <= end],
                              resources=bundle.resources[bundle.resources["time"] <= end])
    result = analyse_bundle(cut)
    assert result.ranking[0]["service"] == "orders" and "looked_again" not in result.fetch
    assert any("signals and resources did not reach its end: the first look stands" in n for n in result.notes)


@pytest.mark.parametrize(("after", "step", "short"), [
    ({"signals": 1060.0, "spans": 1059.0}, 15.0, []),          # both reach the end
    ({"signals": 1015.0, "spans": 1059.0}, 60.0, []),          # a 60 s series may stamp 45 s before the end
    ({"signals": 1015.0, "spans": 1059.0}, 15.0, ["signals"]),  # a 15 s series may not
    ({"signals": 1060.0, "spans": 1005.0}, 60.0, ["spans"]),   # 5 s of the minute's spans
    ({"signals": 1060.0}, 15.0, ["spans"]),                    # none at all
])
def test_a_source_delivered_the_wait_where_it_reaches_its_second_half_or_its_own_step(after, step, short):
    before = {"signals": 1000.0, "spans": 999.0}
    assert uncovered(before, after, until=1060.0, wait=60.0, step=step) == short
    assert uncovered({}, after, until=1060.0, wait=60.0, step=step) == []   # a source the first look lacked
