import base64

import pytest

from baynet.otlp import Span, TempoParseError, normalize_id, parse_trace, render_resource_spans


def test_ids_base64_hex_and_stripped():
    raw = bytes(range(16))
    assert normalize_id(base64.b64encode(raw).decode(), 16) == raw.hex()
    assert normalize_id("5B8EFFF798038103D269B633813FC60C", 16) == "5b8efff798038103d269b633813fc60c"
    # search results strip leading zeros; we pad them back
    assert normalize_id("2e299711ce47710289dc6640727404f", 16, encoding="hex") == "02e299711ce47710289dc6640727404f"
    assert normalize_id("7uGbfsPBsQA=", 8) == "eee19b7ec3c1b100"
    assert normalize_id("EEE19B7EC3C1B174", 8) == "eee19b7ec3c1b174"
    with pytest.raises(TempoParseError, match="neither"):
        normalize_id("not-an-id!", 8)


def span_body(**span):
    base = {"traceId": "AAAAAAAAAAABI0VniavN7w==", "spanId": "AAAAAAAAEjQ=", "name": "x",
            "startTimeUnixNano": "1000", "endTimeUnixNano": "3000"}
    base.update(span)
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                            "value": {"stringValue": "svc"}}]},
                               "scopeSpans": [{"scope": {}, "spans": [base]}]}]}


@pytest.mark.parametrize("kind, expected", [(2, "server"), ("SPAN_KIND_CLIENT", "client"), (None, "unspecified")])
def test_kind_as_int_or_enum(kind, expected):
    body = span_body(kind=kind) if kind is not None else span_body()
    assert parse_trace(body)[0][0].kind == expected


@pytest.mark.parametrize("status, expected", [({}, "unset"), ({"code": "STATUS_CODE_ERROR"}, "error"),
                                              ({"code": 2}, "error"), ({"code": 1}, "ok")])
def test_status_variants(status, expected):
    assert parse_trace(span_body(status=status))[0][0].status == expected


def test_envoy_string_status_code_counts_as_failure():
    spans, _ = parse_trace(span_body(attributes=[{"key": "http.status_code", "value": {"stringValue": "503"}}]))
    assert spans[0].http_status == 503 and spans[0].failed


def test_snake_case_producer():
    body = {"resource_spans": [{"resource": {"attributes": []}, "scope_spans": [{"spans": [
        {"trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174",
         "start_time_unix_nano": 5, "end_time_unix_nano": 9}]}]}]}
    (span,) = parse_trace(body)[0]
    assert (span.trace_id, span.start_ns, span.end_ns, span.service) == (
        "5b8efff798038103d269b633813fc60c", 5, 9, "unknown")


def test_v2_partial_wrapper_and_empty_trace():
    spans, meta = parse_trace({"trace": span_body(), "status": "PARTIAL", "message": "too big"})
    assert len(spans) == 1 and meta == {"status": "PARTIAL", "message": "too big"}
    assert parse_trace({"trace": {}})[0] == []


def test_render_round_trip_keeps_everything_the_model_uses():
    spans = [Span("0" * 31 + "1", "00000000000000aa", "", "front", "GET /", "server", 10, 50, "error", 500,
                  resource={"service.name": "front"}),
             Span("0" * 31 + "1", "00000000000000bb", "00000000000000aa", "db", "query", "client", 20, 30, "unset",
                  resource={"service.name": "db"})]
    back, _ = parse_trace({"batches": render_resource_spans(spans)})
    key = lambda s: (s.span_id, s.parent_span_id, s.service, s.name, s.kind, s.start_ns, s.end_ns, s.status)  # noqa
    assert sorted(map(key, back)) == sorted(map(key, spans))
    assert {s.span_id: s.http_status for s in back}["00000000000000aa"] == 500


def test_garbage_is_a_clear_error():
    with pytest.raises(TempoParseError, match="not a trace body"):
        parse_trace({"hello": 1})
    with pytest.raises(TempoParseError, match="kind"):
        parse_trace(span_body(kind=42))


def _one_span_body(parent: str = "", start: str = "1000") -> bytes:
    import orjson

    span = {"traceId": base64.b64encode(bytes(range(16))).decode(), "spanId": base64.b64encode(bytes(range(8))).decode(),
            "parentSpanId": parent, "name": "op", "startTimeUnixNano": start, "endTimeUnixNano": "2000"}
    return orjson.dumps({"batches": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "carts"}}]}, "scopeSpans": [{"spans": [span]}]}]})


@pytest.mark.parametrize("body, message", [
    (_one_span_body(parent=base64.b64encode(b"abcd").decode()), "neither 8-byte base64 nor hex"),
    (_one_span_body(start=str(2**70)), "does not fit in 64 bits"),
])
def test_span_batch_refuses_a_short_parent_id_or_an_oversized_time_and_keeps_nothing(body, message):
    from baynet.otlp_fast import SpanBatch

    batch = SpanBatch()
    assert batch.add(_one_span_body()) == 1
    with pytest.raises(TempoParseError, match=message):
        batch.add(body)
    frame = batch.frame()
    assert len(frame) == 1 and frame["parent_span_id"].iloc[0] == "" and frame["start_ns"].iloc[0] == 1000
