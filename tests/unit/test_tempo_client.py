"""The Tempo client against the replay server: paging, retries, 404s, 422 fallback, auth headers."""

import time
from dataclasses import replace

import pytest

from baynet.otlp import Span
from baynet.sources.tempo import covered
from baynet.tempo.client import TempoClient, TempoRequestError, TempoUnavailable
from baynet.local.tempo import TempoServer, TraceStore


def traces(n, start_s, step_s=0.5, service="front"):
    spans = []
    for i in range(n):
        tid = f"{i + 1:032x}"
        t = int((start_s + i * step_s) * 1e9)
        spans.append(Span(tid, f"{i + 1:016x}", "", service, "GET /", "server", t, t + 1_000_000, "unset",
                          resource={"service.name": service}))
    return spans


@pytest.fixture
def server():
    store = TraceStore()
    store.add_spans(traces(100, 1_700_000_000))
    with TempoServer(store) as srv:
        yield srv


def test_busy_window_is_split_until_nothing_is_cut(server):
    with TempoClient(server.url) as tempo:
        ids = tempo.search_window('{ resource.service.name = "front" }', 1_700_000_000, 1_700_000_060, limit=20)
    assert len(ids) == 100 and tempo.stats.truncated == 0 and tempo.stats.searches > 5


def test_retry_after_is_honoured_and_5xx_retried(server):
    server.inject("/api/search", 429, "job queue full", headers={"Retry-After": "1"})
    server.inject("/api/search", 503, "down")
    with TempoClient(server.url, backoff_s=0.01) as tempo:
        t0 = time.monotonic()
        found = tempo.search("{}", 1_700_000_000, 1_700_000_100, limit=5)
        assert time.monotonic() - t0 >= 1.0 and len(found) == 5 and tempo.stats.retries == 2


def test_4xx_is_not_retried_and_5xx_gives_up(server):
    with TempoClient(server.url, backoff_s=0.01, max_retries=2) as tempo:
        with pytest.raises(TempoRequestError, match="400"):
            tempo.search("{ nonsense", 1, 2)
        server.inject("/api/search", 500, "boom", times=3)
        with pytest.raises(TempoUnavailable, match="failed 3 times"):
            tempo.search("{}", 1_700_000_000, 1_700_000_100)
        assert tempo.stats.retries == 2


def test_missing_trace_counted_and_too_large_falls_back_to_v2():
    store = TraceStore()
    big = traces(3, 1_700_000_000)
    for s in big:  # one trace of three spans (~600 bytes), over a 450-byte limit
        s.trace_id = f"{1:032x}"
    store.add_spans(big)
    small = traces(1, 1_700_000_200)
    small[0].trace_id, small[0].span_id = f"{2:032x}", f"{9:016x}"
    store.add_spans(small)
    with TempoServer(store, max_trace_bytes=450) as srv, TempoClient(srv.url) as tempo:
        frame = tempo.fetch_frame([f"{1:032x}", "ab" * 16, f"{2:032x}"])
        assert tempo.stats.not_found == 1 and tempo.stats.partial == 1
        assert sorted(frame["trace_id"].value_counts().to_dict().items()) == [(f"{1:032x}", 2), (f"{2:032x}", 1)]
        assert any(r.startswith("/api/v2/traces/") for r in srv.requests)


def test_connection_reset_is_retried(server):
    server.inject("/api/traces", 0, reset=True)
    with TempoClient(server.url, backoff_s=0.01) as tempo:
        assert tempo.trace(f"{5:032x}")[0].span_id == f"{5:016x}"
        assert tempo.stats.retries == 1


def test_tenant_and_auth_headers():
    store = TraceStore()
    with TempoServer(store, require_org_id="team-a") as srv:
        with TempoClient(srv.url, max_retries=0) as anonymous:
            with pytest.raises(TempoRequestError, match="401"):
                anonymous.search("{}", 1, 2)
        with TempoClient(srv.url, org_id="team-a", token="s3cret") as tempo:
            assert tempo.search("{}", 1, 2) == []
            assert tempo.http.headers["Authorization"] == "Bearer s3cret"


def test_unreadable_traces_are_skipped_and_reported_as_partial_evidence(server):
    server.inject("/api/traces/", 503, "down", times=3)  # the first trace fails all its attempts
    with TempoClient(server.url, backoff_s=0.01, max_retries=2) as tempo:
        frame = tempo.fetch_frame([f"{1:032x}", f"{2:032x}"], concurrency=1)
        assert sorted(frame["span_id"]) == [f"{2:016x}"]
        stats = tempo.stats.as_dict()
    assert stats["failed"] == 1 and stats["retries"] == 2 and stats["evidence_complete"] is False
    assert TempoClient(server.url).stats.complete


