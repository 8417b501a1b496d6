"""HTTP client for Grafana Tempo's API (``/api/search``, ``/api/traces``, ``/api/v2/traces``, ``/ready``).

Exceptions::

    TempoError                 any failure talking to Tempo
    ├── TempoUnavailable       429 / 5xx / connection trouble that outlasted the retries (retryable)
    └── TempoRequestError      another 4xx: the request itself is wrong (never retried)
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

import pandas as pd

from baynet.otlp import (
    SearchTrace,
    Span,
    TempoParseError,
    loads,
    parse_search,
    parse_trace,
)
from baynet.otlp_fast import SpanBatch, body_status

log = logging.getLogger(__name__)


class TempoError(Exception):
    """Any failure talking to Tempo."""


class TempoUnavailable(TempoError):
    """Tempo is overloaded, failing or unreachable (429, 5xx, network); worth retrying later."""


class TempoRequestError(TempoError):
    """Tempo rejected the request (4xx other than 429); retrying will not help."""

    def __init__(self, status: int, body: str, url: str):
        super().__init__(f"Tempo answered {status} for {url}: {body.strip() or '(empty body)'}")
        self.status = status


@dataclass
class FetchStats:
    """What a retrieval saw, so a user can judge whether the evidence was complete."""

    searches: int = 0
    traces_found: int = 0
    traces_fetched: int = 0
    spans: int = 0
    not_found: int = 0
    partial: int = 0
    failed: int = 0
    retries: int = 0
    truncated: int = 0
    over_budget: int = 0
    # Bounded retrieval: traces that matched (as far as Tempo's searches tell: exact where a sub-window
    # returned fewer than its limit, else estimated from the density of the newest it returned) and the
    # share of them read; 1.0 when every matching trace was read.
    traces_estimated: float = 0.0
    sampled_fraction: float = 1.0
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every trace found was read whole and no search was cut by its limit."""
        return not (self.not_found or self.partial or self.failed or self.truncated or self.over_budget)

    def reasons(self) -> list[str]:
        """Why the evidence is partial, one short sentence per cause (empty when complete)."""
        why = [(self.not_found, "trace(s) gone between search and fetch (404: aged out or deleted)"),
               (self.partial, "trace(s) too large, read as Tempo's PARTIAL v2 body"),
               (self.failed, "trace(s) unreadable after retries (errors, timeouts or broken JSON)"),
               (self.over_budget, "trace(s) not fetched: the retrieval time budget was spent"),
               (self.truncated, "search(es) still at the limit after splitting: a sample only")]
        return [f"{n} {text}" for n, text in why if n]

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["notes"] = self.notes[:50]
        out["evidence_complete"] = self.complete
        out["partial_reasons"] = self.reasons()
        return out


@dataclass
class Cell:
    """One sub-window of a sampled search: traces read of those that matched there. ``first`` and ``last``
    are the earliest and latest start among the traces it returned (unix seconds; None without traces);
    ``cut`` says it returned only its newest (Tempo's ``limit``): nothing matched after ``last``, but its
    oldest data are unseen."""

    start: int
    end: int
    read: int
    matched: float
    first: float | None = None
    last: float | None = None
    cut: bool = False

    @property
    def fraction(self) -> float:
        return self.read / self.matched if self.matched > 0 else 1.0


def _extent(traces: list[SearchTrace]) -> tuple[float | None, float | None]:
    """The earliest and latest start among ``traces`` (unix seconds); None without traces."""
    if not traces:
        return None, None
    starts = [t.start_ns / 1e9 for t in traces]
    return min(starts), max(starts)


