"""The parser and the Tempo-compatible server against the genuine samples in ../shared/contracts/tempo."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from baynet.otlp import TempoParseError, loads, parse_any, parse_search, parse_trace
from baynet.local.tempo import TempoServer, TraceStore
from tests.conftest import CONTRACTS

TEMPO = CONTRACTS / "tempo"
SAMPLES = sorted(TEMPO.rglob("*.json"))
# SOURCES.md marks these three docs examples as hand-edited, invalid JSON.
INVALID = {"search_traceql_status_error__docs_api.json", "search_tags_v1__docs_api.json",
           "search_tags_v2__docs_api.json"}
TRACE_SAMPLES = [p for p in SAMPLES if p.name.startswith(("trace_", "otlp_"))]
SEARCH_SAMPLES = [p for p in SAMPLES if p.name.startswith("search") and p.name not in INVALID
                  and "traces" in json.loads(p.read_text())]


def test_samples_are_there(contracts):
    assert len(SAMPLES) >= 18 and INVALID <= {p.name for p in SAMPLES}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_parses_or_is_rejected_clearly(path):
    if path.name in INVALID:
        with pytest.raises(TempoParseError, match=r"not valid JSON: .*line \d+ column \d+"):
            parse_any(path.read_bytes())
        return
    kind, spans = parse_any(path.read_bytes())
    assert kind in ("trace", "search", "tags", "tag-values")
    for s in spans:
        assert re.fullmatch(r"[0-9a-f]{32}", s.trace_id)
        assert re.fullmatch(r"[0-9a-f]{16}", s.span_id)
        assert s.parent_span_id == "" or re.fullmatch(r"[0-9a-f]{16}", s.parent_span_id)
        assert s.end_ns >= s.start_ns > 10**18
        assert s.status in ("ok", "error", "unset")


def test_istio_trace_details():
    spans, _ = parse_trace(loads((TEMPO / "trace_v1_istio_bookinfo__kiali_tracingtest.json").read_bytes()))
    services = {s.service for s in spans}
    assert {"productpage", "reviews", "ratings", "details"} <= services  # istio.canonical_service wins
    assert all(isinstance(s.http_status, int) for s in spans)  # Envoy's "200" string became an int
    tree = {s.span_id for s in spans}
    assert sum(1 for s in spans if s.parent_span_id and s.parent_span_id not in tree) == 0


def test_known_values_from_samples():
    (old,) = parse_trace(loads((TEMPO / "trace_v1_instrumentationLibrarySpans__old_docs.json").read_bytes()))[0]
    assert old.trace_id == "00000000000000000123456789abcdef" and old.span_id == "0000000000001234"
    failed = parse_trace(loads((TEMPO / "otlp_resourceSpans_failed_requests__servicegraphs_testdata.json"
                                ).read_bytes()))[0]
    assert any(s.status == "error" for s in failed) and {s.kind for s in failed} >= {"client", "server"}
    traces, _ = parse_search(loads((TEMPO / "search_istio_ambient__kiali_tracingtest.json").read_bytes()))
    assert traces[0].trace_id == "02e299711ce47710289dc6640727404f"  # 31 hex chars padded back


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_cli_tempo_parse(path):
    proc = subprocess.run([sys.executable, "-m", "baynet.cli", "tempo", "parse", str(path)],
                          capture_output=True, text=True, timeout=60)
    if path.name in INVALID:
        assert proc.returncode == 2 and "not valid JSON" in proc.stderr and path.name in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        assert set(row) == {"trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns",
                            "end_ns", "status", "http_status"}
        assert row["http_status"] is None or isinstance(row["http_status"], int)


def test_cli_tempo_parse_garbage_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    proc = subprocess.run([sys.executable, "-m", "baynet.cli", "tempo", "parse", str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a Tempo response" in proc.stderr


# --- the replay server speaks what the samples show ------------------------------------------------

def _keys(obj, prefix=""):
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(prefix + k)
            out |= _keys(v, prefix + k + ".")
    elif isinstance(obj, list):
        for item in obj:
            out |= _keys(item, prefix)
    return out


@pytest.fixture(scope="module")
def replay():
    store = TraceStore()
    for path in TRACE_SAMPLES:
        store.add_spans(parse_trace(loads(path.read_bytes()))[0])
    with TempoServer(store) as server:
        yield server


def test_trace_by_id_round_trips_every_sample(replay):
    for path in TRACE_SAMPLES:
        original, _ = parse_trace(loads(path.read_bytes()))
        for trace_id in {s.trace_id for s in original}:
            resp = httpx.get(f"{replay.url}/api/traces/{trace_id}")
            assert resp.status_code == 200 and "batches" in resp.json()
            served, _ = parse_trace(resp.json())
            want = sorted((s.span_id, s.parent_span_id, s.service, s.start_ns, s.end_ns, s.status, s.kind)
                          for s in original if s.trace_id == trace_id)
            got = sorted((s.span_id, s.parent_span_id, s.service, s.start_ns, s.end_ns, s.status, s.kind)
                         for s in served)
            assert got == want, path.name
            v2 = httpx.get(f"{replay.url}/api/v2/traces/{trace_id}").json()
            assert "trace" in v2 and "resourceSpans" in v2["trace"]


def test_served_trace_shape_matches_genuine_v1_body(replay):
    genuine = json.loads((TEMPO / "trace_v1_istio_bookinfo__kiali_tracingtest.json").read_text())
    trace_id = parse_trace(genuine)[0][0].trace_id
    served = httpx.get(f"{replay.url}/api/traces/{trace_id}").json()
    # every key path we emit appears in Tempo's own output (ids base64, int64 as strings, kind enums)
    assert _keys(served) <= _keys(genuine) | {"batches.scopeSpans.scope"}
    span = served["batches"][0]["scopeSpans"][0]["spans"][0]
    assert isinstance(span["startTimeUnixNano"], str) and span["traceId"].endswith("==")


def test_served_search_shape_matches_genuine_search(replay):
    genuine = json.loads((TEMPO / "search_istio_bookinfo__kiali_tracingtest.json").read_text())
    resp = httpx.get(f"{replay.url}/api/search", params={"q": '{ resource.service.name = "reviews.bookinfo" }'})
    assert resp.status_code == 200
    body = resp.json()
    assert body["traces"], "search found the Istio trace"
    allowed = _keys(genuine) | _keys(json.loads((TEMPO / "recorded/search_limit1__vcr_health.json").read_text()))
    allowed |= _keys(json.loads((TEMPO / "search_istio_ambient__kiali_tracingtest.json").read_text()))
    allowed |= {"traces.serviceStats.reviews.bookinfo.errorCount", "metrics.inspectedTraces"}
    extra = {k for k in _keys(body) if not k.startswith("traces.serviceStats.")} - allowed
    assert not extra
    parse_search(body)  # and our own parser reads it


def test_errors_are_tempo_plain_text(replay):
    missing = httpx.get(f"{replay.url}/api/traces/00000000000000000000000000000000")
    recorded = (TEMPO / "recorded/trace_404__vcr.http").read_text()
    assert "404 Not Found" in recorded and "Content-Length: 0" in recorded
    assert missing.status_code == 404 and missing.content == b"" and missing.headers["content-length"] == "0"
    bad_id = httpx.get(f"{replay.url}/api/traces/xyz")
    assert bad_id.status_code == 400 and bad_id.text.startswith("trace IDs can only contain hex characters")
    bad_q = httpx.get(f"{replay.url}/api/search", params={"q": "{ resource.service.name = }"})
    assert bad_q.status_code == 400 and bad_q.text.startswith("invalid TraceQL query: parse error")
    assert bad_q.headers["content-type"].startswith("text/plain")
    both = httpx.get(f"{replay.url}/api/search", params={"q": "{}", "tags": "a=b"})
    assert both.status_code == 400 and "can't specify tags and q" in both.text
    order = httpx.get(f"{replay.url}/api/search", params={"q": "{}", "start": 10, "end": 5})
    assert order.status_code == 400 and "start must be before end" in order.text
    assert httpx.get(f"{replay.url}/ready").text == "ready"


def test_too_large_trace_422_on_v1_partial_on_v2():
    store = TraceStore()
    store.add_spans(parse_trace(loads((TEMPO / "trace_v1_istio_bookinfo__kiali_tracingtest.json").read_bytes()))[0])
    trace_id = next(iter(store.traces))
    with TempoServer(store, max_trace_bytes=1500) as server:
        v1 = httpx.get(f"{server.url}/api/traces/{trace_id}")
        assert v1.status_code == 422 and "trace exceeds max size" in v1.text
        v2 = httpx.get(f"{server.url}/api/v2/traces/{trace_id}").json()
        assert v2["status"] == "PARTIAL" and 0 < len(parse_trace(v2)[0]) < 8


@pytest.mark.parametrize("path", TRACE_SAMPLES, ids=lambda p: p.name)
def test_columnar_fast_path_equals_full_parser(path):
    from baynet.otlp import new_columns, trace_columns

    body = loads(path.read_bytes())
    spans, _ = parse_trace(body)
    cols = new_columns()
    assert trace_columns(body, cols, {}) == len(spans)
    fields = ("trace_id", "span_id", "parent_span_id", "service", "name", "start_ns", "end_ns", "failed")
    assert list(zip(*(cols[f] for f in fields))) == [tuple(getattr(s, f) for f in fields) for s in spans]
    # equal ids get equal codes, different ids different codes
    pairs = set(zip(cols["span_id"] + cols["parent_span_id"], cols["span_code"] + cols["parent_code"]))
    assert len({h for h, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)


FIELDS = ("trace_id", "span_id", "parent_span_id", "service", "name", "start_ns", "end_ns", "failed")


def _batch_rows(frame):
    return [tuple(r) for r in frame[list(FIELDS)].astype(object).itertuples(index=False)]


@pytest.mark.parametrize("path", TRACE_SAMPLES, ids=lambda p: p.name)
def test_span_batch_equals_full_parser(path):
    """The evidence hot path (typed decode, ids decoded by msgspec) reads every genuine trace body
    exactly as the full parser does, whichever of its two paths the body takes."""
    from baynet.otlp_fast import SpanBatch

    spans, _ = parse_trace(loads(path.read_bytes()))
    batch = SpanBatch()
    assert batch.add(path.read_bytes()) == len(spans) == len(batch)
    frame = batch.frame()
    assert _batch_rows(frame) == [tuple(getattr(s, f) for f in FIELDS) for s in spans]
    pairs = set(zip(list(frame["span_id"]) + list(frame["parent_span_id"]),
                    list(frame["span_code"]) + list(frame["parent_code"])))
    assert len({h for h, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)


def test_span_batch_mixes_id_forms_and_drops_unreadable_bodies():
    """One trace with base64 ids (typed path) and one with hex ids (generic path): the same span id in
    either form gets the same code, so a child in one body finds its parent in the other. A body
    with an id that is neither base64 nor hex is refused whole and leaves nothing behind."""
    from baynet.otlp import render_resource_spans
    from baynet.otlp_fast import SpanBatch

    spans, _ = parse_trace(loads((TEMPO / "trace_v1_istio_bookinfo__kiali_tracingtest.json").read_bytes()))
    root, rest = spans[:1], spans[1:]
    b64 = json.dumps({"batches": render_resource_spans(root)}).encode()
    hexed = json.dumps({"batches": render_resource_spans(rest, id_encoding="hex")}).encode()
    broken = hexed.replace(rest[0].span_id.encode(), b"not-an-id!", 1)
    batch = SpanBatch()
    batch.add(b64)
    with pytest.raises(TempoParseError, match="not-an-id!"):
        batch.add(broken)
    assert len(batch) == 1
    batch.add(hexed)
    frame = batch.frame()
    assert _batch_rows(frame) == [tuple(getattr(s, f) for f in FIELDS) for s in spans]
    by_id = dict(zip(frame["span_id"], frame["span_code"]))
    for parent, code in zip(frame["parent_span_id"], frame["parent_code"]):
        if parent in by_id:
            assert code == by_id[parent]
    assert (frame["parent_span_id"] == "").sum() == sum(1 for s in spans if not s.parent_span_id)


@pytest.mark.parametrize("status", [b'{"code":2}', b'{"code":"STATUS_CODE_ERROR"}', b'{"\\u0063ode":2}',
                                    b'{"code":"2"}'])
def test_span_batch_sees_an_error_status_however_it_is_spelled(status):
    from baynet.otlp_fast import SpanBatch

    span = b'{"traceId":"AAAAAAAAAAAAAAAAAAAAAQ==","spanId":"AAAAAAAAAAE=","name":"x","status":%s}' % status
    body = b'{"batches":[{"scopeSpans":[{"spans":[%s]}]}]}' % span
    batch = SpanBatch()
    batch.add(body)
    assert batch.frame()["failed"].tolist() == [True]
    assert [s.status for s in parse_trace(loads(body))[0]] == ["error"]
