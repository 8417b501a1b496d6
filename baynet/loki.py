"""A Grafana Loki client: log lines over Loki's HTTP API (``../shared/contracts/loki/README.md``).

* :meth:`LokiClient.query_range` -- one request: a LogQL log query over ``[start, end)`` (``end`` is
  exclusive in Loki), ``limit`` entries across all streams, ``direction``; the entries flattened and sorted;
* :meth:`LokiClient.lines` -- every entry of a window up to a budget, paged ``forward``: the next page starts
  at the last timestamp seen (``start`` is inclusive, so the boundary's entries come back and are dropped
  by their (timestamp, labels, line)); a page whose entries all share one timestamp cannot advance, and the
  limit is doubled (up to Loki's ``max_entries_limit_per_query``) before giving up;
* :meth:`LokiClient.labels`, :meth:`LokiClient.label_values`, :meth:`LokiClient.ready`.

Bodies are read as Loki writes them: values ``[ts, line]`` or ``[ts, line, {...}]`` (the third element a
flat map of structured metadata, or with ``categorize-labels`` ``{"structuredMetadata": ..., "parsed":
...}``), ``warnings`` beside or instead of ``data``; error bodies are plain text. Multi-tenant Lokis get
``X-Scope-OrgID``; a bearer token or basic auth as configured.

Errors::

    LokiError
    ├── LokiRejected     4xx (bad LogQL, a limit, no org id): the body's message; retrying returns the same
    └── LokiUnavailable  unreachable, 429 (Retry-After honoured), 5xx, after the retries
"""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from baynet.settings import Settings

MAX_ENTRIES = 5000            # Loki's default max_entries_limit_per_query
ENCODING_FLAGS = "categorize-labels"


class LokiError(Exception):
    """Any failure talking to Loki."""


class LokiRejected(LokiError):
    """Loki refused the request (4xx but 429): the query or the request is wrong."""

    def __init__(self, status: int, body: str, url: str):
        self.status, self.body = status, body
        super().__init__(f"Loki rejected {url} ({status}): {body.strip() or '(empty body)'}")


class LokiUnavailable(LokiError):
    """Loki could not answer (unreachable, overloaded, failing)."""


@dataclass(frozen=True)
class Entry:
    """One log line as Loki returned it."""

    ts_ns: int
    line: str
    labels: dict[str, str] = field(default_factory=dict)       # the stream's labels
    metadata: dict[str, str] = field(default_factory=dict)     # structured metadata and parsed labels

    def get(self, *names: str) -> str:
        """The first of ``names`` found in the metadata or the labels ("" when none is)."""
        for name in names:
            if self.metadata.get(name):
                return self.metadata[name]
            if self.labels.get(name):
                return self.labels[name]
        return ""


@dataclass
class Page:
    entries: list[Entry]
    warnings: list[str]


