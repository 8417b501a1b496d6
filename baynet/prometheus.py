"""The one Prometheus client: instant and range queries over Prometheus' HTTP API.

Everything that reads Prometheus goes through :class:`PrometheusClient` -- the topology (``istio_requests_total``),
the metric evidence of an incident, the detector's series -- so TLS (``BAYNET_CA_BUNDLE``), the bearer
token and the retry policy are the same for all of them. Retries: connection errors, 429 and 5xx, with
exponential backoff and jitter; a 4xx (a query Prometheus refuses) is raised at once.

Errors::

    PrometheusError             anything that kept a query from answering
    ├── PrometheusRejected      4xx: the query or the request is wrong; retrying returns the same
    └── PrometheusUnavailable   unreachable, TLS failure, 5xx/429 after the retries, a body that is not JSON
"""

from __future__ import annotations

import random
import ssl
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from baynet.settings import Settings


class PrometheusError(RuntimeError):
    """A query did not answer; the message names the query and what Prometheus said."""


class PrometheusRejected(PrometheusError):
    """Prometheus refused the request (4xx): a bad query, a bad parameter, no permission."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus could not be reached or kept failing (connection, TLS, 5xx, 429)."""


class PrometheusClient:
    """Prometheus' ``/api/v1/query`` and ``/api/v1/query_range``, with one retry policy, TLS and auth."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, max_retries: int = 3,
                 verify: bool | str | ssl.SSLContext = True, token: str | None = None, backoff_s: float = 0.3):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=verify, headers=headers)
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    @classmethod
    def from_settings(cls, settings: "Settings") -> "PrometheusClient":
        if not settings.prometheus_url:
            raise ValueError("BAYNET_PROMETHEUS_URL is not set")
        from baynet.settings import tls_context

        return cls(settings.prometheus_url, timeout_s=settings.prometheus_timeout_s,
                   max_retries=settings.prometheus_max_retries,
                   verify=tls_context(settings.ca_bundle),
                   token=settings.prometheus_token.get_secret_value() if settings.prometheus_token else None)

    def __enter__(self) -> "PrometheusClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The ``result`` of an instant query (a vector or scalar answer)."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params, promql)["result"]

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """The ``result`` list of a range query (a matrix answer)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}s"}
        data = self._get("/api/v1/query_range", params, promql)
        if data.get("resultType") != "matrix":
            raise PrometheusRejected(f"expected a matrix from {promql!r}, got {data.get('resultType')!r}")
        return data.get("result") or []

    def _get(self, path: str, params: dict[str, Any], promql: str) -> dict[str, Any]:
        problem = ""
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.http.get(path, params=params)
            except httpx.TransportError as exc:  # connection refused, TLS verification, timeouts
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError:
                        raise PrometheusUnavailable(f"Prometheus at {self.base_url} answered {promql!r} with a "
                                                    "body that is not JSON") from None
                    if body.get("status") != "success":
                        raise PrometheusRejected(f"Prometheus refused {promql!r}: {body.get('errorType', '')} "
                                                 f"{body.get('error', '')}".strip())
                    return body.get("data") or {}
                if resp.status_code < 500 and resp.status_code != 429:
                    try:
                        detail = resp.json().get("error", resp.text)
                    except ValueError:
                        detail = resp.text
                    raise PrometheusRejected(f"Prometheus rejected the query {promql!r} ({resp.status_code}): "
                                             f"{detail}")
                problem = f"HTTP {resp.status_code}"
            if attempt < self.max_retries:
                time.sleep(min(5.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2))
        raise PrometheusUnavailable(f"Prometheus at {self.base_url} unreachable: {problem}")


def series_by(prometheus: PrometheusClient, queries: dict[str, str], keys: tuple[str, ...], start: float, end: float,
              step_s: float, *, required: tuple[str, ...] | None = None
              ) -> dict[tuple[str, ...], dict[str, dict[float, float]]]:
    """Range queries by name, their series gathered per label set: ``{(label values in keys order): {query
    name: {unix time: value}}}``. A series missing one of the ``required`` labels (default: all ``keys``) is
    left out; a missing label that is not required reads as ``""``."""
    need = keys if required is None else required
    out: dict[tuple[str, ...], dict[str, dict[float, float]]] = {}
    for name, query in queries.items():
        for item in prometheus.query_range(query, start, end, step_s):
            m = item.get("metric") or {}
            if not all(m.get(k) for k in need):
                continue
            key = tuple(m.get(k, "") for k in keys)
            out.setdefault(key, {})[name] = {float(t): float(v) for t, v in item.get("values") or []}
    return out