def test_truncated_json_is_skipped_and_counted(server):
    server.inject("/api/traces/", 200, '{"batches": [{"resource"', times=1)
    with TempoClient(server.url, backoff_s=0.01) as tempo:
        frame = tempo.fetch_frame([f"{3:032x}", f"{4:032x}"], concurrency=1)
    stats = tempo.stats.as_dict()
    assert stats["failed"] == 1 and not stats["evidence_complete"] and len(frame) == 1
    assert any("skipped" in n for n in stats["notes"])


def test_a_sample_covers_where_its_data_are_not_the_empty_start_of_its_window():
    """Data that begin and end inside the window: a sub-window read whole covers from its first trace on, a
    cut one (only its newest traces returned) from its start; each up to its newest trace; the small gaps
    between them are traffic. A top-up's cut sub-window covers only what it returned."""
    t0 = 1_700_000_000
    store = TraceStore()
    sparse = traces(3, t0, step_s=10)  # t0, t0+10, t0+20, then a busy stretch from t0+60 to t0+89.5
    busy = [replace(s, trace_id=f"{i + 100:032x}") for i, s in enumerate(traces(60, t0 + 60))]
    store.add_spans(sparse + busy)
    q = '{ resource.service.name = "front" }'
    with TempoServer(store) as srv, TempoClient(srv.url) as tempo:
        whole_ids, whole = tempo.sample_window(q, t0 - 100, t0 + 100, budget=100)
        _, cut = tempo.sample_window(q, t0 - 60, t0 + 120, budget=20)
        _, late = tempo.sample_window(q, t0 + 55, t0 + 100, budget=100)
        _, top_up = tempo.sample_window(q, t0 + 55, t0 + 100, budget=5)
    assert len(whole_ids) == 63 and len(whole) == 1
    assert covered({"front": whole}) == [(t0, t0 + 89.5 + 1)]  # read whole: its traces' extent
    assert [c.cut for c in cut if c.matched] == [False, True, True]  # the sparse start read whole
    # not t0 - 15 to t0 + 121, the sub-windows with data
    assert covered({"front": cut}) == [(t0, t0 + 89.5 + 1)]
    assert [c.cut for c in top_up] == [True]
    assert covered({"front": late, "rare": top_up}) == [(t0 + 55, t0 + 89.5 + 1)]
    assert covered({"front": late, "rare": top_up}, frozenset({"rare"})) == [(t0 + 60, t0 + 89.5 + 1)]


def test_every_request_carries_the_tenant_credentials_prefix_and_timeout():
    """Requests go to the transport without httpx's client around them: the tenant, the credentials (bearer
    or basic), a base URL's own path and the timeout must still reach every one, trace reads included."""
    import base64

    import httpx

    seen = []

    def answer(request):
        seen.append(request)
        if request.url.path.endswith("/api/search"):
            return httpx.Response(200, json={"traces": [], "metrics": {}})
        return httpx.Response(404)

    with TempoClient("http://gateway.test/tempo/", org_id="team-a", token="s3cret", timeout_s=7,
                     transport=httpx.MockTransport(answer)) as tempo:
        assert tempo.search('{ resource.service.name = "front" }', 1, 2) == []
        assert tempo.trace_raw(f"{1:032x}") is None
    with TempoClient("http://gateway.test/tempo", username="sre", password="pw",
                     transport=httpx.MockTransport(answer)) as basic:
        basic.search("{}", 1, 2)
    search, trace, with_basic = seen
    assert str(search.url).startswith("http://gateway.test/tempo/api/search?")
    assert search.url.params["q"] == '{ resource.service.name = "front" }' and search.url.params["end"] == "2"
    assert str(trace.url) == f"http://gateway.test/tempo/api/traces/{1:032x}"
    for request in (search, trace):
        assert request.headers["X-Scope-OrgID"] == "team-a"
        assert request.headers["Authorization"] == "Bearer s3cret"
        assert request.headers["Accept"] == "application/json"
        assert request.extensions["timeout"]["read"] == 7
    assert with_basic.headers["Authorization"] == "Basic " + base64.b64encode(b"sre:pw").decode()
    assert tempo.stats.not_found == 1
