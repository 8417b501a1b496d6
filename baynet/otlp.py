"""Parse what Tempo returns (and what OTLP producers send) into flat :class:`Span` records.

Handles every shape in ``../shared/contracts/README.md`` (checklist §3): v1 ``batches``, OTLP
``resourceSpans``/``resource_spans``, the v2 ``{"trace": ...}`` wrapper with ``status: PARTIAL``,
``scopeSpans`` and the old ``instrumentationLibrarySpans``, base64 or hex ids, kind as enum string or
int, status as string or int code, int64 values as strings or numbers, Envoy/Istio attributes
(``http.status_code`` as a string, ``istio.canonical_service``) and search bodies (``spanSet`` /
``spanSets``, ids with leading zeros stripped).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
KINDS = {
    0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer",
    "SPAN_KIND_UNSPECIFIED": "unspecified", "SPAN_KIND_INTERNAL": "internal", "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client", "SPAN_KIND_PRODUCER": "producer", "SPAN_KIND_CONSUMER": "consumer",
}
KIND_ENUM = {v: k for k, v in KINDS.items() if isinstance(k, str)}
STATUS = {0: "unset", 1: "ok", 2: "error", "STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok",
          "STATUS_CODE_ERROR": "error"}
HTTP_STATUS_KEYS = ("http.status_code", "http.response.status_code")
GRPC_STATUS_KEYS = ("rpc.grpc.status_code", "grpc.status_code")


class TempoParseError(ValueError):
    """A body that is not a Tempo/OTLP response this parser can read."""


@dataclass(slots=True)
class Span:
    """One span, flattened. Ids are lowercase hex, 32 chars for traces and 16 for spans."""

    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str  # ok | error | unset (the OTLP status code)
    http_status: int | None = None
    grpc_status: int | None = None
    namespace: str = ""
    response_flags: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def failed(self) -> bool:
        """Error status, an HTTP 5xx, a non-OK gRPC code, or an Envoy upstream failure flag."""
        if self.status == "error":
            return True
        if self.http_status is not None and self.http_status >= 500:
            return True
        if self.grpc_status in GRPC_SERVER_ERRORS:
            return True
        return self.response_flags not in ("", "-") and any(f in self.response_flags for f in ("UF", "UH", "URX"))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("attributes")
        out.pop("resource")
        return out


# gRPC codes that mean the server failed (not the client's fault): UNKNOWN, DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS, ABORTED.
GRPC_SERVER_ERRORS = frozenset({2, 4, 8, 10, 13, 14, 15})


def loads(body: bytes | str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TempoParseError(f"not valid JSON: {exc}") from None


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TempoParseError(f"{what} must be an integer, got {value!r}") from None


def _any_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "stringValue" in value or "string_value" in value:
        return value.get("stringValue", value.get("string_value"))
    if "intValue" in value or "int_value" in value:
        raw = value.get("intValue", value.get("int_value"))
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    if "doubleValue" in value or "double_value" in value:
        return float(value.get("doubleValue", value.get("double_value")))
    if "boolValue" in value or "bool_value" in value:
        return bool(value.get("boolValue", value.get("bool_value")))
    if "arrayValue" in value or "array_value" in value:
        arr = value.get("arrayValue", value.get("array_value")) or {}
        return [_any_value(v) for v in arr.get("values", [])]
    if "kvlistValue" in value or "kvlist_value" in value:
        kv = value.get("kvlistValue", value.get("kvlist_value")) or {}
        return attributes(kv.get("values", []))
    if "bytesValue" in value or "bytes_value" in value:
        return value.get("bytesValue", value.get("bytes_value"))
    return None


def attributes(items: Any) -> dict[str, Any]:
    """OTLP ``[{"key": k, "value": AnyValue}]`` -> plain dict."""
    if not items:
        return {}
    if not isinstance(items, list):
        raise TempoParseError(f"attributes must be a list, got {type(items).__name__}")
    return {item["key"]: _any_value(item.get("value")) for item in items if isinstance(item, dict) and "key" in item}


def normalize_id(raw: Any, nbytes: int, *, encoding: str = "auto") -> str:
    """Return a lowercase hex id of ``nbytes`` bytes.

    ``encoding`` is ``hex`` for search results and OTLP/HTTP ingest, ``auto`` for trace bodies:
    Tempo's trace JSON carries base64 of the raw bytes, but fixtures and other producers use hex,
    and a 32-char hex string is also valid base64. Decide by the decoded length: base64 is taken
    only when it decodes to exactly ``nbytes`` bytes.
    """
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise TempoParseError(f"id must be a string, got {raw!r}")
    text = raw.strip()
    if encoding == "auto" and not (HEX_RE.match(text) and len(text) == 2 * nbytes):
        try:
            padded = text + "=" * (-len(text) % 4)
            decoded = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) == nbytes:
            return decoded.hex()
    if HEX_RE.match(text) and len(text) <= 2 * nbytes:
        return text.lower().rjust(2 * nbytes, "0")
    raise TempoParseError(f"id {raw!r} is neither {nbytes}-byte base64 nor hex")


NO_PARENT_HEX = "0" * 16  # an all-zero span id is invalid in OTLP: such a "parent" means none


def _parent_id(raw: Any) -> str:
    hex_id = normalize_id(raw, 8)
    return "" if hex_id == NO_PARENT_HEX else hex_id


def _get(obj: dict, camel: str, snake: str, default: Any = None) -> Any:
    if camel in obj:
        return obj[camel]
    return obj.get(snake, default)


def _status_code(status: Any) -> str:
    if not status:
        return "unset"
    if not isinstance(status, dict):
        raise TempoParseError(f"span status must be an object, got {status!r}")
    code = status.get("code", 0)
    if isinstance(code, str) and code.isdigit():  # "2": an int64-as-string producer
        code = int(code)
    if code not in STATUS:
        raise TempoParseError(f"unknown span status code {code!r}")
    return STATUS[code]


def _maybe_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _resource_spans(body: Any) -> tuple[list, dict[str, Any]]:
    """Find the list of resource spans in any trace-by-id shape; also return status/message."""
    if not isinstance(body, dict):
        raise TempoParseError(f"trace body must be a JSON object, got {type(body).__name__}")
    meta: dict[str, Any] = {}
    if "trace" in body:  # v2 wrapper
        meta = {"status": body.get("status", "COMPLETE"), "message": body.get("message", "")}
        body = body.get("trace") or {}
        if not isinstance(body, dict):
            raise TempoParseError("v2 'trace' must be an object")
    for key in ("batches", "resourceSpans", "resource_spans"):
        if key in body:
            value = body[key]
            if value is None:
                return [], meta
            if not isinstance(value, list):
                raise TempoParseError(f"{key!r} must be a list")
            return value, meta
    if not body:  # v2 returns "trace": {} for an empty trace
        return [], meta
    raise TempoParseError(
        "not a trace body: expected 'batches', 'resourceSpans' or a v2 'trace' wrapper, got keys "
        + ", ".join(sorted(map(str, body))[:8])
    )


def parse_trace(body: Any) -> tuple[list[Span], dict[str, Any]]:
    """Parse a trace-by-id body (v1 or v2) or an OTLP export into spans, plus ``{status, message}``."""
    resource_spans, meta = _resource_spans(body)
    spans: list[Span] = []
    for rs in resource_spans:
        if not isinstance(rs, dict):
            raise TempoParseError("each resource-spans entry must be an object")
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", "unknown"))
        res_ns = str(resource.get("service.namespace", resource.get("k8s.namespace.name", "")))
        scopes = _get(rs, "scopeSpans", "scope_spans")
        if scopes is None:
            scopes = _get(rs, "instrumentationLibrarySpans", "instrumentation_library_spans", [])
        for scope in scopes or []:
            for raw in scope.get("spans") or []:
                spans.append(_span(raw, service, res_ns, resource))
    return spans, meta


def _span(raw: dict, service: str, res_ns: str, resource: dict) -> Span:
    attrs = attributes(raw.get("attributes"))
    http_status = next((_maybe_int(attrs[k]) for k in HTTP_STATUS_KEYS if k in attrs), None)
    grpc_status = next((_maybe_int(attrs[k]) for k in GRPC_STATUS_KEYS if k in attrs), None)
    kind = raw.get("kind", 0)
    if kind not in KINDS:
        raise TempoParseError(f"unknown span kind {kind!r}")
    start = _int(_get(raw, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano")
    end = _int(_get(raw, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano")
    trace_id = normalize_id(_get(raw, "traceId", "trace_id"), 16)
    span_id = normalize_id(_get(raw, "spanId", "span_id"), 8)
    if not trace_id or not span_id:
        raise TempoParseError(f"span {raw.get('name', '')!r} has no traceId or spanId")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_parent_id(_get(raw, "parentSpanId", "parent_span_id", "")),
        service=str(attrs.get("istio.canonical_service") or service),
        name=str(raw.get("name", "")),
        kind=KINDS[kind],
        start_ns=start,
        end_ns=max(end, start),
        status=_status_code(raw.get("status")),
        http_status=http_status,
        grpc_status=grpc_status,
        namespace=str(attrs.get("istio.namespace") or res_ns),
        response_flags=str(attrs.get("response_flags", "")),
        attributes=attrs,
        resource=resource,
    )


@dataclass(slots=True)
class SearchTrace:
    """One entry of a Tempo ``/api/search`` result."""

    trace_id: str
    root_service: str
    root_name: str
    start_ns: int
    duration_ms: int
    spans: list[Span]
    matched: int
    service_stats: dict[str, dict[str, int]]


def parse_search(body: Any) -> tuple[list[SearchTrace], dict[str, Any]]:
    """Parse a ``/api/search`` body into traces (ids normalised) and its ``metrics``."""
    if not isinstance(body, dict) or "traces" not in body:
        raise TempoParseError("not a search body: expected an object with 'traces'")
    traces = body["traces"] or []
    out = []
    for tr in traces:
        trace_id = normalize_id(tr.get("traceID", ""), 16, encoding="hex")
        spansets = tr.get("spanSets")
        if spansets is None:
            spansets = [tr["spanSet"]] if tr.get("spanSet") else []
        spans: dict[str, Span] = {}
        matched = 0
        for spanset in spansets:
            matched += int(spanset.get("matched", 0) or 0)
            for raw in spanset.get("spans") or []:
                attrs = attributes(raw.get("attributes"))
                start = _int(raw.get("startTimeUnixNano"), "startTimeUnixNano")
                span_id = normalize_id(raw.get("spanID", ""), 8, encoding="hex")
                status = attrs.get("status", "unset")
                kind = attrs.get("kind", "unspecified")
                http_status = next((_maybe_int(attrs[k]) for k in HTTP_STATUS_KEYS if k in attrs), None)
                spans[span_id] = Span(
                    trace_id=trace_id, span_id=span_id, parent_span_id="",
                    service=str(attrs.get("istio.canonical_service") or attrs.get("service.name", "")),
                    name=str(raw.get("name", "")), kind=str(kind),
                    start_ns=start, end_ns=start + _int(raw.get("durationNanos"), "durationNanos"),
                    status=status if status in ("ok", "error", "unset") else "unset",
                    http_status=http_status, attributes=attrs,
                )
        stats = {k: {kk: int(vv) for kk, vv in v.items()} for k, v in (tr.get("serviceStats") or {}).items()}
        out.append(SearchTrace(
            trace_id=trace_id, root_service=str(tr.get("rootServiceName", "")),
            root_name=str(tr.get("rootTraceName", "")),
            start_ns=_int(tr.get("startTimeUnixNano"), "startTimeUnixNano"),
            duration_ms=_int(tr.get("durationMs"), "durationMs"),
            spans=list(spans.values()), matched=matched, service_stats=stats,
        ))
    return out, dict(body.get("metrics") or {})


def detect_kind(body: Any) -> str:
    """Name the kind of Tempo body: trace, search, tags, tag-values."""
    if isinstance(body, dict):
        if "traces" in body:
            return "search"
        if "tagNames" in body or "scopes" in body:
            return "tags"
        if "tagValues" in body:
            return "tag-values"
        if any(k in body for k in ("trace", "batches", "resourceSpans", "resource_spans")):
            return "trace"
    raise TempoParseError("not a Tempo response: expected a trace, search, tags or tag-values body")


def parse_any(body: bytes | str | Any) -> tuple[str, list[Span]]:
    """Parse any Tempo response body; return its kind and the spans it holds (none for tag listings)."""
    if isinstance(body, bytes | str):
        body = loads(body)
    kind = detect_kind(body)
    if kind == "trace":
        return kind, parse_trace(body)[0]
    if kind == "search":
        return kind, [s for tr in parse_search(body)[0] for s in tr.spans]
    return kind, []


# ---------------------------------------------------------------------------------------------
# Rendering: what Tempo emits (used by the Tempo-compatible server and the incident generator).

def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode() if hex_id else ""


def _attr_list(attrs: dict[str, Any]) -> list[dict]:
    out = []
    for key, val in attrs.items():
        if isinstance(val, bool):
            v = {"boolValue": val}
        elif isinstance(val, int):
            v = {"intValue": str(val)}
        elif isinstance(val, float):
            v = {"doubleValue": val}
        else:
            v = {"stringValue": str(val)}
        out.append({"key": key, "value": v})
    return out


def render_resource_spans(spans: list[Span], *, id_encoding: str = "base64") -> list[dict]:
    """Group spans by resource into OTLP JSON ``resourceSpans`` the way Tempo's jsonpb writes them."""
    groups: dict[str, tuple[dict, list[dict]]] = {}
    enc = _b64 if id_encoding == "base64" else (lambda h: h)
    for s in spans:
        resource = s.resource or {"service.name": s.service}
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()
        raw: dict[str, Any] = {
            "traceId": enc(s.trace_id), "spanId": enc(s.span_id), "name": s.name,
            "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns),
        }
        if s.parent_span_id:  # jsonpb omits zero values
            raw["parentSpanId"] = enc(s.parent_span_id)
        if s.kind != "unspecified":
            raw["kind"] = KIND_ENUM[s.kind]
        attrs = dict(s.attributes)
        if s.http_status is not None and not any(k in attrs for k in HTTP_STATUS_KEYS):
            attrs["http.status_code"] = s.http_status
        if attrs:
            raw["attributes"] = _attr_list(attrs)
        raw["status"] = {} if s.status == "unset" else {"code": KEYS_BY_STATUS[s.status]}
        groups.setdefault(key, (resource, []))[1].append(raw)
    return [
        {"resource": {"attributes": _attr_list(res)}, "scopeSpans": [{"scope": {}, "spans": raws}]}
        for res, raws in groups.values()
    ]


