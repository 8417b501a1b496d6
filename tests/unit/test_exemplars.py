"""Exemplar traces per flagged service: failed and slowest traces of the incident slices, linked through
BAYNET_TRACE_URL_TEMPLATE (http(s) only), shown on the incident page."""

import time

from baynet.analysis import Windows, exemplars
from baynet.artifacts import structure_html
from baynet.evidence.traces import spans_frame
from baynet.generator import generate
from baynet.settings import Settings


def test_failed_and_slowest_traces_of_a_service_with_links():
    inc = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, rate_per_s=2.0)
    frame = spans_frame(inc.spans)
    windows = Windows.around(inc.event["timestamp"], Settings(_env_file=None))
    ranking = [{"rank": 1, "service": "payment", "posterior": 0.9, "evidence": ""},
               {"rank": 2, "service": "orders", "posterior": 0.1, "evidence": ""}]
    exemplars(frame, ranking, windows, "https://grafana.example/explore?left={trace_id}")
    ex = ranking[0]["exemplars"]
    assert [e["why"] for e in ex][:2] == ["failed", "failed"] and ex[-1]["why"].startswith("slowest")
    lo, hi = windows.incident
    for e in ex:
        mine = [s for s in inc.spans if s.trace_id == e["trace_id"] and s.service == "payment"]
        assert mine and all(lo <= s.start_ns / 1e9 < hi for s in mine)
        assert e["url"] == f"https://grafana.example/explore?left={e['trace_id']}"
    assert any(s.failed for s in inc.spans if s.trace_id == ex[0]["trace_id"] and s.service == "payment")
    page = structure_html("t", ranking, {"orders": ["payment"]}, "orders", ["payment", "orders"])
    assert page.count('class="exemplar" href="https://grafana.example/explore?left=') == len(ex) + len(
        ranking[1].get("exemplars", []))
    # a template that is not http(s) gives ids without links
    again = [{"rank": 1, "service": "payment", "posterior": 0.9, "evidence": ""}]
    exemplars(frame, again, windows, "javascript:alert({trace_id})")
    assert again[0]["exemplars"] and all(e["url"] is None for e in again[0]["exemplars"])
    assert 'href="javascript' not in structure_html("t", again, {}, "payment", ["payment"])
