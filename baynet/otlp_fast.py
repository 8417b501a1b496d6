"""Batch decoding of Tempo trace bodies straight into the span frame (the evidence hot path).

:class:`SpanBatch` takes raw trace bodies one by one and builds one frame at the end. Per span it does
only what cannot be done per column, and does it while the body is fresh in memory:

- msgspec decodes the camelCase shapes Tempo emits (v1 ``batches``, OTLP ``resourceSpans``, the v2
  ``trace`` wrapper, ``scopeSpans`` or ``instrumentationLibrarySpans``) into small structs, skipping
  every field evidence does not use; in C it decodes the base64 ids to bytes (checking their length),
  converts int64-as-string times;
- attribute lists and statuses stay raw: a trace repeats a handful of distinct ones, so each distinct
  (attributes, status) pair is read once by the generic parser's own functions and its effect (a
  failure, an Istio service override) memoised;
- ids become columns at the end: each distinct id is turned into hex once, and the id columns are
  categoricals whose codes are the integer join keys evidence uses (span and parent ids share one
  set of categories).

A body of any other shape (hex ids, snake_case producers, odd values) goes through the generic
:func:`baynet.otlp.trace_columns`, so results are the same either way (tests hold them equal on every
genuine sample).
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from itertools import count
from typing import Annotated, Any

import msgspec
import numpy as np
import pandas as pd

from baynet.otlp import (
    COLUMNS,
    GRPC_STATUS_KEYS,
    HTTP_STATUS_KEYS,
    TempoParseError,
    attribute_effect,
    NO_PARENT_HEX,
    _any_value,
    _scalar,
    _status_code,
    loads,
    new_columns,
    trace_columns,
)


_NULL = msgspec.Raw(b"null")


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
    # Left undecoded: a trace repeats a handful of distinct attribute lists and statuses, so each distinct
    # one is read once (by the generic parser's own functions) and its effect memoised.
    attributes: msgspec.Raw = _NULL
    status: msgspec.Raw = _NULL


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


def _id_codes(blob: bytes, n: int, nbytes: int) -> tuple[np.ndarray, pd.Index]:
    """``n`` raw ids of ``nbytes`` each, back to back -> ``(codes, lowercase hex categories)``, each
    distinct id hexed once."""
    if n == 0:
        return np.zeros(0, np.int64), pd.Index([], dtype=object)
    if len(blob) != n * nbytes:  # cannot happen: the decoder checks lengths
        raise TempoParseError(f"ids of {nbytes} bytes expected, got {len(blob)} bytes for {n} ids")
    words = np.frombuffer(blob, np.uint64).reshape(n, nbytes // 8)
    if nbytes == 8:
        uniques, codes = np.unique(words[:, 0], return_inverse=True)
    else:
        uniques, codes = np.unique(words, axis=0, return_inverse=True)
    hexed = uniques.tobytes().hex()
    width = 2 * nbytes
    return codes.ravel().astype(np.int64), pd.Index([hexed[i:i + width] for i in range(0, len(hexed), width)],
                                                    dtype=object)


# --- the batch -----------------------------------------------------------------------------------

_NO_EFFECT = (None, False)


def _int64s(values: list[int], what: str) -> array:
    try:
        return array("q", values)
    except OverflowError:
        raise TempoParseError(f"a span's {what} does not fit in 64 bits") from None


class SpanBatch:
    """Accumulates raw trace bodies; :meth:`frame` returns the span frame evidence is built from.

    Each body's spans go into flat column buffers while the body is fresh in memory (raw ids into
    bytearrays, times and name codes into int64 arrays: nothing per span is left for the garbage
    collector to walk), and the decoded structs are freed; ids become hex and categoricals once, in
    :meth:`frame`."""

    def __init__(self) -> None:
        self._n = 0
        self._span_ids = bytearray()  # 8 raw bytes per span
        self._parent_ids = bytearray()  # 8 raw bytes per span (zeros: no parent)
        self._name_codes, self._starts, self._ends = array("q"), array("q"), array("q")
        self._trace_runs: list[bytes] = []  # trace ids in row order, one per run of spans sharing it ...
        self._run_lengths: list[int] = []  # ... and the run lengths (a Tempo body is one trace: one run)
        self._names: defaultdict[str, int] = defaultdict(count().__next__)
        self._group_sizes: list[int] = []  # spans per resource scope, in row order ...
        self._group_services: list[str] = []  # ... and their service
        self._overrides: list[tuple[int, str]] = []  # (row, service) from istio.canonical_service
        self._failed: list[int] = []  # rows failed by status or attributes
        self._effects: dict[tuple[bytes, bytes], tuple[str | None, bool]] = {}
        self._services: dict[bytes, str] = {}

    def __len__(self) -> int:
        return self._n

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
        names, memo, effect = self._names, self._effects, self._effect
        first = self._n
        service_of, service = self._services, self._service
        parts = [(scope.spans, rs.resource) for rs in groups
                 for scope in rs.scope_spans or rs.instrumentation_library_spans or () if scope.spans]
        spans: list[_Span] = [sp for group, _ in parts for sp in group]
        try:  # before anything is kept: an unreadable attribute list or status sends the body to the generic parser
            effects = [memo.get(key) or effect(key) for sp in spans
                       for key in ((bytes(sp.attributes), bytes(sp.status)),)]
        except TempoParseError:
            return self._add_generic(raw)
        no_parent = _NO_PARENT
        parent_ids = b"".join([sp.parent_span_id or no_parent for sp in spans])
        if len(parent_ids) != 8 * len(spans):  # a parent id of 1-7 bytes: the generic parser says what it is
            return self._add_generic(raw)
        starts = _int64s([sp.start_time_unix_nano for sp in spans], "startTimeUnixNano")
        ends = _int64s([sp.end_time_unix_nano for sp in spans], "endTimeUnixNano")
        self._group_sizes += [len(group) for group, _ in parts]
        self._group_services += [service_of.get(key) or service(key) for _, res in parts for key in (bytes(res),)]
        tids = [sp.trace_id for sp in spans]
        if tids and tids.count(tids[0]) == len(tids):
            self._trace_runs.append(tids[0])
            self._run_lengths.append(len(tids))
        else:
            self._trace_runs += tids
            self._run_lengths += [1] * len(tids)
        self._span_ids += b"".join([sp.span_id for sp in spans])
        self._parent_ids += parent_ids
        self._name_codes.fromlist([names[sp.name] for sp in spans])
        self._starts += starts
        self._ends += ends
        self._n += len(spans)
        for j, (override, bad) in ((j, e) for j, e in enumerate(effects) if e is not _NO_EFFECT):
            if override is not None:
                self._overrides.append((first + j, override))
            if bad:
                self._failed.append(first + j)
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

    def _effect(self, key: tuple[bytes, bytes]) -> tuple[str | None, bool]:
        """(service override or None, failed) of one distinct (attribute list, status) pair, read as the
        generic parser reads them (the last ``istio.canonical_service`` wins) and memoised."""
        attrs_raw, status_raw = key
        items, status = loads(attrs_raw), loads(status_raw)
        service, bad = "", False
        if items:
            if not isinstance(items, list):
                raise TempoParseError(f"span attributes must be a list, got {attrs_raw[:200]!r}")
            for item in items:
                if not isinstance(item, dict):
                    raise TempoParseError(f"span attribute must be an object, got {item!r}")
                name = item.get("key")
                if name in _WANTED:
                    service, bad = attribute_effect(name, _scalar(item.get("value")), service, bad)
        if status:
            bad |= _status_code(status) == "error"
        effect = (service or None, bad)
        effect = _NO_EFFECT if effect == _NO_EFFECT else effect
        self._effects[key] = effect
        return effect

    def _add_generic(self, raw: bytes) -> int:
        cols = new_columns()
        added = trace_columns(loads(raw), cols, {})
        base, names = len(self), self._names
        starts, ends = _int64s(cols["start_ns"], "startTimeUnixNano"), _int64s(cols["end_ns"], "endTimeUnixNano")
        self._span_ids += b"".join(bytes.fromhex(s) for s in cols["span_id"])
        self._parent_ids += b"".join(bytes.fromhex(p) if p else _NO_PARENT for p in cols["parent_span_id"])
        self._name_codes.fromlist([names[name] for name in cols["name"]])
        self._starts += starts
        self._ends += ends
        self._n += added
        self._trace_runs += [bytes.fromhex(t) for t in cols["trace_id"]]
        self._run_lengths += [1] * added
        self._group_sizes += [1] * added
        self._group_services += cols["service"]
        self._failed += [base + j for j, bad in enumerate(cols["failed"]) if bad]
        return added

    def frame(self) -> pd.DataFrame:
        """The span frame: ``trace_id``, ``span_id``, ``parent_span_id`` (lowercase hex, ``""`` for no
        parent), ``service``, ``name`` (categoricals), ``start_ns``, ``end_ns``, ``failed``, and the
        integer codes of the ids (``trace_code``, ``span_code``, ``parent_code``: equal ids, equal codes;
        span and parent ids share one numbering) that evidence joins on."""
        n = len(self)
        run_codes, thex = _id_codes(b"".join(self._trace_runs), len(self._trace_runs), 16)
        tcode = np.repeat(run_codes, self._run_lengths)
        idcode, idhex = _id_codes(bytes(self._span_ids + self._parent_ids), 2 * n, 8)
        if len(idhex) and idhex[0] == NO_PARENT_HEX:  # zeros sort first: the "no parent" id reads ""
            idhex = pd.Index([""] + list(idhex[1:]), dtype=object)
        start = np.frombuffer(self._starts, np.int64).copy()
        end = np.frombuffer(self._ends, np.int64)
        group_codes, service_names = pd.factorize(np.array(self._group_services, dtype=object))
        service_codes = np.repeat(group_codes, self._group_sizes)
        if self._overrides:
            rows, values = zip(*self._overrides)
            extra, extra_names = pd.factorize(np.array(values, dtype=object))
            service_codes[list(rows)] = extra + len(service_names)
            service_codes, service_names = _compact(service_codes, list(service_names) + list(extra_names))
        failed = np.zeros(n, bool)
        failed[self._failed] = True
        id_type = _dtype(idhex)  # one set of categories: span and parent codes join
        name_type = pd.CategoricalDtype(pd.Index(list(self._names), dtype=object))
        return pd.DataFrame({
            "trace_id": pd.Categorical.from_codes(tcode, dtype=_dtype(thex)),
            "span_id": pd.Categorical.from_codes(idcode[:n], dtype=id_type),
            "parent_span_id": pd.Categorical.from_codes(idcode[n:], dtype=id_type),
            "service": pd.Categorical.from_codes(service_codes, categories=pd.Index(service_names, dtype=object)),
            "name": pd.Categorical.from_codes(np.frombuffer(self._name_codes, np.int64).copy(), dtype=name_type),
            "start_ns": start, "end_ns": np.maximum(end, start), "failed": failed,
            "trace_code": tcode, "span_code": idcode[:n], "parent_code": idcode[n:],
        }, columns=list(COLUMNS))


def _dtype(unique: pd.Index) -> pd.CategoricalDtype:
    """A categorical dtype over ids already made unique by ``np.unique``: pandas' own check hashes every
    one of them again (about 30 ms on 200k ids), so its fast path is used where this pandas has it."""
    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    return fast(unique, False) if fast is not None else pd.CategoricalDtype(unique)


def _compact(codes: np.ndarray, names: Any) -> tuple[np.ndarray, list[str]]:
    """Merge equal names (an override equal to a resource's service) and drop unused ones."""
    merged, index = pd.factorize(np.array(names, dtype=object))
    used = np.unique(merged[codes])
    remap = np.full(len(index), -1, np.int64)
    remap[used] = np.arange(len(used))
    return remap[merged[codes]], list(np.asarray(index, dtype=object)[used])