KEYS_BY_STATUS = {"ok": "STATUS_CODE_OK", "error": "STATUS_CODE_ERROR"}


# ---------------------------------------------------------------------------------------------
# Columnar fast path: only the fields evidence needs, straight into lists (no Span objects).

_WANTED_ATTRS = frozenset(HTTP_STATUS_KEYS + GRPC_STATUS_KEYS + ("istio.canonical_service", "response_flags"))
COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "start_ns", "end_ns", "failed",
           "trace_code", "span_code", "parent_code")


def new_columns() -> dict[str, list]:
    return {c: [] for c in COLUMNS}


def span_appender(out: dict[str, list]):
    """A function that appends one span to ``out`` (the one place that knows the column layout)."""
    tids, sids, pids, svcs, names, starts, ends, failed, tcodes, scodes, pcodes = (out[c] for c in COLUMNS)

    def append(thex: str, tcode: int, shex: str, scode: int, phex: str, pcode: int, service: str, name: str,
               start: int, end: int, bad: bool) -> None:
        tids.append(thex)
        sids.append(shex)
        pids.append(phex)
        tcodes.append(tcode)
        scodes.append(scode)
        pcodes.append(pcode)
        svcs.append(service)
        names.append(name)
        starts.append(start)
        ends.append(end if end > start else start)
        failed.append(bad)

    return append


