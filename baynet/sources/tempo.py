"""Traces from Grafana Tempo: the spans through the affected service in the incident and baseline windows.

:class:`TempoTraces` is the live trace source. Retrieval is bounded by default (``traces_per_slice``):
a sample spread evenly over each slice, error traces first, every span weighted by one over its
trace's chance of being read, so rates and shares estimate all traffic. With 0 it reads every matching
trace.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd

from baynet.events import AnomalyEvent
from baynet.otlp import SearchTrace
from baynet.otlp_fast import SpanBatch
from baynet.settings import Settings, tls_context
from baynet.sources.base import Observed
from baynet.tempo.client import Cell, TempoClient, TempoUnavailable
from baynet.windows import Windows, thin_baseline


class TempoTraces:
    """The live trace source: Tempo's search and trace-by-id API (:mod:`baynet.tempo.client`)."""

    name: ClassVar[str] = "tempo"
    kind: ClassVar[str] = "traces"
    # Tempo down or slow, or no trace at all in the windows: the other sources carry the analysis. A
    # rejected request (4xx) is a fault of the configuration and fails the run.
    unavailable: ClassVar[tuple[type[BaseException], ...]] = (TempoUnavailable, LookupError, httpx.HTTPError)

    def __init__(self, settings: Settings):
        self.settings = settings

    def fetch(self, event: AnomalyEvent, windows: Windows) -> Observed:
        settings, aggregated = self.settings, False
        if settings.traces_sample_per_slice and settings.traces_per_slice and has_generator_series(settings, windows):
            # the backend aggregates all traffic: traces are only read as a sample of what they alone show
            settings = settings.model_copy(update={"traces_per_slice": settings.traces_sample_per_slice})
            aggregated = True
        spans, stats = fetch_spans(event, windows, settings)
        if aggregated:
            stats["retrieval"] += ("; a sample (BAYNET_TRACES_SAMPLE_PER_SLICE): rates, errors and latencies come "
                                   "from Tempo's metrics-generator series")
        if spans.empty:
            raise LookupError(f"Tempo at {self.settings.tempo_url} returned no traces for {event.service!r} around "
                              f"{event.timestamp.isoformat()}; nothing to analyse")
        return Observed("traces", {"spans": spans}, stats, origin=self.settings.tempo_url)


def has_generator_series(settings: Settings, windows: Windows) -> bool:
    """Whether Prometheus holds Tempo's span metrics over the windows (one instant query; False when it
    cannot tell)."""
    if not (settings.prometheus_url and settings.metrics_evidence and settings.aggregates == "auto"):
        return False
    from baynet.prometheus import PrometheusClient, PrometheusError

    try:
        with PrometheusClient.from_settings(settings) as prometheus:
            span = max(int(windows.incident[1] - windows.baseline[0]), 60)
            return bool(prometheus.query(f"count(max_over_time(traces_spanmetrics_calls_total[{span}s]))",
                                         at=windows.incident[1]))
    except (PrometheusError, httpx.HTTPError, OSError):
        return False


def tempo_client(settings: Settings) -> TempoClient:
    return TempoClient(
        settings.tempo_url, org_id=settings.tempo_org_id,
        token=settings.tempo_token.get_secret_value() if settings.tempo_token else None,
        username=settings.tempo_username,
        password=settings.tempo_password.get_secret_value() if settings.tempo_password else None,
        timeout_s=settings.tempo_timeout_s, max_retries=settings.tempo_max_retries, budget_s=settings.tempo_budget_s,
        verify=tls_context(settings.ca_bundle),
    )


ERROR_QUERY = "{ status = error }"


