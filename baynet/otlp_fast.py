"""Typed decoding of Tempo trace bodies straight into span columns (the evidence hot path).

msgspec decodes the camelCase shapes Tempo emits (v1 ``batches``, OTLP ``resourceSpans``, the v2
``trace`` wrapper, ``scopeSpans`` or ``instrumentationLibrarySpans``) into small structs, skipping every
field evidence does not use, which is faster than building the whole dict tree. Any other shape
(snake_case producers, odd values) falls back to :func:`baynet.otlp.trace_columns` on the generic
decode, so results are the same either way (tests hold them equal on every genuine sample).
"""

from __future__ import annotations

from typing import Any

import msgspec

from baynet.otlp import (
    GRPC_STATUS_KEYS,
    HTTP_STATUS_KEYS,
    STATUS,
    IdTable,
    TempoParseError,
    attribute_effect,
    loads,
    span_appender,
    trace_columns,
)


class _Value(msgspec.Struct, rename="camel", gc=False):
    string_value: str | None = None
    int_value: str | int | None = None
    double_value: float | None = None
    bool_value: bool | None = None
    array_value: Any = None
    kvlist_value: Any = None
    bytes_value: Any = None


class _KeyValue(msgspec.Struct, gc=False):
    key: str
    value: _Value | None = None


class _Status(msgspec.Struct, gc=False):
    code: str | int = 0
    message: str = ""


class _Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    name: str = ""
    kind: str | int = 0
    start_time_unix_nano: str | int = 0
    end_time_unix_nano: str | int = 0
    attributes: list[_KeyValue] | None = None
    status: _Status | None = None


class _Scope(msgspec.Struct, gc=False):
    spans: list[_Span] | None = None


class _Resource(msgspec.Struct, gc=False):
    attributes: list[_KeyValue] | None = None


class _ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_spans: list[_Scope] | None = None
    instrumentation_library_spans: list[_Scope] | None = None


class _Inner(msgspec.Struct, rename="camel", gc=False):
    batches: list[_ResourceSpans] | None = None
    resource_spans: list[_ResourceSpans] | None = None


class _Body(msgspec.Struct, rename="camel", gc=False):
    batches: list[_ResourceSpans] | None = None
    resource_spans: list[_ResourceSpans] | None = None
    trace: _Inner | None = None
    status: str | None = None
    message: str | None = None


_DECODER = msgspec.json.Decoder(_Body)
_WANTED = frozenset(HTTP_STATUS_KEYS + GRPC_STATUS_KEYS + ("istio.canonical_service", "response_flags"))


def _scalar(v: _Value | None) -> Any:
    if v is None:
        return None
    return v.string_value if v.string_value is not None else v.int_value


def body_status(raw: bytes) -> tuple[str, str]:
    """``(status, message)`` of a v2 body (``COMPLETE`` when absent)."""
    try:
        body = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return "COMPLETE", ""
    return body.status or "COMPLETE", body.message or ""


def trace_bytes_columns(raw: bytes, out: dict[str, list], ids: IdTable) -> int:
    """Append the spans of one raw trace body to ``out``; same result as :func:`trace_columns`."""
    try:
        body = _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return trace_columns(loads(raw), out, ids)
    groups = body.batches if body.batches is not None else body.resource_spans
    if groups is None and body.trace is not None:
        groups = body.trace.batches if body.trace.batches is not None else body.trace.resource_spans
    if groups is None:  # not a camelCase trace body: let the generic parser read it or say why not
        return trace_columns(loads(raw), out, ids)
    append = span_appender(out)
    code, known = ids.code, ids.get
    added = 0
    for rs in groups:
        service = "unknown"
        if rs.resource is not None and rs.resource.attributes:
            for kv in rs.resource.attributes:
                if kv.key == "service.name" and kv.value is not None:
                    val = _scalar(kv.value)
                    service = str(val if val is not None else kv.value.double_value)
        scopes = rs.scope_spans if rs.scope_spans is not None else rs.instrumentation_library_spans
        for scope in scopes or ():
            for sp in scope.spans or ():
                thex, tcode = known(sp.trace_id) or code(sp.trace_id, 16)
                shex, scode = known(sp.span_id) or code(sp.span_id, 8)
                phex, pcode = known(sp.parent_span_id) or code(sp.parent_span_id, 8)
                if not thex or not shex:
                    raise TempoParseError(f"span {sp.name!r} has no traceId or spanId")
                svc, bad = service, False
                if sp.attributes:
                    for kv in sp.attributes:
                        if kv.key in _WANTED:
                            svc, bad = attribute_effect(kv.key, _scalar(kv.value), svc, bad)
                if sp.status is not None:
                    if sp.status.code not in STATUS:
                        raise TempoParseError(f"unknown span status code {sp.status.code!r}")
                    bad |= STATUS[sp.status.code] == "error"
                try:
                    start, end = int(sp.start_time_unix_nano), int(sp.end_time_unix_nano)
                except ValueError:
                    raise TempoParseError(f"span times must be integers, got {sp.start_time_unix_nano!r}") from None
                append(thex, tcode, shex, scode, phex, pcode, svc, sp.name, start, end, bad)
                added += 1
    return added
