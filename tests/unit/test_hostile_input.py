"""A corpus of malformed and hostile messages and payloads, and property-based tests: the parsers
either return valid records or raise their own error with a reason — never anything else."""

import json
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baynet.events import EventError, parse_message
from baynet.otlp import TempoParseError, parse_any, parse_trace

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GOOD = {"service": "carts", "event_type": "latency", "timestamp": "2026-11-22T11:58:00Z"}


def with_(**kw):
    return json.dumps({**GOOD, **kw})


def without(field):
    return json.dumps({k: v for k, v in GOOD.items() if k != field})


def ce(**kw):
    body = {"specversion": "1.0", "id": "x", "source": "/d", "type": "t", "data": dict(GOOD)}
    body.update(kw)
    return json.dumps(body)


def sns(message):
    return json.dumps({"Type": "Notification", "MessageId": "m", "Message": message})


CORPUS = [
    # not JSON, or not an object
    "", " ", "{", "}", "nul", "[]", "[{}]", '"carts"', "42", "true", "null", "{'service': 'carts'}",
    "\x00\x01\x02", "\ufeff" + with_(), json.dumps(GOOD)[:-1], "{" * 5000 + "}" * 5000,
    "[" * 200000,
    # missing or wrong fields
    without("service"), without("event_type"), without("timestamp"), "{}",
    with_(service=None), with_(service=""), with_(service=" "), with_(service=["carts"]), with_(service={"a": 1}),
    with_(service=12), with_(service=True), with_(service="a" * 300), with_(service="../../etc/passwd"),
    with_(service="<script>alert(1)</script>"), with_(service="carts\nX-Injected: 1"), with_(service="café"),
    with_(service="carts\u202e"), with_(service="\u0441arts"),  # Cyrillic 'с'
    with_(event_type=""), with_(event_type=7), with_(event_type=None),
    with_(timestamp=""), with_(timestamp="soon"), with_(timestamp="2026-13-45T99:00:00Z"), with_(timestamp=None),
    with_(timestamp=True), with_(timestamp=[1]), with_(timestamp=float("inf")) if False else with_(timestamp=1e308),
    with_(timestamp=-1), with_(timestamp="1999-01-01T00:00:00Z"), with_(timestamp="2999-01-01T00:00:00Z"),
    with_(timestamp=9e18),
    with_(severity="fatal"), with_(severity=3), with_(score="0.9"), with_(score=True), with_(status="pending"),
    with_(namespace="Bad Namespace!"), with_(labels="x"), with_(labels={str(i): "v" for i in range(100)}),
    with_(labels={"k": {"nested": 1}}), with_(id=""), with_(id="x" * 500), with_(id=5),
    # CloudEvents gone wrong
    ce(specversion="0.3"), ce(specversion=None), ce(specversion="2.0"), ce(id=None), ce(source=""),
    ce(data=None), ce(data="not json"), ce(data=[1, 2]), ce(datacontenttype="text/xml"),
    ce(data={"event_type": "x", "timestamp": "2026-11-22T11:58:00Z"}),
    # SNS / Alertmanager gone wrong
    sns(None) if False else json.dumps({"Type": "Notification", "Message": 5}), sns("not json"), sns("[]"),
    sns(json.dumps({"alerts": []})), sns(json.dumps({"alerts": "x"})),
    sns(json.dumps({"alerts": [{"status": "resolved", "labels": {"service": "a"},
                                "startsAt": "2026-11-22T11:00:00Z"}]})),
    sns(json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "X"},
                                "startsAt": "2026-11-22T11:00:00Z"}]})),
    sns(json.dumps({"alerts": [{"status": "firing", "labels": {"service": "a"}, "startsAt": "garbage"}]})),
    sns(json.dumps({"alerts": [{"status": "firing", "labels": "a", "startsAt": "2026-11-22T11:00:00Z"}]})),
    sns(json.dumps({"alerts": [5]})),
    # too big
    with_(labels={"k": "v" * 2000}), json.dumps({**GOOD, "padding": "x" * (300 * 1024)}),
]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("body", CORPUS, ids=lambda b: repr(b[:40]))
def test_every_hostile_message_is_rejected_with_a_reason(body):
    with pytest.raises(EventError) as info:
        parse_message(body, now=NOW)
    message = str(info.value)
    assert info.value.field and info.value.field in message and len(message) < 2000


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_event_parser_accepts_or_explains_any_json(value):
    try:
        events = parse_message(json.dumps(value), now=NOW)
    except EventError as exc:
        assert exc.field
        return
    assert events and all(e.service and e.timestamp <= NOW.replace(hour=13) for e in events)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"service": st.text(string.ascii_letters + string.digits + "-._", min_size=1,
                                                 max_size=60),
                              "event_type": st.text(string.ascii_letters + "_-.", min_size=1, max_size=20),
                              "timestamp": st.integers(946684800, int(NOW.timestamp()))}))
def test_event_parser_roundtrips_plausible_events(body):
    try:
        (event,) = parse_message(json.dumps(body), now=NOW)
    except EventError as exc:
        # only DNS-style violations at the edges (e.g. a leading dot) may be refused
        assert exc.field == "service"
        return
    assert event.service == body["service"] and int(event.unix) == body["timestamp"]


ANY_VALUE = st.one_of(
    st.fixed_dictionaries({"stringValue": st.text(max_size=10)}),
    st.fixed_dictionaries({"intValue": st.one_of(st.integers(), st.text(max_size=5))}),
    st.fixed_dictionaries({"doubleValue": st.floats(allow_nan=False)}),
    st.fixed_dictionaries({"boolValue": st.booleans()}),
    JSON,
)
SPAN = st.fixed_dictionaries(
    {"traceId": st.one_of(st.text(max_size=40), st.just("AAAAAAAAAAABI0VniavN7w==")),
     "spanId": st.one_of(st.text(max_size=20), st.just("AAAAAAAAEjQ=")),
     "startTimeUnixNano": st.one_of(st.integers(0, 2**63), st.text(max_size=20)),
     "endTimeUnixNano": st.one_of(st.integers(0, 2**63), st.text(max_size=20))},
    optional={"kind": st.one_of(st.integers(-1, 7), st.text(max_size=20)), "name": JSON,
              "status": st.one_of(st.fixed_dictionaries({"code": st.one_of(st.integers(-1, 3), st.text(max_size=20))}),
                                  JSON),
              "attributes": st.lists(st.fixed_dictionaries({"key": st.text(max_size=20), "value": ANY_VALUE}),
                                     max_size=4),
              "parentSpanId": st.text(max_size=20)})
BODY = st.one_of(
    st.fixed_dictionaries({"batches": st.lists(st.fixed_dictionaries(
        {"resource": st.just({"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]}),
         "scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(SPAN, max_size=3)}), max_size=2)}),
        max_size=2)}),
    JSON,
)


@settings(max_examples=400, deadline=None)
@given(BODY)
def test_otlp_parser_accepts_or_explains_any_body(body):
    try:
        spans, _ = parse_trace(body)
    except TempoParseError:
        return
    except (AttributeError, TypeError, KeyError) as exc:  # pragma: no cover - the failure we look for
        pytest.fail(f"parser crashed with {type(exc).__name__}: {exc} on {body!r}")
    for s in spans:
        assert len(s.trace_id) == 32 and len(s.span_id) == 16 and s.end_ns >= s.start_ns


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_cleanly(data):
    try:
        parse_any(data)
    except TempoParseError:
        pass