def fetch_spans(event: AnomalyEvent, windows: Windows, settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Traces through the affected service in the incident and baseline windows, plus error traces:
    a bounded sample (``traces_per_slice``) or, with 0, every matching trace."""
    if settings.traces_per_slice:
        return fetch_spans_bounded(event, windows, settings)
    service_q = _service_query(event.service)
    with tempo_client(settings) as tempo:
        ids: dict[str, None] = {}
        lo, hi = windows.incident
        per_minute = max(1, int((hi - lo) // 60))
        ids.update(dict.fromkeys(tempo.search_window(service_q, int(lo), int(hi) + 1,
                                                     limit=settings.tempo_search_limit, slices=per_minute)))
        ids.update(dict.fromkeys(tempo.search_window(ERROR_QUERY, int(lo), int(hi) + 1,
                                                     limit=settings.tempo_search_limit, slices=per_minute)))
        b_lo, b_hi = windows.baseline
        ids.update(dict.fromkeys(tempo.search_window(service_q, int(b_lo), int(b_hi) + 1,
                                                     limit=settings.tempo_search_limit,
                                                     slices=max(1, int((b_hi - b_lo) // 60)))))
        batch = SpanBatch()
        spans = tempo.fetch_frame(list(ids), concurrency=settings.tempo_concurrency, into=batch)
        if thin_baseline(spans["start_ns"].to_numpy() / 1e9, windows.baseline, windows.slices):
            g_lo, g_hi = windows.gap  # the baseline's traces cover less than a slice: read the gap as well
            more = [i for i in tempo.search_window(service_q, int(g_lo), int(g_hi) + 1,
                                                   limit=settings.tempo_search_limit,
                                                   slices=max(1, int((g_hi - g_lo) // 60))) if i not in ids]
            if more:
                spans = tempo.fetch_frame(more, concurrency=settings.tempo_concurrency, into=batch)
        stats = tempo.stats.as_dict()
    stats["retrieval"] = "every matching trace (BAYNET_TRACES_PER_SLICE=0)"
    return spans, stats


def fetch_spans_bounded(event: AnomalyEvent, windows: Windows, settings: Settings
                        ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """At most ``traces_per_slice`` traces per slice, however busy the mesh: in each incident slice error
    traces first (up to a quarter of the budget), then traces through the event's service; in the
    baseline, traces through the service per ``window_s`` piece. Where that was a sample, every service
    the sample went through (Tempo's ``serviceStats``) but with fewer than ``traces_per_service`` traces in
    a slice is topped up by a search for traces through it, so a rarely called service keeps enough
    spans to be judged. Each search is spread evenly over its slice (:meth:`TempoClient.sample_window`),
    and every span carries its trace's weight ``w`` (one over its chance of being read by any of the
    searches it matches), so rates and shares are estimated for all traffic, not read as drops."""
    budget, per_service = settings.traces_per_slice, settings.traces_per_service
    found: dict[str, SearchTrace] = {}
    strata: dict[str, list[Cell]] = {}  # "error" or a service name -> the cells of its searches
    pieces = [(lo, hi, True) for lo, hi in windows.slices] + [
        (lo, hi, False) for lo, hi in windows.baseline_pieces(settings.window_s)]
    with tempo_client(settings) as tempo:
        def first_pass(piece: tuple[float, float, bool]) -> list[tuple[str, list[SearchTrace], list[Cell]]]:
            lo, hi, incident = piece
            out = []
            if incident:
                out.append(("error", *tempo.sample_window(ERROR_QUERY, lo, hi, max(1, budget // 4))))
            taken = len(out[0][1]) if out else 0
            out.append((event.service, *tempo.sample_window(_service_query(event.service), lo, hi,
                                                             max(1, budget - taken))))
            return out

        def top_up(job: tuple[str, float, float, int]) -> list[tuple[str, list[SearchTrace], list[Cell]]]:
            service, lo, hi, need = job
            return [(service, *tempo.sample_window(_service_query(service), lo, hi, need))]

        def run(fn: Any, jobs: list[Any]) -> list[list[tuple[str, list[SearchTrace], list[Cell]]]]:
            if not jobs:
                return []
            with ThreadPoolExecutor(max_workers=min(len(jobs), settings.tempo_concurrency)) as pool:
                return list(pool.map(fn, jobs))

        first = run(first_pass, pieces)
        # The baseline's traces cover less than one slice (the data begin late): read the gap before the
        # first slice as well, which the evidence then takes into its baseline (baseline_into_gap).
        starts = np.array([t.start_ns / 1e9 for results in first[len(windows.slices):] for _, ts, _ in results
                           for t in ts])
        if thin_baseline(starts, windows.baseline, windows.slices):
            gap = [(lo, hi, False) for lo, hi in windows.gap_pieces(settings.window_s)]
            pieces += gap
            first += run(first_pass, gap)
        jobs = []
        if per_service:
            for (lo, hi, _), results in zip(pieces, first):
                if all(c.read >= c.matched for _, _, cells in results for c in cells):
                    continue  # read whole: nothing to top up
                counts: dict[str, int] = {}
                for trace in {t.trace_id: t for _, ts, _ in results for t in ts}.values():
                    for svc in trace.service_stats:
                        counts[svc] = counts.get(svc, 0) + 1
                jobs += [(svc, lo, hi, per_service - n) for svc, n in sorted(counts.items())
                         if n < per_service and svc != event.service]
        for results in first + run(top_up, jobs):
            for key, traces, cells in results:
                found.update((t.trace_id, t) for t in traces)
                strata.setdefault(key, []).extend(cells)
        spans = tempo.fetch_frame(list(found), concurrency=settings.tempo_concurrency)
        spans["w"] = trace_weights(spans, strata)
        spans.attrs["covered"] = covered(strata, frozenset(strata) - {"error", event.service})
        main = strata.get(event.service, [])
        matched = sum(c.matched for c in main)
        read = sum(c.read for c in main)
        tempo.stats.traces_estimated = round(matched + sum(c.matched for c in strata.get("error", [])), 1)
        tempo.stats.sampled_fraction = round(read / matched, 4) if matched else 1.0
        stats = tempo.stats.as_dict()
    stats["retrieval"] = (f"at most {budget} traces per slice and {per_service} per service "
                          f"(BAYNET_TRACES_PER_SLICE, BAYNET_TRACES_PER_SERVICE): read {stats['traces_fetched']} "
                          f"of about {stats['traces_estimated']:.0f} matching; {len(jobs)} top-up searches")
    return spans, stats


def covered(strata: dict[str, list[Cell]], seen_only: frozenset[str] = frozenset()) -> list[tuple[float, float]]:
    """Where the searches found data, merged, as ``(start, end)`` unix seconds. A sub-window covers up to its
    newest trace's start (Tempo returns the newest first); from its oldest one's where it was read whole,
    else from its own start (a cut sub-window's oldest data are unseen) -- except in the strata named in
    ``seen_only`` (the top-ups, which search again where the first pass already found data), which cover
    only what they returned. Stretches closer than the shorter of their sub-windows join: a sample's few
    traces per sub-window leave gaps between them that are traffic, not missing data."""
    parts = sorted((float(c.start) if c.cut and key not in seen_only else c.first, c.last + 1.0, c.end - c.start)
                   for key, cells in strata.items() for c in cells
                   if c.matched > 0 and c.first is not None and c.last is not None)
    merged: list[tuple[float, float, float]] = []
    for lo, hi, width in parts:
        if merged and lo <= merged[-1][1] + min(width, merged[-1][2]):
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi), width)
        else:
            merged.append((lo, hi, width))
    return [(lo, hi) for lo, hi, _ in merged]


def _service_query(service: str) -> str:
    return f'{{ resource.service.name = "{service}" }}'


def trace_weights(spans: pd.DataFrame, strata: dict[str, list[Cell]]) -> np.ndarray:
    """Per span, one over its trace's chance of being read. A stratum is the error search (key
    ``"error"``: traces with a failed span) or the searches for traces through one service (key: the
    service); a trace that matches several was read unless every one missed it:
    ``p = 1 - prod(1 - p_stratum)``, each ``p_stratum`` the read share of the sub-window its start falls
    in. 1.0 where nothing was sampled."""
    if spans.empty:
        return np.ones(0)
    codes = pd.factorize(spans["trace_id"])[0]
    n = int(codes.max()) + 1
    start = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(start, codes, spans["start_ns"].to_numpy())
    t = start / 1e9
    service = spans["service"].astype(str).to_numpy()
    failed = spans["failed"].to_numpy(dtype=bool)
    miss = np.ones(n)
    for key, cells in strata.items():
        if not cells:
            continue
        matches = np.zeros(n, dtype=bool)
        np.logical_or.at(matches, codes, failed if key == "error" else service == key)
        cells = sorted(cells, key=lambda c: c.start)
        lo = np.array([c.start for c in cells], dtype=float)
        hi = np.array([c.end for c in cells], dtype=float)
        frac = np.array([c.fraction for c in cells])
        i = np.clip(np.searchsorted(lo, t, side="right") - 1, 0, len(cells) - 1)
        inside = matches & (t >= lo[i]) & (t < hi[i] + 1)
        miss[inside] *= 1 - frac[i][inside]
    p = 1 - miss
    per_trace = np.where(p > 0, 1 / np.where(p > 0, p, 1), 1.0)
    return per_trace[codes]