def _scalar(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "intValue", "string_value", "int_value"):
        if key in value:
            return value[key]
    return None


def attribute_effect(key: str, value: Any, service: str, failed: bool) -> tuple[str, bool]:
    """What one of the attributes evidence reads says: the Istio canonical service, or a failure
    (HTTP >= 500, a gRPC server error, an Envoy upstream-failure flag)."""
    if key == "istio.canonical_service":
        return (str(value) if value else service), failed
    if key == "response_flags":
        flags = str(value or "")
        return service, failed or (flags not in ("", "-") and any(f in flags for f in ("UF", "UH", "URX")))
    code = _maybe_int(value)
    if code is None:
        return service, failed
    return service, failed or (code >= 500 if key in HTTP_STATUS_KEYS else code in GRPC_SERVER_ERRORS)


class IdTable(dict):
    """Raw id (as found in a body) -> (lowercase hex, integer code). Codes number distinct ids, so the
    evidence joins spans to parents on integers; the memo also spares repeated base64 decoding."""

    def code(self, raw: Any, nbytes: int) -> tuple[str, int]:
        hit = self.get(raw)
        if hit is None:
            hex_id = None
            # Tempo's own form, base64 of the raw bytes with padding: decode it in C, strictly.
            if isinstance(raw, str) and len(raw) == _B64_LEN[nbytes] and raw.endswith("="):
                try:
                    decoded = binascii.a2b_base64(raw, strict_mode=True)
                except binascii.Error:
                    decoded = b""
                if len(decoded) == nbytes:
                    hex_id = decoded.hex()
            hit = self[raw] = (hex_id or normalize_id(raw, nbytes), len(self))
        return hit