def parse_streams(body: Any) -> Page:
    """A ``query_range``/``query`` streams answer (or a warnings-only one) as entries, oldest first."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise LokiError(f"not a successful Loki answer: {str(body)[:200]!r}")
    warnings = [str(w) for w in body.get("warnings") or []]
    data = body.get("data") or {}
    if not data:
        return Page([], warnings)
    if data.get("resultType") != "streams":
        raise LokiError(f"expected log streams, got {data.get('resultType')!r} (a metric query?)")
    categorized = ENCODING_FLAGS in (data.get("encodingFlags") or [])
    entries = []
    for stream in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
        for value in stream.get("values") or []:
            meta: dict[str, str] = {}
            if len(value) > 2 and isinstance(value[2], dict):
                third = value[2]
                if categorized or {"structuredMetadata", "parsed"} & set(third):
                    meta = {**(third.get("parsed") or {}), **(third.get("structuredMetadata") or {})}
                else:
                    meta = dict(third)
            entries.append(Entry(int(value[0]), str(value[1]), labels, {str(k): str(v) for k, v in meta.items()}))
    entries.sort(key=lambda e: e.ts_ns)
    return Page(entries, warnings)


class LokiClient:
    """A small, retrying Loki client. Use as a context manager to close its connection pool."""

    def __init__(self, base_url: str, *, org_id: str | None = None, token: str | None = None,
                 username: str | None = None, password: str | None = None, timeout_s: float = 30.0,
                 max_retries: int = 3, verify: bool | str | ssl.SSLContext = True, backoff_s: float = 0.3):
        headers = {"X-Loki-Response-Encoding-Flags": ENCODING_FLAGS}
        if org_id:
            headers["X-Scope-OrgID"] = org_id
        if token:
            headers["Authorization"] = f"Bearer {token}"
        auth = httpx.BasicAuth(username, password or "") if username else None
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, auth=auth, timeout=timeout_s, verify=verify)
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.requests = 0
        self.warnings: list[str] = []

    @classmethod
    def from_settings(cls, settings: "Settings") -> "LokiClient":
        if not settings.loki_url:
            raise ValueError("BAYNET_LOKI_URL is not set")
        from baynet.settings import tls_context

        return cls(settings.loki_url, org_id=settings.loki_org_id,
                   token=settings.loki_token.get_secret_value() if settings.loki_token else None,
                   username=settings.loki_username,
                   password=settings.loki_password.get_secret_value() if settings.loki_password else None,
                   timeout_s=settings.loki_timeout_s, max_retries=settings.loki_max_retries,
                   verify=tls_context(settings.ca_bundle))

    def __enter__(self) -> "LokiClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()

    def _get(self, path: str, params: dict[str, Any]) -> httpx.Response:
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(5.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            try:
                self.requests += 1
                resp = self.http.get(path, params=params)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return resp
                if resp.status_code < 500 and resp.status_code != 429:
                    raise LokiRejected(resp.status_code, resp.text, f"{self.base_url}{path}")
                problem = f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(30.0, float(retry_after))
            if attempt < self.max_retries:
                time.sleep(wait)
        raise LokiUnavailable(f"Loki at {self.base_url} unavailable: {problem}")

    def push(self, streams: list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]) -> None:
        """``POST /loki/api/v1/push`` (JSON): per stream its labels and its (ts ns, line, structured
        metadata) values."""
        import orjson

        body = {"streams": [{"stream": labels, "values": [[str(ts), line, meta] if meta else [str(ts), line]
                                                           for ts, line, meta in values]}
                            for labels, values in streams]}
        resp = self.http.post("/loki/api/v1/push", content=orjson.dumps(body),
                              headers={"Content-Type": "application/json"})
        if resp.status_code != 204:
            raise LokiRejected(resp.status_code, resp.text, f"{self.base_url}/loki/api/v1/push") \
                if resp.status_code < 500 else LokiUnavailable(f"Loki push failed: {resp.status_code} {resp.text}")

    def ready(self) -> bool:
        try:
            return self.http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query_range(self, query: str, start_ns: int, end_ns: int, *, limit: int = 1000,
                    direction: str = "forward") -> Page:
        """One ``/loki/api/v1/query_range`` request for log lines in ``[start_ns, end_ns)``."""
        resp = self._get("/loki/api/v1/query_range", {"query": query, "start": str(int(start_ns)),
                                                       "end": str(int(end_ns)), "limit": str(int(limit)),
                                                       "direction": direction})
        try:
            page = parse_streams(resp.json())
        except ValueError:
            raise LokiUnavailable(f"Loki at {self.base_url} answered a body that is not JSON") from None
        self.warnings += [w for w in page.warnings if w not in self.warnings]
        return page

    def lines(self, query: str, start_ns: int, end_ns: int, *, budget: int = 10000, page_size: int = 1000
              ) -> tuple[list[Entry], bool]:
        """Every entry of ``[start_ns, end_ns)`` up to ``budget``, oldest first, paged forward without losing
        or doubling the entries at a page boundary. Returns the entries and whether the budget cut them."""
        out: list[Entry] = []
        start, limit = int(start_ns), min(page_size, MAX_ENTRIES)
        boundary: set[tuple[str, str]] = set()  # (labels, line) of the entries already taken at ``start``
        while True:
            page = self.query_range(query, start, end_ns, limit=limit)
            fresh = [e for e in page.entries
                     if not (e.ts_ns == start and (_stream_key(e.labels), e.line) in boundary)]
            room = budget - len(out)
            if len(fresh) > room:
                return out + fresh[:room], True
            out += fresh
            if len(page.entries) < limit:
                return out, False  # Loki gave everything that was left
            last = page.entries[-1].ts_ns
            if not fresh:  # the whole page sits at ``start``, all of it taken: ask for more at once
                if limit >= MAX_ENTRIES:
                    raise LokiError(f"more than {MAX_ENTRIES} lines share the timestamp {start} ns: Loki "
                                    "cannot page past them")
                limit = min(MAX_ENTRIES, limit * 2)
                continue
            if last != start:
                boundary = set()
            boundary |= {(_stream_key(e.labels), e.line) for e in page.entries if e.ts_ns == last}
            start = last

    def labels(self, start_ns: int | None = None, end_ns: int | None = None) -> list[str]:
        return self._list("/loki/api/v1/labels", start_ns, end_ns)

    def label_values(self, name: str, start_ns: int | None = None, end_ns: int | None = None,
                     query: str | None = None) -> list[str]:
        return self._list(f"/loki/api/v1/label/{name}/values", start_ns, end_ns, query)

    def _list(self, path: str, start_ns: int | None, end_ns: int | None, query: str | None = None) -> list[str]:
        params = {k: str(v) for k, v in (("start", start_ns), ("end", end_ns), ("query", query)) if v is not None}
        body = self._get(path, params).json()
        if body.get("status") != "success":
            raise LokiError(f"Loki answered {path} without success: {str(body)[:200]!r}")
        return [str(v) for v in body.get("data") or []]  # "data" is omitted when nothing matches


def _stream_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
