"""Data shapes (baynet.lab.degrade): each transformation does what the matrix says it does."""

import numpy as np
import pytest

from baynet.bundles.read import load_bundle
from baynet.lab.degrade import NotApplicable, degrade


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    from baynet.lab.datasets.rollouts import hard_rollout_bundle

    return load_bundle(hard_rollout_bundle(tmp_path_factory.mktemp("d") / "b", "sock-shop", 3))


def test_resampling_sums_counts_weights_ratios_and_keeps_pods_apart(rollout):
    one = degrade(rollout, "resample_1m")
    s, r = one.signals, one.resources
    assert (s["time"] % 60 == 0).all() and (s["window_s"] == 60).all()
    # requests are summed per series and minute; an error ratio is the requests-weighted one
    before = rollout.signals
    key = before.iloc[len(before) // 2][["source", "destination", "destination_version"]]
    mine = before[(before["source"] == key["source"]) & (before["destination"] == key["destination"])
                  & (before["destination_version"] == key["destination_version"])].copy()
    mine["minute"] = np.ceil(mine["time"] / 60) * 60
    minute = mine["minute"].iloc[len(mine) // 2]
    part = mine[mine["minute"] == minute]
    row = s[(s["time"] == minute) & (s["source"] == key["source"]) & (s["destination"] == key["destination"])
            & (s["destination_version"] == key["destination_version"])].iloc[0]
    assert row["requests"] == part["requests"].sum()
    assert row["error_ratio"] == pytest.approx((part["requests"] * part["error_ratio"]).sum() / part["requests"].sum())
    # each pod stays its own series: a leak in one new pod is not averaged with its neighbours
    assert set(r["pod"]) == set(rollout.resources["pod"])
    assert not r.duplicated(["time", "service", "metric", "pod"]).any()


def test_the_other_shapes(rollout):
    assert degrade(rollout, "no_counts").signals["requests"].isna().all()
    flat = degrade(rollout, "no_percentiles").signals
    assert flat[["latency_ms_p50", "latency_ms_p90", "latency_ms_p99"]].isna().all().all()
    assert flat["latency_ms_avg"].notna().any()
    earlier, later = degrade(rollout, "alert_earlier"), degrade(rollout, "alert_later")
    assert rollout.event.unix - earlier.event.unix == pytest.approx(15.0)
    assert later.event.unix - rollout.event.unix == pytest.approx(15.0)
    graphless = degrade(rollout, "no_call_graph")
    assert (graphless.signals["source"] == "").all() and not graphless.topology
    foreign = degrade(rollout, "foreign_nodes")
    assert len(set(foreign.signals["destination"]) - set(rollout.signals["destination"])) == 3
    with pytest.raises(NotApplicable, match="no traces to drop"):
        degrade(rollout, "no_traces")
    with pytest.raises(NotApplicable, match="less than 12 windows of 300 s"):
        degrade(rollout, "resample_5m")
    assert degrade(rollout, "as_is") is rollout
    with pytest.raises(ValueError, match="unknown shape 'sideways'"):
        degrade(rollout, "sideways")


def test_latency_only_keeps_each_services_mean_latency_and_nothing_else(rollout):
    lat = degrade(rollout, "latency_only")
    assert lat.spans is None and lat.resources is None and lat.logs is None and lat.changes is None
    assert lat.topology == [] and lat.sources == ["signals"]
    s = lat.signals
    assert (s["source"] == "").all() and (s["destination_version"] == "").all() and (s["reporter"] == "destination").all()
    assert s[["requests", "error_ratio", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99"]].isna().all().all()
    assert not s.duplicated(["time", "destination"]).any()
    # one mean per service and step: the requests-weighted mean of what its proxies reported, every version
    before = rollout.signals[rollout.signals["reporter"] == "destination"]
    t, svc = s.iloc[len(s) // 2][["time", "destination"]]
    part = before[(before["time"] == t) & (before["destination"] == svc)]
    assert s[(s["time"] == t) & (s["destination"] == svc)]["latency_ms_avg"].iloc[0] == pytest.approx(
        (part["latency_ms_avg"] * part["requests"]).sum() / part["requests"].sum())
