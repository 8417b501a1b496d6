"""Batch decoding of Tempo trace bodies straight into the span frame (the evidence hot path).

:class:`SpanBatch` takes raw trace bodies one by one and builds one frame at the end. Per span it does
only what cannot be done per column, and does it while the body is fresh in memory:

- msgspec decodes the camelCase shapes Tempo emits (v1 ``batches``, OTLP ``resourceSpans``, the v2
  ``trace`` wrapper, ``scopeSpans`` or ``instrumentationLibrarySpans``) into small structs, skipping
  every field evidence does not use; in C it decodes the base64 ids to bytes (checking their length),
  converts int64-as-string times and checks status codes;
- attributes are scanned for the few keys evidence reads, and their effect is memoised per value;
- ids become columns at the end: each distinct id is turned into hex once, and the id columns are
  categoricals whose codes are the integer join keys evidence uses (span and parent ids share one
  set of categories).

A body of any other shape (hex ids, snake_case producers, odd values) goes through the generic
:func:`baynet.otlp.trace_columns`, so results are the same either way (tests hold them equal on every
genuine sample).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import count
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import pandas as pd

from baynet.otlp import (
    COLUMNS,
    GRPC_STATUS_KEYS,
    HTTP_STATUS_KEYS,
    STATUS,
    TempoParseError,
    attribute_effect,
    NO_PARENT_HEX,
    _any_value,
    _scalar,
    loads,
    new_columns,
    trace_columns,
)


_NULL = msgspec.Raw(b"null")


class _KeyValue(msgspec.Struct, gc=False):
    key: str
    value: msgspec.Raw = _NULL  # left undecoded: only a few keys matter, and their values repeat


_StatusCode = Literal[0, 1, 2, "STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
_ERROR_CODES = frozenset(k for k, v in STATUS.items() if v == "error")


class _Status(msgspec.Struct, gc=False):
    code: _StatusCode = 0


# Ids are decoded from Tempo's base64 by msgspec, in C; any other form (hex, wrong length) fails the
# typed decode and the body goes through the generic parser instead.
_TraceId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
_SpanId = Annotated[bytes, msgspec.Meta(min_length=8, max_length=8)]
_ParentId = Annotated[bytes, msgspec.Meta(max_length=8)]
_NO_PARENT = bytes(8)  # OTLP: an all-zero span id is invalid, so it stands for "no parent"


class _Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: _TraceId
    span_id: _SpanId
    parent_span_id: _ParentId = b""
    name: str = ""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    attributes: tuple[_KeyValue, ...] | None = None
    status: _Status | None = None


class _Scope(msgspec.Struct, gc=False):
    spans: tuple[_Span, ...] | None = None


class _ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: msgspec.Raw = _NULL  # read once per distinct resource (SpanBatch memoises its service)
    scope_spans: tuple[_Scope, ...] | None = None
    instrumentation_library_spans: tuple[_Scope, ...] | None = None


class _Inner(msgspec.Struct, rename="camel", gc=False):
    batches: tuple[_ResourceSpans, ...] | None = None
    resource_spans: tuple[_ResourceSpans, ...] | None = None


class _Body(msgspec.Struct, rename="camel", gc=False):
    batches: tuple[_ResourceSpans, ...] | None = None
    resource_spans: tuple[_ResourceSpans, ...] | None = None
    trace: _Inner | None = None
    status: str | None = None
    message: str | None = None


class _StatusOnly(msgspec.Struct, gc=False):
    status: str | None = None
    message: str | None = None


# strict=False: int64 fields arrive as JSON strings ("1795392796880962563") and are converted in C.
_DECODER = msgspec.json.Decoder(_Body, strict=False)
_STATUS_DECODER = msgspec.json.Decoder(_StatusOnly)
_WANTED = frozenset(HTTP_STATUS_KEYS + GRPC_STATUS_KEYS + ("istio.canonical_service", "response_flags"))


def body_status(raw: bytes) -> tuple[str, str]:
    """``(status, message)`` of a v2 body (``COMPLETE`` when absent)."""
    try:
        body = _STATUS_DECODER.decode(raw)
    except msgspec.DecodeError:
        return "COMPLETE", ""
    return body.status or "COMPLETE", body.message or ""


# --- ids, column-wise -------------------------------------------------------------------------------


def _id_codes(ids: list[bytes], nbytes: int) -> tuple[np.ndarray, pd.Index]:
    """Raw ids (``nbytes`` each) -> ``(codes, lowercase hex categories)``, each distinct id once."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64), pd.Index([], dtype=object)
    blob = b"".join(ids)
    if len(blob) != n * nbytes:  # cannot happen: the decoder checks lengths
        raise TempoParseError(f"ids of {nbytes} bytes expected, got {len(blob)} bytes for {n} ids")
    words = np.frombuffer(blob, np.uint64).reshape(n, nbytes // 8)
    if nbytes == 8:
        uniques, codes = np.unique(words[:, 0], return_inverse=True)
    else:  # trace ids come in runs (one trace per body): unique the runs, then spread
        starts = np.flatnonzero(np.r_[True, (words[1:] != words[:-1]).any(axis=1)])
        uniques, run_codes = np.unique(words[starts], axis=0, return_inverse=True)
        codes = np.repeat(run_codes.ravel(), np.diff(np.r_[starts, n]))
    hexed = uniques.tobytes().hex()
    width = 2 * nbytes
    return codes.ravel().astype(np.int64), pd.Index([hexed[i:i + width] for i in range(0, len(hexed), width)],
                                                    dtype=object)


# --- the batch -----------------------------------------------------------------------------------

_NO_EFFECT = (None, False)
_WIDTH = 6  # values per span in SpanBatch._rows


class SpanBatch:
    """Accumulates raw trace bodies; :meth:`frame` returns the span frame evidence is built from.

    Each body's spans become row tuples while the body is fresh in memory (the decoded structs are
    then freed), and the few attributes evidence reads are scanned then; ids, times and strings become
    columns once, in :meth:`frame`."""

    def __init__(self) -> None:
        self._rows: list = []  # flat: trace_id, span_id, parent_span_id, name code, start, end per span
        self._names: defaultdict[str, int] = defaultdict(count().__next__)
        self._group_sizes: list[int] = []  # spans per resource scope, in row order ...
        self._group_services: list[str] = []  # ... and their service
        self._overrides: list[tuple[int, str]] = []  # (row, service) from istio.canonical_service
        self._failed: list[int] = []  # rows failed by status or attributes
        self._effects: dict[tuple, tuple[str | None, bool]] = {}
        self._services: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._rows) // _WIDTH

    def add(self, raw: bytes) -> int:
        """Take one trace body; return how many spans it holds. Raises :class:`TempoParseError` when
        the body is not a trace body or its spans cannot be read (nothing of it is kept then)."""
        try:
            body = _DECODER.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return self._add_generic(raw)
        groups = body.batches if body.batches is not None else body.resource_spans
        if groups is None and body.trace is not None:
            groups = body.trace.batches if body.trace.batches is not None else body.trace.resource_spans
        if groups is None:  # not a camelCase trace body: let the generic parser read it or say why not
            return self._add_generic(raw)
        rows, effects, names = self._rows, self._effects, self._names
        first = len(rows) // _WIDTH
        service_of, service = self._services, self._service
        parts = [(scope.spans, rs.resource) for rs in groups
                 for scope in rs.scope_spans or rs.instrumentation_library_spans or () if scope.spans]
        spans: list[_Span] = [sp for group, _ in parts for sp in group]
        self._group_sizes += [len(group) for group, _ in parts]
        self._group_services += [service_of.get(key) or service(key) for _, res in parts for key in (bytes(res),)]
        no_parent, errors = _NO_PARENT, _ERROR_CODES
        rows += [x for sp in spans for x in (sp.trace_id, sp.span_id, sp.parent_span_id or no_parent, names[sp.name],
                                             sp.start_time_unix_nano, sp.end_time_unix_nano)]
        # Tempo leaves unset statuses out, so most bodies have no status code to check (a body with
        # \u escapes might spell the key otherwise: it is checked too).
        if b'"code"' in raw or b"\\u" in raw:
            self._failed += [first + j for j, sp in enumerate(spans)
                             if sp.status is not None and sp.status.code in errors]
        hits = [(first + j, memo_key, effect) for j, sp in enumerate(spans) if sp.attributes
                for kv in sp.attributes if kv.key in _WANTED
                if (effect := effects.get(memo_key := (kv.key, bytes(kv.value)))) is not _NO_EFFECT]
        for row, memo_key, effect in hits:  # in attribute order: the last canonical service wins
            override, bad = effect or self._effect(*memo_key)
            if override is not None:
                self._overrides.append((row, override))
            if bad:
                self._failed.append(row)
        return len(spans)

    def _service(self, resource: bytes) -> str:
        """``service.name`` of a resource (raw JSON), read as the generic parser reads it and memoised:
        a trace repeats a handful of resources."""
        try:
            items = (loads(resource) or {}).get("attributes") or ()
            service = "unknown"
            for item in items:
                if item.get("key") == "service.name":
                    service = str(_any_value(item.get("value")))
        except (AttributeError, TypeError):
            raise TempoParseError(f"unreadable resource {resource[:200]!r}") from None
        self._services[resource] = service
        return service

    def _effect(self, key: str, raw: bytes) -> tuple[str | None, bool]:
        """(service override or None, failed) for one wanted attribute, read as the generic parser
        reads it and memoised per raw value."""
        value = _scalar(loads(raw))
        if key == "istio.canonical_service":
            effect = (str(value) if value else None), False
        else:
            effect = None, attribute_effect(key, value, "", False)[1]
        effect = _NO_EFFECT if effect == _NO_EFFECT else effect
        self._effects[(key, raw)] = effect
        return effect

    def _add_generic(self, raw: bytes) -> int:
        cols = new_columns()
        added = trace_columns(loads(raw), cols, {})
        base, names = len(self), self._names
        self._rows += [x for t, s, p, name, start, end in zip(cols["trace_id"], cols["span_id"], cols["parent_span_id"],
                                                              cols["name"], cols["start_ns"], cols["end_ns"])
                       for x in (bytes.fromhex(t), bytes.fromhex(s), bytes.fromhex(p) if p else _NO_PARENT, names[name],
                                 start, end)]
        self._group_sizes += [1] * added
        self._group_services += cols["service"]
        self._failed += [base + j for j, bad in enumerate(cols["failed"]) if bad]
        return added

    def frame(self) -> pd.DataFrame:
        """The span frame: ``trace_id``, ``span_id``, ``parent_span_id`` (lowercase hex, ``""`` for no
        parent), ``service``, ``name`` (categoricals), ``start_ns``, ``end_ns``, ``failed``, and the
        integer codes of the ids (``trace_code``, ``span_code``, ``parent_code``: equal ids, equal codes;
        span and parent ids share one numbering) that evidence joins on."""
        rows, n = self._rows, len(self)
        tids, sids, pids, name_codes, starts, ends = (rows[i::_WIDTH] for i in range(_WIDTH))
        tcode, thex = _id_codes(tids, 16)
        idcode, idhex = _id_codes(sids + pids, 8)
        if len(idhex) and idhex[0] == NO_PARENT_HEX:  # zeros sort first: the "no parent" id reads ""
            idhex = pd.Index([""] + list(idhex[1:]), dtype=object)
        start = np.fromiter(starts, np.int64, n)
        end = np.fromiter(ends, np.int64, n)
        group_codes, service_names = pd.factorize(np.array(self._group_services, dtype=object))
        service_codes = np.repeat(group_codes, self._group_sizes)
        if self._overrides:
            rows, values = zip(*self._overrides)
            extra, extra_names = pd.factorize(np.array(values, dtype=object))
            service_codes[list(rows)] = extra + len(service_names)
            service_codes, service_names = _compact(service_codes, list(service_names) + list(extra_names))
        failed = np.zeros(n, bool)
        failed[self._failed] = True
        id_type = pd.CategoricalDtype(idhex)  # one set of categories: span and parent codes join
        name_type = pd.CategoricalDtype(pd.Index(list(self._names), dtype=object))
        return pd.DataFrame({
            "trace_id": pd.Categorical.from_codes(tcode, dtype=pd.CategoricalDtype(thex)),
            "span_id": pd.Categorical.from_codes(idcode[:n], dtype=id_type),
            "parent_span_id": pd.Categorical.from_codes(idcode[n:], dtype=id_type),
            "service": pd.Categorical.from_codes(service_codes, categories=pd.Index(service_names, dtype=object)),
            "name": pd.Categorical.from_codes(np.fromiter(name_codes, np.int64, n), dtype=name_type),
            "start_ns": start, "end_ns": np.maximum(end, start), "failed": failed,
            "trace_code": tcode, "span_code": idcode[:n], "parent_code": idcode[n:],
        }, columns=list(COLUMNS))


def _compact(codes: np.ndarray, names: Any) -> tuple[np.ndarray, list[str]]:
    """Merge equal names (an override equal to a resource's service) and drop unused ones."""
    merged, index = pd.factorize(np.array(names, dtype=object))
    used = np.unique(merged[codes])
    remap = np.full(len(index), -1, np.int64)
    remap[used] = np.arange(len(used))
    return remap[merged[codes]], list(np.asarray(index, dtype=object)[used])