class TempoClient:
    """A small, retrying Tempo client. Use as a context manager to close its connection pool."""

    def __init__(self, base_url: str, *, org_id: str | None = None, token: str | None = None,
                 username: str | None = None, password: str | None = None, timeout_s: float = 30.0,
                 max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 verify: bool | str | ssl.SSLContext = True, transport: httpx.BaseTransport | None = None,
                 min_slice_s: int = 2, budget_s: float | None = None):
        headers = {"Accept": "application/json"}
        if org_id:
            headers["X-Scope-OrgID"] = org_id
        if token:
            headers["Authorization"] = f"Bearer {token}"
        auth = httpx.BasicAuth(username, password or "") if username else None
        # Requests go straight to the client's transport (``_send``): httpx's client adds ~0.2 ms of CPU per
        # request (URL merging, cookies, auth and redirect hooks) that a Tempo API read needs none of, and a
        # sample is a thousand or more of them. So no redirect is followed (a 3xx fails the read, naming
        # it) and no cookie kept. The client stays for its settings and ``/ready``.
        self._base = base_url.rstrip("/")
        self._transport = transport or httpx.HTTPTransport(verify=verify)
        self.http = httpx.Client(base_url=self._base, headers=headers, auth=auth, timeout=timeout_s,
                                 transport=self._transport)
        self._headers = dict(self.http.headers)
        if auth is not None:
            self._headers["Authorization"] = next(auth.auth_flow(httpx.Request("GET", "http://auth"))).headers[
                "Authorization"]
        self._timeout = httpx.Timeout(timeout_s).as_dict()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.min_slice_s = min_slice_s
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s if budget_s else float("inf")
        self.stats = FetchStats()

    def __enter__(self) -> "TempoClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- transport with retries ------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None, *, ok: tuple[int, ...] = (200,)
             ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = self._send(path, params)
            except httpx.TransportError as exc:
                problem: str = f"{type(exc).__name__}: {exc}"
                resp = None
            else:
                if resp.status_code in ok:
                    return resp
                if resp.status_code != 429 and resp.status_code < 500:
                    raise TempoRequestError(resp.status_code, resp.text[:500], str(resp.request.url))
                problem = f"HTTP {resp.status_code}: {resp.text[:200].strip()}"
            if attempt >= self.max_retries:
                raise TempoUnavailable(f"Tempo at {self.http.base_url} failed {attempt + 1} times on {path}; "
                                       f"last: {problem}")
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            if resp is not None and resp.status_code == 429:
                delay = max(delay, _retry_after(resp.headers.get("Retry-After")))
            if time.monotonic() + delay > self.deadline:
                raise TempoUnavailable(f"Tempo at {self.http.base_url}: no retry of {path}, the time budget of "
                                       f"{self.budget_s:.0f}s would be spent; last: {problem}")
            log.warning("Tempo %s (%s); retry %d in %.1fs", path, problem, attempt + 1, delay)
            self.stats.retries += 1
            time.sleep(delay)
            attempt += 1

    def _send(self, path: str, params: dict[str, Any] | None) -> httpx.Response:
        """One GET through the transport, its body read and the connection back in the pool."""
        request = httpx.Request("GET", f"{self._base}{path}", params=params,
                                headers=self._headers, extensions={"timeout": self._timeout})
        resp = self._transport.handle_request(request)
        try:
            resp.read()
        finally:
            resp.close()
        resp.request = request
        return resp

    # --- endpoints -------------------------------------------------------------------------------

    def ready(self) -> bool:
        try:
            return self.http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def search(self, q: str, start: int, end: int, limit: int = 20, spss: int = 3) -> list[SearchTrace]:
        """TraceQL search in ``[start, end]`` (unix seconds)."""
        params = {"q": q, "start": int(start), "end": int(end), "limit": limit, "spss": spss}
        resp = self._get("/api/search", params)
        self.stats.searches += 1
        try:
            traces, _ = parse_search(loads(resp.content))
        except TempoParseError as exc:
            raise TempoUnavailable(f"unreadable search response from Tempo: {exc}") from None
        return traces

    def trace_raw(self, trace_id: str) -> bytes | None:
        """One trace's body, undecoded; ``None`` when Tempo no longer has it (404: aged out, or gone
        between search and fetch). Falls back to v2 on 422 (too large for v1: v2 returns what fits,
        flagged PARTIAL, which is counted)."""
        resp = self._get(f"/api/traces/{trace_id}", ok=(200, 404, 422))
        if resp.status_code == 422:
            resp = self._get(f"/api/v2/traces/{trace_id}", ok=(200, 404))
        if resp.status_code == 404:
            self.stats.not_found += 1
            return None
        raw = resp.content
        if b'"PARTIAL"' in raw:
            status, message = body_status(raw)
            if status == "PARTIAL":
                self.stats.partial += 1
                self.stats.notes.append(f"trace {trace_id} partial: {message}")
        self.stats.traces_fetched += 1
        return raw

    def _trace_raw_or_skip(self, trace_id: str) -> bytes | None:
        """One trace that stays unreadable after the retries is skipped and counted, not fatal: the
        analysis goes on with partial evidence and says so. Past the time budget the rest are skipped."""
        if time.monotonic() > self.deadline:
            self.stats.over_budget += 1
            return None
        try:
            return self.trace_raw(trace_id)
        except TempoError as exc:
            self.stats.failed += 1
            self.stats.notes.append(f"trace {trace_id} skipped: {exc}")
            return None

    def trace(self, trace_id: str) -> list[Span] | None:
        """Fetch one trace as spans; ``None`` when Tempo no longer has it."""
        raw = self.trace_raw(trace_id)
        if raw is None:
            return None
        try:
            spans, _ = parse_trace(loads(raw))
        except TempoParseError as exc:
            raise TempoUnavailable(f"unreadable trace {trace_id} from Tempo: {exc}") from None
        self.stats.spans += len(spans)
        return spans

    def search_window(self, q: str, start: int, end: int, *, limit: int = 200, slices: int = 1
                      ) -> list[str]:
        """Trace ids matching ``q`` in ``[start, end]``; the window is cut in ``slices`` so that a
        busy window is not truncated to the ``limit`` most recent traces."""
        ids: dict[str, None] = {}
        step = max(1, (end - start) // max(1, slices))
        pending = [(lo, min(end, lo + step)) for lo in range(int(start), int(end), step)]
        while pending:
            lo, hi = pending.pop()
            found = self.search(q, lo, hi, limit=limit)
            if len(found) >= limit:
                if hi - lo >= 2 * self.min_slice_s:  # Tempo returned only the newest: split and page
                    mid = (lo + hi) // 2
                    pending += [(lo, mid), (mid, hi)]
                    continue
                self.stats.truncated += 1
                self.stats.notes.append(f"search {q} [{lo},{hi}] still hit the limit of {limit} traces in "
                                        f"{hi - lo}s: evidence for it is a sample")
            ids.update((t.trace_id, None) for t in found)
        self.stats.traces_found += len(ids)
        return list(ids)

    def sample_window(self, q: str, start: float, end: float, budget: int, *, sub_s: int = 10
                      ) -> tuple[list[SearchTrace], list[Cell]]:
        """At most ``budget`` trace ids matching ``q`` in ``[start, end)``: all of them when one search finds
        fewer; else a sample spread evenly over the window: the window
        is cut in sub-windows of about ``sub_s`` seconds, each asked for its share (Tempo search has
        ``limit``, and returns the most recent first). Each sub-window becomes a :class:`Cell` saying how
        many traces matched there (exact when it returned fewer than its limit, else estimated from the
        density of those it returned) and how many were read. The search entries come back as they are
        (their ``serviceStats`` say which services each trace went through)."""
        lo, hi = math.floor(start), max(math.floor(start) + 1, math.ceil(end))
        whole = self.search(q, lo, hi, limit=budget)
        if len(whole) < budget:  # fewer than the budget matched: read whole, one search
            self.stats.traces_found += len(whole)
            return whole, [Cell(lo, hi, len(whole), float(len(whole)), *_extent(whole))]
        k = max(1, min(budget // 5, (hi - lo) // max(1, sub_s)))  # at least 5 traces a sub-window
        edges = [lo + (hi - lo) * i // k for i in range(k + 1)]
        limit = max(1, -(-budget // k))
        ids: dict[str, SearchTrace] = {}
        cells = []
        seen = 0.0  # seconds of traffic seen by the searches cut by their limit
        cut_read = 0
        for a, b in zip(edges, edges[1:]):
            if b <= a:
                continue
            returned = self.search(q, a, b, limit=limit)
            found = [t for t in returned if t.trace_id not in ids]
            cells.append(Cell(a, b, len(found), float(len(found)), *_extent(returned), cut=len(returned) >= limit))
            if len(found) >= limit:  # cut: Tempo returned the newest, which cover only the end of it
                seen += max(b - max(float(a), min(t.start_ns for t in found) / 1e9), 1e-3)
                cut_read += len(found)
            ids.update((t.trace_id, t) for t in found)
        if cut_read:
            # The rate, pooled over every cut sub-window of the window (one sub-window's few newest traces
            # give a noisy density), times each cut sub-window's length: how many matched there.
            rate = max(cut_read - 1, 1) / seen  # k arrivals over T: (k - 1) / T is unbiased
            for c in cells:
                if c.read >= limit:
                    c.matched = max(float(c.read), rate * (c.end - c.start))
        self.stats.traces_found += len(ids)
        return list(ids.values()), cells

    def fetch_frame(self, trace_ids: list[str], concurrency: int = 8, into: SpanBatch | None = None
                    ) -> pd.DataFrame:
        """Fetch many traces with bounded concurrency (one pooled connection per worker) straight into
        the columnar span frame evidence is built from; 404s and unreadable traces are counted. With
        ``into``, the traces join those already in that batch, and the frame holds them all."""
        batch = into if into is not None else SpanBatch()
        before = len(batch)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for raw in pool.map(self._trace_raw_or_skip, trace_ids):
                if raw is None:
                    continue
                try:
                    batch.add(raw)
                except TempoParseError as exc:
                    self.stats.failed += 1
                    self.stats.notes.append(f"unreadable trace skipped: {exc}")
        self.stats.spans += len(batch) - before
        return batch.frame()


def _retry_after(value: str | None) -> float:
    try:
        return min(60.0, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
