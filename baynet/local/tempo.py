"""A Tempo-compatible trace server for local use and tests (Tempo itself cannot be installed here).

It serves OTLP JSON traces loaded from a directory with Tempo's endpoints, body shapes and
plain-text errors (see ``../shared/contracts/README.md`` §1):

* ``GET /api/search`` — TraceQL ``q`` (a subset: one spanset ``{ ... }`` with ``&&``/``||`` of
  comparisons on ``resource.service.name``/``.service.name``, ``span.<attr>``, ``name``, ``status``,
  ``kind``, ``duration``) or logfmt ``tags``; ``start``/``end`` unix seconds; ``limit`` (default 20);
  ``spss`` (default 3). Trace ids in results are hex with leading zeros stripped, as Tempo does.
* ``GET /api/traces/<id>`` (v1: ``{"batches": ...}``; 422 when the trace exceeds ``max_trace_bytes``),
  ``GET /api/v2/traces/<id>`` (``{"trace": ...}``; ``status: PARTIAL`` when too large),
  404 with an empty body for unknown ids, 400 for non-hex ids.
* ``/ready``, ``/api/echo``, ``/api/status/buildinfo``, ``/api/search/tags``,
  ``/api/search/tag/<tag>/values``.

Faults for tests are queued with :meth:`TempoServer.inject` (status, body, headers, delay).
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

import orjson

from baynet.local.standin import StandIn, StandInHandler
from baynet.otlp import Span, TempoParseError, loads, parse_trace, render_resource_spans

BUILDINFO = {"version": "2.6.0-baynet-replay", "revision": "replay", "branch": "HEAD", "buildDate": "",
             "buildUser": "baynet", "goVersion": "n/a"}


class TraceQLError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# TraceQL subset

_TOKEN = re.compile(
    r"\s*(?:(?P<lbrace>\{)|(?P<rbrace>\})|(?P<and>&&)|(?P<or>\|\|)|(?P<lp>\()|(?P<rp>\))"
    r"|(?P<op>=~|!=|!~|>=|<=|=|>|<)"
    r"|(?P<str>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<dur>\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<ident>[A-Za-z_.][A-Za-z0-9_.\-]*))"
)
_DUR = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_STATUS_WORDS = {"error", "ok", "unset"}
_KIND_WORDS = {"server", "client", "internal", "producer", "consumer", "unspecified"}

Predicate = Callable[[Span], bool]


def _tokens(query: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(query):
        if query[pos:].strip() == "":
            break
        m = _TOKEN.match(query, pos)
        if not m or m.end() == pos:
            raise TraceQLError(f"parse error at line 1, col {pos + 1}: syntax error: unexpected "
                               f"{query[pos:].split()[0]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    return out


def _field_getter(ident: str) -> Callable[[Span], Any]:
    if ident in ("resource.service.name", ".service.name", "service.name"):
        return lambda s: s.resource.get("service.name", s.service)
    if ident in ("name", "span:name"):
        return lambda s: s.name
    if ident in ("status", "span:status"):
        return lambda s: s.status
    if ident in ("kind", "span:kind"):
        return lambda s: s.kind
    if ident in ("duration", "span:duration"):
        return lambda s: s.end_ns - s.start_ns
    if ident.startswith("resource."):
        key = ident[len("resource."):]
        return lambda s: s.resource.get(key)
    if ident.startswith("span."):
        key = ident[len("span."):]
        return lambda s: s.attributes.get(key)
    if ident.startswith("."):
        key = ident[1:]
        return lambda s: s.attributes.get(key, s.resource.get(key))
    raise TraceQLError(f"parse error: unknown attribute {ident!r}")


def _compare(getter: Callable[[Span], Any], op: str, value: Any) -> Predicate:
    def pred(span: Span) -> bool:
        actual = getter(span)
        if actual is None:
            return False
        if op in ("=~", "!~"):
            hit = re.fullmatch(value, str(actual)) is not None
            return hit if op == "=~" else not hit
        if isinstance(value, float):
            try:
                actual = float(actual)
            except (TypeError, ValueError):
                return False
        else:
            actual = str(actual)
        return {"=": actual == value, "!=": actual != value, ">": actual > value, "<": actual < value,
                ">=": actual >= value, "<=": actual <= value}[op]
    return pred


class _Parser:
    def __init__(self, query: str):
        self.toks = _tokens(query)
        self.i = 0

    def peek(self) -> str:
        return self.toks[self.i][0] if self.i < len(self.toks) else "eof"

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            col = self.toks[self.i][2] if self.i < len(self.toks) else 0
            got = self.toks[self.i][1] if self.i < len(self.toks) else "end of query"
            raise TraceQLError(f"parse error at line 1, col {col}: syntax error: unexpected {got!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self) -> Predicate:
        self.take("lbrace")
        pred: Predicate = (lambda s: True) if self.peek() == "rbrace" else self.expr()
        self.take("rbrace")
        if self.peek() != "eof":
            self.take("eof")
        return pred

    def expr(self) -> Predicate:
        left = self.term()
        while self.peek() == "or":
            self.take("or")
            right = self.term()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def term(self) -> Predicate:
        left = self.atom()
        while self.peek() == "and":
            self.take("and")
            right = self.atom()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def atom(self) -> Predicate:
        if self.peek() == "lp":
            self.take("lp")
            inner = self.expr()
            self.take("rp")
            return inner
        ident = self.take("ident")
        getter = _field_getter(ident)
        op = self.take("op")
        kind = self.peek()
        raw = self.take(kind) if kind in ("str", "num", "dur", "ident") else self.take("str")
        value: Any
        if kind == "str":
            value = orjson.loads(raw)
        elif kind == "num":
            value = float(raw)
        elif kind == "dur":
            unit = re.search(r"[a-zµ]+$", raw).group(0)  # type: ignore[union-attr]
            value = float(raw[: -len(unit)]) * _DUR[unit]
        elif raw in _STATUS_WORDS | _KIND_WORDS or raw in ("true", "false"):
            value = raw
        else:
            raise TraceQLError(f"parse error: unexpected identifier {raw!r}")
        return _compare(getter, op, value)


def compile_traceql(query: str) -> Predicate:
    """Compile a single-spanset TraceQL query into a span predicate."""
    return _Parser(query).parse()


def compile_tags(tags: str) -> Predicate:
    """Tempo's legacy logfmt ``tags`` search: every ``k=v`` must match (case-insensitive substring)."""
    pairs = re.findall(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))', tags)
    wanted = [(k, (q or v).lower()) for k, q, v in pairs]

    def pred(span: Span) -> bool:
        for key, val in wanted:
            actual = span.attributes.get(key, span.resource.get(key))
            if key == "name":
                actual = span.name
            if actual is None or val not in str(actual).lower():
                return False
        return True
    return pred


