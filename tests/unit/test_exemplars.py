"""Exemplar traces per flagged service: failed and slowest traces of the incident slices, linked through
BAYNET_TRACE_URL_TEMPLATE (http(s) only), shown on the incident page."""

import time

from baynet.analysis.exemplars import exemplars
from baynet.windows import Windows
from baynet.artifacts import structure_html
from baynet.evidence.traces import spans_frame
from baynet.lab.generator import generate
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


def test_unusual_shape_is_a_trace_whose_calls_the_baseline_never_made():
    # a failed dependency (payment) ends the caller's request (orders) before its later calls: a shape
    # the baseline, without failures, never had
    inc = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, rate_per_s=2.0)
    frame = spans_frame(inc.spans)
    windows = Windows.around(inc.event["timestamp"], Settings(_env_file=None))
    ranking = [{"rank": 1, "service": "orders", "posterior": 0.9, "evidence": ""}]
    exemplars(frame, ranking, windows, None, per_kind=2)
    odd = [e for e in ranking[0]["exemplars"] if e["why"].startswith("unusual shape")]
    base_lo, base_hi = windows.baseline

    def calls(trace_id: str) -> set[tuple]:
        shapes = set()
        for s in inc.spans:
            if s.trace_id == trace_id and s.service == "orders":
                kids = sorted((k.service, k.name) for k in inc.spans if k.trace_id == trace_id
                              and k.parent_span_id == s.span_id)
                shapes.add((s.name, tuple(kids)))
        return shapes

    base_shapes = set()
    for trace_id in {s.trace_id for s in inc.spans if s.service == "orders" and base_lo <= s.start_ns / 1e9 < base_hi}:
        base_shapes |= calls(trace_id)
    assert odd, ranking[0]["exemplars"]
    for e in odd:
        assert calls(e["trace_id"]) - base_shapes  # some span of orders made calls no baseline span made
    # a service whose calls never change gets no unusual-shape exemplar
    quiet = [{"rank": 1, "service": "catalogue", "posterior": 0.1, "evidence": ""}]
    exemplars(frame, quiet, windows, None)
    assert not any(e["why"].startswith("unusual shape") for e in quiet[0].get("exemplars", []))
