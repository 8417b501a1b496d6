"""Anomaly events: the message an anomaly detector puts on the queue, normalised.

Three wire shapes are accepted (see :func:`parse_message`):

* plain JSON: ``{"service": "carts", "event_type": "latency", "timestamp": "2024-05-01T10:00:00Z", ...}``
* a CloudEvents 1.0 structured envelope whose ``data`` is the plain JSON above;
* an SNS notification whose ``Message`` is an Alertmanager webhook payload (one event per firing alert),
  or one of the two shapes above.

Anything else raises :class:`EventError` naming the field and the offending value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_BODY_BYTES = 256 * 1024  # SQS's own limit; anything larger did not come from a detector
SERVICE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(hours=1)
SEVERITIES = ("info", "warning", "critical")
# Alertmanager label names that identify the service an alert is about, most specific first.
ALERT_SERVICE_LABELS = (
    "service",
    "destination_canonical_service",
    "destination_service_name",
    "app",
    "workload",
    "destination_workload",
    "job",
)


class EventError(ValueError):
    """A message that is not a valid anomaly event. ``field`` and ``value`` say what was wrong."""

    def __init__(self, message: str, field: str = "", value: Any = None):
        super().__init__(message)
        self.field = field
        self.value = value


class AnomalyEvent(BaseModel):
    """One anomaly on one service at one time, as the incident flow consumes it."""

    id: str = Field(description="Stable event id; the same event delivered twice has the same id.")
    service: str = Field(description="The service where the anomaly was seen (usually the entry service).")
    namespace: str = Field("default", description="Kubernetes/Istio namespace of the service.")
    event_type: str = Field(description="Kind of anomaly, e.g. latency, errors, traffic_drop.")
    timestamp: datetime = Field(description="When the anomaly was detected (UTC).")
    severity: Literal["info", "warning", "critical"] = "warning"
    score: float | None = Field(None, description="Detector's anomaly score, if it gives one.")
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    source_format: Literal["plain", "cloudevents", "sns-alertmanager", "sns"] = "plain"

    @property
    def unix(self) -> float:
        return self.timestamp.timestamp()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(message: str, field: str, value: Any) -> EventError:
    return EventError(f"{message} (field {field!r}, value {_short(value)})", field, value)


def parse_timestamp(value: Any, field: str = "timestamp", now: datetime | None = None) -> datetime:
    """Read an ISO 8601 string or unix seconds/milliseconds; reject times before 2000 or in the future."""
    if isinstance(value, bool) or value is None:
        raise _fail("timestamp must be an ISO 8601 string or unix seconds", field, value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _fail("timestamp is not a finite number", field, value)
        seconds = value / 1000.0 if value > 1e11 else float(value)  # ms from JS-style detectors
        try:
            ts = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise _fail("timestamp is out of range", field, value) from None
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return parse_timestamp(float(text), field, now)
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _fail("timestamp is not ISO 8601", field, value) from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        ts = ts.astimezone(UTC)
    else:
        raise _fail("timestamp must be an ISO 8601 string or unix seconds", field, value)
    now = now or datetime.now(UTC)
    if ts < EARLIEST:
        raise _fail("timestamp is before 2000-01-01", field, value)
    if ts > now + FUTURE_SLACK:
        raise _fail("timestamp is in the future", field, value)
    return ts


def _require_str(obj: dict, field: str, *, prefix: str = "") -> str:
    value = obj.get(field)
    name = prefix + field
    if value is None:
        raise _fail("required field is missing", name, value)
    if not isinstance(value, str) or not value.strip():
        raise _fail("must be a non-empty string", name, value)
    return value.strip()


def _service(value: str, field: str) -> str:
    if not SERVICE_RE.match(value):
        raise _fail("service must be a DNS-style name (letters, digits, '.', '-', '_')", field, value)
    return value


def _labels(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail("labels must be an object of strings", field, value)
    if len(value) > 64:
        raise _fail("too many labels (at most 64)", field, len(value))
    out = {}
    for key, val in value.items():
        if not isinstance(val, str | int | float | bool) or len(str(key)) > 128 or len(str(val)) > 1024:
            raise _fail("each label must be a short string", f"{field}.{key}", val)
        out[str(key)] = str(val)
    return out


def _event_id(*parts: Any) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:32]


def _from_plain(obj: dict, *, prefix: str = "", default_id: str | None = None, default_type: str | None = None,
                source_format: str = "plain", now: datetime | None = None) -> AnomalyEvent:
    service = _service(_require_str(obj, "service", prefix=prefix), prefix + "service")
    if obj.get("event_type") is None and default_type:
        event_type = default_type
    else:
        event_type = _require_str(obj, "event_type", prefix=prefix)
    if "timestamp" not in obj:
        raise _fail("required field is missing", prefix + "timestamp", None)
    ts = parse_timestamp(obj["timestamp"], prefix + "timestamp", now)
    namespace = obj.get("namespace", "default")
    if not isinstance(namespace, str) or not SERVICE_RE.match(namespace):
        raise _fail("namespace must be a DNS-style name", prefix + "namespace", namespace)
    severity = obj.get("severity", "warning")
    if severity not in SEVERITIES:
        raise _fail(f"severity must be one of {', '.join(SEVERITIES)}", prefix + "severity", severity)
    score = obj.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                              or not math.isfinite(score)):
        raise _fail("score must be a finite number", prefix + "score", score)
    status = obj.get("status", "firing")
    if status not in ("firing", "resolved"):
        raise _fail("status must be firing or resolved", prefix + "status", status)
    event_id = obj.get("id", default_id)
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 128):
        raise _fail("id must be a string of 1 to 128 characters", prefix + "id", event_id)
    event_id = event_id or _event_id(service, namespace, event_type, ts.isoformat(), status)
    return AnomalyEvent(
        id=event_id, service=service, namespace=namespace, event_type=event_type, timestamp=ts,
        severity=severity, score=None if score is None else float(score), status=status,
        labels=_labels(obj.get("labels"), prefix + "labels"), source_format=source_format,
    )


def _from_cloudevent(obj: dict, now: datetime | None, source_format: str = "cloudevents") -> AnomalyEvent:
    if obj.get("specversion") != "1.0":
        raise _fail("only CloudEvents specversion 1.0 is supported", "specversion", obj.get("specversion"))
    for field in ("id", "source", "type"):
        _require_str(obj, field)
    content_type = obj.get("datacontenttype", "application/json")
    if not isinstance(content_type, str) or "json" not in content_type:
        raise _fail("CloudEvents data must be JSON", "datacontenttype", content_type)
    data = obj.get("data")
    if isinstance(data, str):
        data = _loads(data, "data")
    if not isinstance(data, dict):
        raise _fail("CloudEvents data must be an object", "data", data)
    data = dict(data)
    if "timestamp" not in data and "time" in obj:
        data["timestamp"] = obj["time"]
    # The CloudEvents type is reverse-DNS ("com.example.anomaly.latency"): its last part is the kind.
    default_type = str(obj["type"]).rsplit(".", 1)[-1]
    return _from_plain(data, prefix="data.", default_id=obj["id"], default_type=default_type,
                       source_format=source_format, now=now)


def _from_alertmanager(payload: dict, now: datetime | None) -> list[AnomalyEvent]:
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise _fail("Alertmanager payload needs a list of alerts", "Message.alerts", alerts)
    events = []
    for i, alert in enumerate(alerts):
        where = f"Message.alerts[{i}]"
        if not isinstance(alert, dict):
            raise _fail("alert must be an object", where, alert)
        if alert.get("status", payload.get("status")) != "firing":
            continue
        labels = alert.get("labels")
        if not isinstance(labels, dict):
            raise _fail("alert needs labels", where + ".labels", labels)
        service = next((labels[k] for k in ALERT_SERVICE_LABELS if isinstance(labels.get(k), str)), None)
        if service is None:
            raise _fail(f"alert names no service (labels {', '.join(ALERT_SERVICE_LABELS)})", where + ".labels",
                        labels)
        starts_at = alert.get("startsAt")
        ts = parse_timestamp(starts_at, where + ".startsAt", now)
        severity = labels.get("severity", "warning")
        plain = {
            "service": service,
            "namespace": labels.get("namespace", "default"),
            "event_type": labels.get("alertname", "alert"),
            "timestamp": ts.isoformat(),
            "severity": severity if severity in SEVERITIES else "warning",
            "labels": {k: str(v) for k, v in labels.items()},
            "id": _event_id(alert.get("fingerprint") or json.dumps(labels, sort_keys=True), ts.isoformat()),
        }
        events.append(_from_plain(plain, prefix=where + ".", source_format="sns-alertmanager", now=now))
    if not events:
        raise _fail("Alertmanager payload has no firing alert", "Message.alerts", len(alerts))
    return events


def _loads(text: str | bytes, field: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise _fail("JSON is nested too deeply", field, "<deeply nested>") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"not valid JSON: {exc}", field, text) from None


def parse_message(body: str | bytes, now: datetime | None = None) -> list[AnomalyEvent]:
    """Parse one queue message body into one or more events, or raise :class:`EventError`."""
    if isinstance(body, str):
        size = len(body.encode("utf-8", "surrogatepass"))
    else:
        size = len(body)
    if size > MAX_BODY_BYTES:
        raise _fail(f"message is larger than {MAX_BODY_BYTES} bytes", "body", f"{size} bytes")
    obj = _loads(body, "body")
    return parse_object(obj, now)


def parse_object(obj: Any, now: datetime | None = None) -> list[AnomalyEvent]:
    """Like :func:`parse_message` for an already decoded JSON value."""
    if not isinstance(obj, dict):
        raise _fail("message must be a JSON object", "body", obj)
    if obj.get("Type") == "Notification" and "Message" in obj:
        inner = obj["Message"]
        if not isinstance(inner, str):
            raise _fail("SNS Message must be a JSON string", "Message", inner)
        payload = _loads(inner, "Message")
        if isinstance(payload, dict) and "alerts" in payload:
            return _from_alertmanager(payload, now)
        if isinstance(payload, dict) and "specversion" in payload:
            return [_from_cloudevent(payload, now, source_format="sns")]
        if isinstance(payload, dict):
            return [_from_plain(payload, prefix="Message.", source_format="sns", now=now)]
        raise _fail("SNS Message must hold a JSON object", "Message", payload)
    if "specversion" in obj:
        return [_from_cloudevent(obj, now)]
    if "alerts" in obj and "service" not in obj:
        return _from_alertmanager(obj, now)
    return [_from_plain(obj, now=now)]


def run_name(message: Any) -> str:
    """A flow run's name for the incident in ``message`` (raw body or decoded JSON), so that a run is
    found by its incident in the Prefect UI: ``front-end latency 15:46 (ev-123)``."""
    try:
        events = parse_object(message) if isinstance(message, dict) else parse_message(message)
    except EventError:
        return "incident (unreadable event)"
    e = events[0]
    return f"{e.service} {e.event_type} {e.timestamp:%H:%M} ({e.id})"[:120]


def run_tags(event: AnomalyEvent) -> list[str]:
    """Tags of an incident's flow run: its service and namespace (filterable in the Prefect UI)."""
    return [f"service:{event.service}"[:100], f"namespace:{event.namespace}"[:100]]
