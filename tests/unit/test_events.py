import json
from datetime import UTC, datetime, timedelta

import pytest

from baynet.events import MAX_BODY_BYTES, EventError, parse_message

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def plain(**overrides):
    body = {"service": "carts", "event_type": "latency", "timestamp": "2026-11-22T11:58:00Z"}
    body.update(overrides)
    return json.dumps(body)


def test_plain_event_is_normalised():
    (event,) = parse_message(plain(severity="critical", score=0.93, labels={"pod": "carts-1"}), now=NOW)
    assert event.service == "carts"
    assert event.timestamp == datetime(2026, 11, 22, 11, 58, tzinfo=UTC)
    assert event.severity == "critical" and event.score == pytest.approx(0.93)
    assert event.labels == {"pod": "carts-1"} and event.source_format == "plain"


def test_same_event_gets_same_id_and_different_events_do_not():
    a = parse_message(plain(), now=NOW)[0].id
    b = parse_message(plain(), now=NOW)[0].id
    c = parse_message(plain(service="orders"), now=NOW)[0].id
    assert a == b != c


def test_unix_seconds_and_milliseconds():
    ts = NOW.timestamp() - 60
    assert parse_message(plain(timestamp=ts), now=NOW)[0].timestamp == parse_message(
        plain(timestamp=int(ts * 1000)), now=NOW)[0].timestamp


def test_cloudevents_envelope():
    body = {"specversion": "1.0", "id": "ce-42", "source": "/detector", "type": "com.example.anomaly.errors",
            "time": "2026-11-22T11:59:00Z", "datacontenttype": "application/json",
            "data": {"service": "payment", "namespace": "sock-shop"}}
    (event,) = parse_message(json.dumps(body), now=NOW)
    assert (event.id, event.service, event.namespace, event.event_type) == ("ce-42", "payment", "sock-shop", "errors")
    assert event.source_format == "cloudevents"


def test_sns_alertmanager_gives_one_event_per_firing_alert():
    alerts = [
        {"status": "firing", "labels": {"alertname": "HighLatency", "service": "carts", "severity": "critical"},
         "startsAt": "2026-11-22T11:50:00Z", "fingerprint": "aa"},
        {"status": "resolved", "labels": {"alertname": "HighLatency", "service": "user"},
         "startsAt": "2026-11-22T11:40:00Z", "fingerprint": "bb"},
        {"status": "firing", "labels": {"alertname": "Errors", "destination_service_name": "orders"},
         "startsAt": "2026-11-22T11:55:00Z", "fingerprint": "cc"},
    ]
    sns = {"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
           "Message": json.dumps({"version": "4", "status": "firing", "alerts": alerts})}
    events = parse_message(json.dumps(sns), now=NOW)
    assert [(e.service, e.event_type) for e in events] == [("carts", "HighLatency"), ("orders", "Errors")]
    assert events[0].severity == "critical" and events[0].source_format == "sns-alertmanager"


@pytest.mark.parametrize("body, field, fragment", [
    ("{not json", "body", "not valid JSON"),
    ("[1, 2]", "body", "JSON object"),
    (plain(service=""), "service", "non-empty"),
    (json.dumps({"event_type": "x", "timestamp": "2026-11-22T11:00:00Z"}), "service", "missing"),
    (plain(service="<script>"), "service", "DNS-style"),
    (plain(service=42), "service", "string"),
    (plain(timestamp="yesterday"), "timestamp", "ISO 8601"),
    (plain(timestamp="2999-01-01T00:00:00Z"), "timestamp", "future"),
    (plain(timestamp=12), "timestamp", "before 2000"),
    (plain(severity="apocalyptic"), "severity", "one of"),
    (plain(score="high"), "score", "finite number"),
    (json.dumps({"specversion": "0.3", "id": "1", "source": "s", "type": "t", "data": {}}), "specversion", "1.0"),
    (json.dumps({"Type": "Notification", "Message": json.dumps({"alerts": [
        {"status": "resolved", "labels": {"service": "a"}, "startsAt": "2026-11-22T11:00:00Z"}]})}),
     "Message.alerts", "no firing alert"),
    ("[" * 100000 + "]" * 100000, "body", ""),
])
def test_bad_messages_name_field_and_value(body, field, fragment):
    with pytest.raises(EventError) as info:
        parse_message(body, now=NOW)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert field in str(info.value)


def test_oversized_body_is_rejected_before_parsing():
    with pytest.raises(EventError, match="larger than"):
        parse_message(plain(labels={"x": "y" * 1000}) + " " * MAX_BODY_BYTES, now=NOW)


def test_recent_past_is_fine_far_past_is_not():
    assert parse_message(plain(timestamp=(NOW - timedelta(days=30)).isoformat()), now=NOW)
    with pytest.raises(EventError, match="before 2000"):
        parse_message(plain(timestamp="1999-12-31T23:59:59Z"), now=NOW)


def test_run_names_and_tags_follow_the_incident():
    from baynet.events import parse_object, run_name, run_tags

    body = {"id": "ev-1", "service": "front-end", "event_type": "latency", "timestamp": "2026-01-02T15:46:00Z"}
    assert run_name(body) == "front-end latency 15:46 (ev-1)"
    assert run_name(json.dumps(body)) == "front-end latency 15:46 (ev-1)"
    assert run_name("not json") == "incident (unreadable event)"
    (event,) = parse_object({**body, "namespace": "shop"})
    assert run_tags(event) == ["service:front-end", "namespace:shop"]
