"""The generator's traffic multiplier: the same incident at 1x and 10x the load."""

import pytest

from baynet.windows import Windows
from baynet.evidence import build_evidence
from baynet.lab.generator import generate
from baynet.settings import Settings


def test_ten_times_the_traffic_is_the_same_incident_with_ten_times_the_spans():
    one = generate("sock-shop", "carts", "latency", fault_start=1_700_000_000, before_s=300, after_s=200)
    ten = generate("sock-shop", "carts", "latency", fault_start=1_700_000_000, before_s=300, after_s=200, traffic=10)
    assert ten.event == one.event and ten.truth == one.truth
    assert 8 < len(ten.spans) / len(one.spans) < 12
    w = Windows.around(one.event["timestamp"], Settings())
    for incident in (one, ten):
        ev, _ = build_evidence(incident.spans, w.baseline, w.slices)
        carts = ev[(ev.service == "carts") & (ev.window >= 0)]
        assert (carts.own_state == 2).all()  # the fault shows at either load


def test_a_multiplier_out_of_range_is_refused():
    with pytest.raises(ValueError, match="traffic multiplier"):
        generate("sock-shop", "carts", "latency", fault_start=1_700_000_000, traffic=0)
