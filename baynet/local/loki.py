"""A Loki-compatible log server for local use and tests (Loki itself cannot be installed here).

It keeps pushed lines in memory per tenant and answers with Loki's endpoints, body shapes and plain-text
errors (``../shared/contracts/loki/README.md``):

* ``POST /loki/api/v1/push`` -- the JSON body (``gzip``/``deflate`` content encodings too): streams of
  ``[<ns string>, <line>]`` or ``[..., {structured metadata}]``; 204; a number as timestamp, a snappy or
  protobuf body, a bad stream are 400 with Loki's text;
* ``GET|POST /loki/api/v1/query_range`` -- a LogQL log query: a stream selector (``=``, ``!=``, ``=~``,
  ``!~``) and a pipeline of line filters (``|=``, ``!=``, ``|~``, ``!~``) and label filters on labels or
  structured metadata (``| name="v"``, ``=~``, ...); ``start`` inclusive, ``end`` exclusive (ns, seconds
  of up to ten digits, float seconds or RFC3339); ``limit`` across all streams (default 100, more than 5000
  is 400); ``direction`` ``backward`` (default) or ``forward``. Compact JSON plus a newline; structured
  metadata merged into the stream labels, or with ``X-Loki-Response-Encoding-Flags: categorize-labels``
  as the third element of each value;
* ``GET /loki/api/v1/labels``, ``/loki/api/v1/label/<name>/values`` (``start``/``end``, default the last
  hour, as Loki's code does; ``data`` left out when nothing matches), ``GET /ready``;
* with ``require_org_id``, a request without ``X-Scope-OrgID`` gets 401 ``no org id``.

Faults for tests are queued with :meth:`LokiServer.inject`, as on the Tempo stand-in.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlparse

import orjson

from baynet.local.standin import TEXT, StandIn, StandInHandler

if TYPE_CHECKING:
    import pandas as pd

MAX_ENTRIES = 5000
JSON = "application/json; charset=utf-8"


class LogQLError(ValueError):
    pass


_TOKEN = re.compile(r'\s*(?:(?P<lbrace>\{)|(?P<rbrace>\})|(?P<comma>,)|(?P<pipe_op>\|=|\|~|!=|!~|=~|=|\|)'
                    r'|(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<ident>[A-Za-z_][A-Za-z0-9_.]*))')


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return orjson.loads(text)


@dataclass
class Query:
    matchers: list[tuple[str, str, str]]                 # label, op, value
    stages: list[Callable[[dict[str, str], str], bool]]  # (labels and metadata, line) -> keep


def _matcher(op: str, value: str) -> Callable[[str], bool]:
    if op == "=":
        return lambda v: v == value
    if op == "!=":
        return lambda v: v != value
    pattern = re.compile(value)
    if op == "=~":
        return lambda v: pattern.fullmatch(v) is not None
    return lambda v: pattern.fullmatch(v) is None


def parse_logql(query: str) -> Query:
    """A LogQL log query: ``{selector} | pipeline``. Raises :class:`LogQLError` with Loki's wording."""
    tokens, pos = [], 0
    while pos < len(query):
        if not query[pos:].strip():
            break
        m = _TOKEN.match(query, pos)
        if not m or m.end() == pos:
            raise LogQLError(f"parse error at line 1, col {pos + 1}: syntax error: unexpected "
                             f"{query[pos:].split()[0] if query[pos:].split() else 'end'}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind) + 1))
        pos = m.end()
    end = len(query) + 1

    def fail(at: int, got: str, want: str) -> LogQLError:
        return LogQLError(f"parse error at line 1, col {at}: syntax error: unexpected {got}, expecting {want}")

    i = 0

    def take(kind: str, want: str) -> tuple[str, str, int]:
        nonlocal i
        if i >= len(tokens):
            raise fail(end, "$end", want)
        if tokens[i][0] != kind:
            raise fail(tokens[i][2], tokens[i][1], want)
        i += 1
        return tokens[i - 1]

    take("lbrace", "{")
    matchers = []
    while True:
        name = take("ident", "IDENTIFIER")[1]
        op = take("pipe_op", "= or != or =~ or !~")
        if op[1] not in ("=", "!=", "=~", "!~"):
            raise fail(op[2], op[1], "= or != or =~ or !~")
        value = _unquote(take("str", "STRING")[1])
        try:
            _matcher(op[1], value)
            matchers.append((name, op[1], value))
        except re.error as exc:
            raise LogQLError(f"parse error : invalid regular expression {value!r}: {exc}") from None
        if i < len(tokens) and tokens[i][0] == "comma":
            i += 1
            continue
        take("rbrace", "} or ,")
        break
    if not any(op in ("=", "=~") and not _matcher(op, v)("") for _, op, v in matchers):
        raise LogQLError("parse error : queries require at least one regexp or equality matcher that does not "
                         "have an empty-compatible value. For instance, app=~\".*\" does not meet this "
                         "requirement, but app=~\".+\" will")
    stages: list[Callable[[dict[str, str], str], bool]] = []
    while i < len(tokens):
        kind, text, at = tokens[i]
        if kind != "pipe_op":
            raise fail(at, text, "|= or != or |~ or !~ or |")
        i += 1
        if text in ("|=", "!=", "|~", "!~"):
            needle = _unquote(take("str", "STRING")[1])
            if text == "|=":
                stages.append(lambda labels, line, n=needle: n in line)
            elif text == "!=":
                stages.append(lambda labels, line, n=needle: n not in line)
            else:
                try:
                    pattern = re.compile(needle)
                except re.error as exc:
                    raise LogQLError(f"parse error : invalid regular expression {needle!r}: {exc}") from None
                keep = text == "|~"
                stages.append(lambda labels, line, p=pattern, k=keep: (p.search(line) is not None) == k)
        elif text == "|":
            name = take("ident", "IDENTIFIER")[1]
            op = take("pipe_op", "= or != or =~ or !~")
            value = _unquote(take("str", "STRING")[1])
            test = _matcher(op[1], value)
            stages.append(lambda labels, line, n=name, t=test: t(labels.get(n, "")))
        else:
            raise fail(at, text, "|= or != or |~ or !~ or |")
    return Query(matchers, stages)


def parse_time(text: str | None, default_ns: int) -> int:
    """Loki's timestamps: an integer is ns, but one of up to ten digits is seconds; a value with a '.' is
    float seconds; otherwise RFC3339."""
    if text is None or text == "":
        return default_ns
    if re.fullmatch(r"-?\d+", text):
        return int(text) * 10**9 if len(text.lstrip("-")) <= 10 else int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return int(round(float(text) * 1000)) * 10**6
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise LogQLError(f"could not parse 'start' or 'end' parameter: {text!r}") from None


class LogStore:
    """Pushed lines per tenant: label set -> sorted entries (ts_ns, line, structured metadata)."""

    def __init__(self) -> None:
        self.tenants: dict[str, dict[tuple, list[tuple[int, str, dict[str, str]]]]] = {}
        self.lock = threading.Lock()

    def push(self, tenant: str, labels: dict[str, str], values: list[tuple[int, str, dict[str, str]]]) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            stream = self.tenants.setdefault(tenant, {}).setdefault(key, [])
            stream.extend(values)
            stream.sort(key=lambda v: v[0])

    @property
    def lines(self) -> int:
        return sum(len(v) for t in self.tenants.values() for v in t.values())

    def select(self, tenant: str, query: Query, start_ns: int, end_ns: int
               ) -> list[tuple[int, dict[str, str], str, dict[str, str]]]:
        out = []
        with self.lock:
            streams = list(self.tenants.get(tenant, {}).items())
        for key, entries in streams:
            labels = dict(key)
            if not all(_matcher(op, value)(labels.get(name, "")) for name, op, value in query.matchers):
                continue
            for ts, line, meta in entries:
                if start_ns <= ts < end_ns and all(stage({**labels, **meta}, line) for stage in query.stages):
                    out.append((ts, labels, line, meta))
        return out


class LokiServer(StandIn):
    """Run the stand-in in a background thread: ``with LokiServer() as loki: loki.url``."""

    thread_name = "loki-stand-in"

    def __init__(self, store: LogStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 require_org_id: bool = False):
        self.store = store or LogStore()
        self.require_org_id = require_org_id
        super().__init__(host, port)

    # --- endpoints (status, content type, body) ----------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str], body: bytes
               ) -> tuple[int, str, bytes]:
        if path == "/ready":
            return 200, TEXT, b"ready\n"
        tenant = headers.get("x-scope-orgid", "")
        if not tenant:
            if self.require_org_id:
                return 401, TEXT, b"no org id\n"
            tenant = "fake"
        try:
            if path == "/loki/api/v1/push" and method == "POST":
                return self._push(tenant, headers, body)
            if path == "/loki/api/v1/query_range":
                return self._query_range(tenant, params, headers)
            if path == "/loki/api/v1/labels":
                return self._labels(tenant, params, None)
            m = re.fullmatch(r"/loki/api/v1/label/([^/]+)/values", path)
            if m:
                return self._labels(tenant, params, m.group(1))
        except LogQLError as exc:
            return 400, TEXT, str(exc).encode()
        return 404, TEXT, b"404 page not found\n"

    def _push(self, tenant: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        encoding = headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding not in ("", "identity"):
            return 400, TEXT, f"Content-Encoding {encoding!r} not supported\n".encode()
        if not headers.get("content-type", "").startswith("application/json"):
            return 400, TEXT, b"this Loki stand-in reads JSON push bodies only (Content-Type: application/json)\n"
        try:
            data = orjson.loads(body)
            for stream in data["streams"]:
                labels = {str(k): str(v) for k, v in stream["stream"].items()}
                values = []
                for value in stream["values"]:
                    if not isinstance(value[1], str):
                        return 400, TEXT, b"loghttp.PushRequest.Streams: []*loghttp.Stream: unmarshalerDecoder: " \
                                          b"log line is not a string\n"
                    if not isinstance(value[0], str):
                        return 400, TEXT, b"loghttp.PushRequest.Streams: []*loghttp.Stream: unmarshalerDecoder: " \
                                          b"Value is not a string\n"
                    meta = value[2] if len(value) > 2 else {}
                    if not isinstance(meta, dict) or any(isinstance(v, (dict, list)) for v in meta.values()):
                        return 400, TEXT, b"structured metadata must be a flat map of strings\n"
                    values.append((int(value[0]), str(value[1]), {str(k): str(v) for k, v in meta.items()}))
                if not labels:
                    return 400, TEXT, b"error at least one label pair is required per stream\n"
                self.store.push(tenant, labels, values)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            return 400, TEXT, f"loghttp.PushRequest: {exc}\n".encode()
        return 204, TEXT, b""

    def _query_range(self, tenant: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str, bytes]:
        query = params.get("query", "")
        now = time.time_ns()
        end = parse_time(params.get("end"), now)
        start = parse_time(params.get("start"), end - 3600 * 10**9)
        limit = int(params.get("limit") or 100)
        direction = params.get("direction") or "backward"
        if direction not in ("forward", "backward"):
            raise LogQLError(f"invalid direction '{direction}'")
        if end <= start:
            raise LogQLError("end timestamp must not be before or equal to start time")
        if limit > MAX_ENTRIES:
            raise LogQLError(f"max entries limit per query exceeded, limit > max_entries_limit_per_query "
                             f"({limit} > {MAX_ENTRIES})")
        if query.lstrip().split("(")[0].strip() in ("count_over_time", "rate", "sum", "bytes_over_time"):
            raise LogQLError("this Loki stand-in answers log queries only, not metric queries")
        found = self.store.select(tenant, parse_logql(query), start, end)
        found.sort(key=lambda e: e[0], reverse=direction == "backward")
        found = found[:limit]
        categorize = "categorize-labels" in headers.get("x-loki-response-encoding-flags", "")
        streams: dict[tuple, list[list[Any]]] = {}
        for ts, labels, line, meta in found:
            if categorize:
                key = tuple(sorted(labels.items()))
                third = {"structuredMetadata": meta} if meta else {}
                streams.setdefault(key, []).append([str(ts), line, third])
            else:  # structured metadata merged into the labels: an entry may become a stream of its own
                key = tuple(sorted({**labels, **meta}.items()))
                streams.setdefault(key, []).append([str(ts), line])
        data: dict[str, Any] = {"resultType": "streams"}
        if categorize:
            data["encodingFlags"] = ["categorize-labels"]
        data["result"] = [{"stream": dict(key), "values": values} for key, values in streams.items()]
        data["stats"] = {"summary": {"totalEntriesReturned": len(found), "totalLinesProcessed": len(found)}}
        return 200, JSON, orjson.dumps({"status": "success", "data": data}) + b"\n"

    def _labels(self, tenant: str, params: dict[str, str], name: str | None) -> tuple[int, str, bytes]:
        end = parse_time(params.get("end"), time.time_ns())
        start = parse_time(params.get("start"), end - 3600 * 10**9)
        selector = parse_logql(params["query"]) if params.get("query") else None
        values: set[str] = set()
        with self.store.lock:
            streams = list(self.store.tenants.get(tenant, {}).items())
        for key, entries in streams:
            labels = dict(key)
            if not any(start <= ts < end for ts, _, _ in entries):
                continue
            if selector and not all(_matcher(op, v)(labels.get(n, "")) for n, op, v in selector.matchers):
                continue
            if name is None:
                values |= set(labels)
            elif name in labels:
                values.add(labels[name])
        body: dict[str, Any] = {"status": "success"}
        if values:
            body["data"] = sorted(values)
        return 200, JSON, orjson.dumps(body) + b"\n"


def push_logs(url: str, logs: "pd.DataFrame", namespace: str, *, org_id: str | None = None,
              batch: int = 5000) -> int:
    """Push ``logs.csv`` rows into a Loki (this stand-in or a real one) as an agent would ship them: one
    stream per service and pod, labelled ``namespace``, ``service_name``, ``pod`` (and ``level`` where the
    row has one, as Loki's level detection would); trace and span ids as structured metadata. Returns the
    lines pushed."""
    from baynet.loki import LokiClient

    streams: dict[tuple, list[tuple[int, str, dict[str, str]]]] = {}
    for r in logs.itertuples(index=False):
        labels = {"namespace": namespace, "service_name": str(r.service)}
        if getattr(r, "pod", "") and str(r.pod) != "nan":
            labels["pod"] = str(r.pod)
        level = str(getattr(r, "level", "") or "")
        if level and level != "nan":
            labels["detected_level"] = level.lower()
        meta = {k: str(getattr(r, k)) for k in ("trace_id", "span_id")
                if getattr(r, k, "") and str(getattr(r, k)) != "nan"}
        streams.setdefault(tuple(sorted(labels.items())), []).append((int(round(float(r.time) * 1e9)), str(r.line),
                                                                      meta))
    with LokiClient(url, org_id=org_id) as loki:
        for key, values in streams.items():
            for i in range(0, len(values), batch):
                loki.push([(dict(key), values[i:i + batch])])
    return int(sum(len(v) for v in streams.values()))


class _Handler(StandInHandler):
    app: LokiServer

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""  # read first: a fault's answer keeps the connection
        if self.faulted(url.path):
            return
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        if method == "POST" and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        status, ctype, out = self.app.handle(method, url.path, params, headers, body)
        self.send(status, ctype, out, {})

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")


LokiServer.handler = _Handler