_B64_LEN = {16: 24, 8: 12}


def trace_columns(body: Any, out: dict[str, list], ids: IdTable | dict) -> int:
    """Append the spans of one trace body (any shape :func:`parse_trace` reads) to ``out`` columns.

    ``ids`` is an :class:`IdTable` shared across calls. Returns the number of spans added. Same rules
    as :func:`parse_trace` (tests hold the two equal on every genuine sample)."""
    if not isinstance(ids, IdTable):
        ids = IdTable(ids)
    resource_spans, _ = _resource_spans(body)
    append = span_appender(out)
    code = ids.code
    wanted = _WANTED_ATTRS
    added = 0
    for rs in resource_spans:
        service = "unknown"
        for item in (rs.get("resource") or {}).get("attributes") or ():
            if item.get("key") == "service.name":
                service = str(_any_value(item.get("value")))
        scopes = rs.get("scopeSpans")
        if scopes is None:
            scopes = _get(rs, "scope_spans", "instrumentationLibrarySpans") or rs.get("instrumentation_library_spans")
        for scope in scopes or ():
            for raw in scope.get("spans") or ():
                get = raw.get
                tid = get("traceId")
                if tid is None:
                    tid = get("trace_id")
                sid = get("spanId")
                if sid is None:
                    sid = get("span_id")
                pid = get("parentSpanId")
                if pid is None:
                    pid = get("parent_span_id", "")
                thex, tcode = code(tid, 16)
                shex, scode = code(sid, 8)
                phex, pcode = code(pid, 8)
                if phex == NO_PARENT_HEX:
                    phex, pcode = code("", 8)
                if not thex or not shex:
                    raise TempoParseError(f"span {get('name', '')!r} has no traceId or spanId")
                svc, bad = service, False
                attrs = get("attributes")
                if attrs:
                    for item in attrs:
                        key = item.get("key")
                        if key in wanted:
                            svc, bad = attribute_effect(key, _scalar(item.get("value")), svc, bad)
                status = get("status")
                if status:
                    bad |= _status_code(status) == "error"
                start = get("startTimeUnixNano")
                start = _int(get("start_time_unix_nano") if start is None else start, "startTimeUnixNano")
                end = get("endTimeUnixNano")
                end = _int(get("end_time_unix_nano") if end is None else end, "endTimeUnixNano")
                append(thex, tcode, shex, scode, phex, pcode, svc, str(get("name", "")), start, end, bad)
                added += 1
    return added


def frame_from_columns(cols: dict[str, list]) -> Any:
    """The span frame :func:`baynet.evidence.build_evidence` takes, from :func:`trace_columns` output."""
    import numpy as np
    import pandas as pd

    return pd.DataFrame({
        "trace_id": cols["trace_id"], "span_id": cols["span_id"], "parent_span_id": cols["parent_span_id"],
        "service": cols["service"], "name": cols["name"],
        "start_ns": np.array(cols["start_ns"], dtype=np.int64), "end_ns": np.array(cols["end_ns"], dtype=np.int64),
        "failed": np.array(cols["failed"], dtype=bool),
        "trace_code": np.array(cols["trace_code"], dtype=np.int64),
        "span_code": np.array(cols["span_code"], dtype=np.int64),
        "parent_code": np.array(cols["parent_code"], dtype=np.int64),
    })