# ---------------------------------------------------------------------------------------------
# Storage

@dataclass
class StoredTrace:
    trace_id: str
    spans: list[Span]
    start_ns: int
    end_ns: int
    size_bytes: int
    v1_body: bytes | None = None  # rendered once: a trace is immutable once stored

    @property
    def root(self) -> Span:
        ids = {s.span_id for s in self.spans}
        roots = [s for s in self.spans if not s.parent_span_id or s.parent_span_id not in ids]
        return min(roots or self.spans, key=lambda s: s.start_ns)


class TraceStore:
    """Traces by id, loaded from OTLP JSON files (one export per file, any number of traces)."""

    def __init__(self) -> None:
        self.traces: dict[str, StoredTrace] = {}
        self._lock = threading.Lock()
        self._index: tuple[list[int], list[StoredTrace], int] | None = None  # by start time, built on demand

    def overlapping(self, start_ns: int, end_ns: int) -> list[StoredTrace]:
        """Traces that overlap ``[start_ns, end_ns]``, through an index by start time (as Tempo's blocks
        have time ranges), so a search does not cost the whole store."""
        with self._lock:
            if self._index is None:
                ordered = sorted(self.traces.values(), key=lambda t: t.start_ns)
                longest = max((t.end_ns - t.start_ns for t in ordered), default=0)
                self._index = ([t.start_ns for t in ordered], ordered, longest)
            starts, ordered, longest = self._index
        lo = bisect.bisect_left(starts, start_ns - longest)
        hi = bisect.bisect_right(starts, end_ns)
        return [t for t in ordered[lo:hi] if t.end_ns >= start_ns]

    def add_spans(self, spans: list[Span]) -> None:
        by_trace: dict[str, list[Span]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        with self._lock:
            for trace_id, group in by_trace.items():
                if trace_id in self.traces:
                    group = self.traces[trace_id].spans + group
                size = sum(200 + 40 * len(s.attributes) for s in group)  # rough proto size
                self.traces[trace_id] = StoredTrace(trace_id, group, min(s.start_ns for s in group),
                                                    max(s.end_ns for s in group), size)
            self._index = None

    def load_dir(self, directory: Path) -> int:
        """Load every ``*.json`` file below ``directory``; return the number of traces held."""
        for path in sorted(Path(directory).rglob("*.json")):
            try:
                spans, _ = parse_trace(loads(path.read_bytes()))
            except TempoParseError as exc:
                raise TempoParseError(f"{path}: {exc}") from None
            self.add_spans(spans)
        return len(self.traces)


def _hex_trace_id(raw: str) -> str:
    for pos, ch in enumerate(raw):
        if ch not in "0123456789abcdefABCDEF":
            raise ValueError(f"trace IDs can only contain hex characters: invalid character '{ch}' "
                             f"at position {pos + 1}")
    if len(raw) > 32:
        raise ValueError(f"trace IDs can't be larger than 128 bits: {raw}")
    return raw.lower().rjust(32, "0")


# ---------------------------------------------------------------------------------------------
# HTTP

class TempoServer(StandIn):
    """Run the replay server in a background thread: ``with TempoServer(store) as srv: srv.url``."""

    thread_name = "tempo-replay"

    def __init__(self, store: TraceStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 max_trace_bytes: int = 50 * 1024 * 1024, require_org_id: str | None = None):
        self.store = store or TraceStore()
        self.max_trace_bytes = max_trace_bytes
        self.require_org_id = require_org_id
        super().__init__(host, port)

    # --- endpoint logic (returns status, content type, body, extra headers) ----------------------

    def handle(self, path: str, query: dict[str, list[str]], headers: dict[str, str]
               ) -> tuple[int, str, bytes, dict[str, str]]:
        text = "text/plain; charset=utf-8"
        if self.require_org_id and headers.get("x-scope-orgid") != self.require_org_id:
            return 401, text, b"no org id", {}
        if path == "/ready":
            return 200, text, b"ready", {}
        if path == "/api/echo":
            return 200, text, b"echo", {}
        if path == "/api/status/buildinfo":
            return 200, "application/json", orjson.dumps(BUILDINFO), {}
        if path == "/api/search":
            return self._search(query)
        if path in ("/api/search/tags", "/api/v2/search/tags"):
            return self._tags(path.startswith("/api/v2"))
        m = re.fullmatch(r"/api(/v2)?/search/tag/([^/]+)/values", path)
        if m:
            return self._tag_values(m.group(2), bool(m.group(1)))
        m = re.fullmatch(r"/api(/v2)?/traces/([^/]*)", path)
        if m:
            return self._trace(m.group(2), v2=bool(m.group(1)))
        return 404, text, b"404 page not found\n", {}

    def _search(self, query: dict[str, list[str]]) -> tuple[int, str, bytes, dict[str, str]]:
        text = "text/plain; charset=utf-8"
        one = {k: v[-1] for k, v in query.items()}
        if "q" in one and "tags" in one:
            return 400, text, b"invalid request: can't specify tags and q in the same query", {}
        try:
            limit = int(one.get("limit", "20"))
            spss = int(one.get("spss", "3"))
        except ValueError:
            return 400, text, b"invalid limit: must be a positive number", {}
        if limit <= 0:
            return 400, text, b"invalid limit: must be a positive number", {}
        if spss <= 0:
            return 400, text, b"invalid spss: must be a positive number", {}
        start = end = 0
        if "start" in one or "end" in one:
            try:
                start, end = int(one.get("start", "0")), int(one.get("end", "0"))
            except ValueError:
                return 400, text, f"invalid start: {one.get('start')}".encode(), {}
            if end <= start:
                return 400, text, (f"http parameter start must be before end. received start={start} "
                                   f"end={end}").encode(), {}
        try:
            pred = compile_traceql(one["q"]) if "q" in one else compile_tags(one.get("tags", ""))
        except TraceQLError as exc:
            return 400, text, f"invalid TraceQL query: {exc}".encode(), {}
        min_dur = _go_duration(one.get("minDuration"))
        max_dur = _go_duration(one.get("maxDuration"))
        hits = []
        inspected = 0
        candidates = self.store.overlapping(start * 10**9, end * 10**9) if start else \
            sorted(self.store.traces.values(), key=lambda t: t.start_ns)
        # Most recent first, like Tempo, which also stops once it has found ``limit`` traces.
        for tr in reversed(candidates):
            inspected += tr.size_bytes
            dur = tr.end_ns - tr.start_ns
            if (min_dur and dur < min_dur) or (max_dur and dur > max_dur):
                continue
            matched = [s for s in tr.spans if pred(s)]
            if matched:
                hits.append((tr, matched))
                if len(hits) >= limit:
                    break
        traces = [self._search_entry(tr, matched, spss) for tr, matched in hits[:limit]]
        body = {"traces": traces, "metrics": {"inspectedTraces": len(self.store.traces),
                                              "inspectedBytes": str(inspected), "completedJobs": 1,
                                              "totalJobs": 1}}
        return 200, "application/json", orjson.dumps(body), {}

    @staticmethod
    def _search_entry(tr: StoredTrace, matched: list[Span], spss: int) -> dict[str, Any]:
        root = tr.root
        spans = []
        for s in matched[:spss]:
            entry: dict[str, Any] = {"spanID": s.span_id, "name": s.name, "startTimeUnixNano": str(s.start_ns),
                                     "durationNanos": str(s.end_ns - s.start_ns),
                                     "attributes": [{"key": "service.name",
                                                     "value": {"stringValue": s.resource.get("service.name",
                                                                                             s.service)}}]}
            if s.status != "unset":
                entry["attributes"].append({"key": "status", "value": {"stringValue": s.status}})
            spans.append(entry)
        spanset = {"spans": spans, "matched": len(matched)}
        stats: dict[str, dict[str, int]] = {}
        for s in tr.spans:
            st = stats.setdefault(s.resource.get("service.name", s.service), {"spanCount": 0})
            st["spanCount"] += 1
            if s.status == "error":
                st["errorCount"] = st.get("errorCount", 0) + 1
        return {"traceID": tr.trace_id.lstrip("0") or "0", "rootServiceName": root.resource.get("service.name",
                                                                                                  root.service),
                "rootTraceName": root.name, "startTimeUnixNano": str(tr.start_ns),
                "durationMs": int((tr.end_ns - tr.start_ns) // 1_000_000),
                "spanSet": spanset, "spanSets": [spanset], "serviceStats": stats}

    def _trace(self, raw_id: str, v2: bool) -> tuple[int, str, bytes, dict[str, str]]:
        try:
            trace_id = _hex_trace_id(raw_id)
        except ValueError as exc:
            return 400, "text/plain; charset=utf-8", str(exc).encode(), {}
        tr = self.store.traces.get(trace_id)
        if tr is None:
            return 404, "text/plain; charset=utf-8", b"", {}
        too_big = tr.size_bytes > self.max_trace_bytes
        if not v2 and not too_big:
            if tr.v1_body is None:
                tr.v1_body = orjson.dumps({"batches": render_resource_spans(tr.spans)})
            return 200, "application/json", tr.v1_body, {}
        if too_big and not v2:
            return 422, "text/plain; charset=utf-8", (f"trace exceeds max size (max bytes: "
                                                      f"{self.max_trace_bytes})").encode(), {}
        spans = tr.spans
        if too_big:  # v2 returns what fits, flagged PARTIAL
            keep, size = [], 0
            for s in sorted(spans, key=lambda s: s.start_ns):
                size += 200 + 40 * len(s.attributes)
                if size > self.max_trace_bytes:
                    break
                keep.append(s)
            spans = keep
        resource_spans = render_resource_spans(spans)
        if v2:
            body: dict[str, Any] = {"trace": {"resourceSpans": resource_spans}}
            if too_big:
                body["status"] = "PARTIAL"
                body["message"] = f"trace exceeds max size (max bytes: {self.max_trace_bytes})"
        else:
            body = {"batches": resource_spans}
        return 200, "application/json", orjson.dumps(body), {}

    def _tags(self, v2: bool) -> tuple[int, str, bytes, dict[str, str]]:
        span_keys, res_keys = set(), set()
        for tr in self.store.traces.values():
            for s in tr.spans:
                span_keys.update(s.attributes)
                res_keys.update(s.resource)
        if v2:
            body: dict[str, Any] = {"scopes": [{"name": "resource", "tags": sorted(res_keys)},
                                               {"name": "span", "tags": sorted(span_keys)},
                                               {"name": "intrinsic", "tags": ["duration", "kind", "name",
                                                                              "status"]}], "metrics": {}}
        else:
            body = {"tagNames": sorted(span_keys | res_keys), "metrics": {}}
        return 200, "application/json", orjson.dumps(body), {}

    def _tag_values(self, tag: str, v2: bool) -> tuple[int, str, bytes, dict[str, str]]:
        key = tag.split(".", 1)[1] if v2 and tag.startswith(("resource.", "span.", ".")) else tag
        values = set()
        for tr in self.store.traces.values():
            for s in tr.spans:
                val = s.attributes.get(key, s.resource.get(key))
                if val is not None:
                    values.add(str(val))
        if v2:
            body: dict[str, Any] = {"tagValues": [{"type": "string", "value": v} for v in sorted(values)],
                                    "metrics": {}}
        else:
            body = {"tagValues": sorted(values), "metrics": {}}
        return 200, "application/json", orjson.dumps(body), {}


def _go_duration(value: str | None) -> int:
    if not value:
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    return int(float(m.group(1)) * _DUR[m.group(2)]) if m else 0


class _Handler(StandInHandler):
    app: TempoServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if self.faulted(url.path):
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, ctype, body, extra = self.app.handle(url.path, parse_qs(url.query), headers)
        self.send(status, ctype, body, extra)


TempoServer.handler = _Handler
