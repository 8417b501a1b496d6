"""The root cause is what was at fault when the alert fired or after it. Where the incident window runs on
past the alert (``BAYNET_SETTLE_S``, a later look), the alert is evidence in the slice that holds it and the
ranking asks for a fault from that slice on (baynet.analysis.infer.alert_slice, baynet.dbn.DBNModel.infer)."""

from __future__ import annotations

import pytest

from baynet.analysis.infer import alert_slice
from baynet.events import parse_object
from baynet.settings import Settings

T = 1_700_000_000.0


@pytest.mark.parametrize(("settle", "expected"), [(0, 2), (30, 2), (60, 1), (119, 1), (120, 0), (600, 0)])
def test_the_alert_is_in_the_slice_that_holds_it(settle, expected):
    (event,) = parse_object({"id": "e", "service": "front", "event_type": "latency", "timestamp": T,
                             "severity": "critical"})
    settings = Settings(_env_file=None, window_s=60, slices=3, settle_s=settle)
    assert alert_slice(event, settings) == expected
