"""The six steps of an incident analysis as plain functions (the Prefect tasks are thin wrappers).

parse the anomaly -> query Tempo -> diff the topology -> re-estimate the DBN -> infer -> store.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from baynet.artifacts import COMPLETE, ArtifactStore, make_store, structure_html
from baynet.dbn import O_STATES, DBNModel
from baynet.events import AnomalyEvent
from baynet.evidence.fuse import states_from_evidence
from baynet.evidence.traces import span_keys
from baynet.otlp import SearchTrace
from baynet.settings import Settings
from baynet.state import CAS_ATTEMPTS, ModelLog, SnapshotStore, apply_update, update_record
from baynet.tempo.client import Cell, TempoClient
from baynet.topology import (
    PrometheusClient,
    Topology,
    TopologyDiff,
    diff_topology,
    topology_from_edges,
    topology_from_kiali,
)

log = logging.getLogger(__name__)


@dataclass
class Windows:
    """Baseline and incident slices in unix seconds; the last slice ends at the anomaly time."""

    baseline: tuple[float, float]
    slices: list[tuple[float, float]]

    @classmethod
    def around(cls, at: float, settings: Settings) -> "Windows":
        w, n = settings.window_s, settings.slices
        first = at - n * w
        slices = [(first + i * w, first + (i + 1) * w) for i in range(n)]
        b_end = first - settings.baseline_gap_s
        return cls((b_end - settings.baseline_s, b_end), slices)

    @property
    def incident(self) -> tuple[float, float]:
        return self.slices[0][0], self.slices[-1][1]


# --- step 2: traces ------------------------------------------------------------------------------

def tempo_client(settings: Settings) -> TempoClient:
    return TempoClient(
        settings.tempo_url, org_id=settings.tempo_org_id,
        token=settings.tempo_token.get_secret_value() if settings.tempo_token else None,
        username=settings.tempo_username,
        password=settings.tempo_password.get_secret_value() if settings.tempo_password else None,
        timeout_s=settings.tempo_timeout_s, max_retries=settings.tempo_max_retries, budget_s=settings.tempo_budget_s,
        verify=str(settings.ca_bundle) if settings.ca_bundle else True,
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
        spans = tempo.fetch_frame(list(ids), concurrency=settings.tempo_concurrency)
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
    b_lo, b_hi = windows.baseline
    pieces = [(lo, hi, True) for lo, hi in windows.slices] + [
        (lo, min(b_hi, lo + settings.window_s), False) for lo in range(int(b_lo), int(b_hi), settings.window_s)]
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


def fetch_metrics(windows: Windows, settings: Settings) -> tuple[pd.DataFrame | None, pd.DataFrame | None,
                                                                  dict[str, Any]]:
    """Signals and resource rows (:mod:`baynet.evidence.metrics`) over the baseline and incident windows,
    from Prometheus through the metric map; ``(None, None, stats)`` when metrics are not configured."""
    if not (settings.prometheus_url and settings.metrics_evidence):
        return None, None, {"metrics": "not configured (BAYNET_PROMETHEUS_URL unset or metrics evidence off)"}
    frames, signals, resources = fetch_families(windows, settings)
    edges = edge_signals(windows, settings, quantiles=(50,), counts=False)
    if edges is not None:  # the network gap per call edge: the caller's view minus the callee's
        edges = edges[edges["source"] != ""]
        signals = edges if signals is None else pd.concat([signals, edges], ignore_index=True)
    stats = {"metrics": f"{len(frames)} services from {settings.prometheus_url}",
             "metric_rows": {"signals": 0 if signals is None else len(signals),
                             "resources": 0 if resources is None else len(resources),
                             "edges": 0 if edges is None else int(edges[["source", "destination"]]
                                                                  .drop_duplicates().shape[0])}}
    return signals, resources, stats


def fetch_families(windows: Windows, settings: Settings
                   ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None, pd.DataFrame | None]:
    """The metric map's per-service series over the baseline and incident windows, and the signal and
    resource rows made of them (:func:`baynet.evidence.metrics.family_rows`), without the per-edge ones."""
    from baynet.detector.series import fetch_series, load_metric_map
    from baynet.evidence.metrics import family_rows

    step = settings.metrics_step_s
    frames = fetch_series(settings.prometheus_url, load_metric_map(settings.detector_metric_map),
                          windows.baseline[0], windows.incident[1], step, namespace=settings.namespace)
    signals, resources = family_rows(frames, step)
    return frames, signals, resources


_EDGE_KEYS = "source_canonical_service, destination_canonical_service, reporter, destination_version"
SIGNAL_COLUMNS = ["time", "source", "destination", "window_s", "requests", "error_ratio", "latency_ms_p50",
                  "latency_ms_p90", "latency_ms_p99", "destination_version", "reporter"]


def edge_queries(namespace: str, window: str, quantiles: tuple[int, ...] = (50, 90, 99),
                 counts: bool = True) -> dict[str, str]:
    """PromQL for Istio's golden signals per call edge, reporter and destination version."""
    sel = f'destination_workload_namespace="{namespace}"'
    out = {}
    if counts:
        out["rate"] = f"sum by ({_EDGE_KEYS}) (rate(istio_requests_total{{{sel}}}[{window}]))"
        out["errors"] = f'sum by ({_EDGE_KEYS}) (rate(istio_requests_total{{{sel},response_code=~"5.."}}[{window}]))'
    for q in quantiles:
        out[f"p{q}"] = (f"histogram_quantile({q / 100}, sum by ({_EDGE_KEYS}, le) "
                        f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{window}])))")
    return out


def edge_signals(windows: Windows, settings: Settings, *, quantiles: tuple[int, ...] = (50, 90, 99),
                 counts: bool = True) -> pd.DataFrame | None:
    """Signal rows (:mod:`baynet.bundles.format`) per call edge, reporter and destination version, from
    Istio's series over the baseline and incident windows at the metric step: request counts and error
    ratios (``counts``) and latency quantiles. A source Istio labels ``unknown`` (outside the mesh) is
    blank. None when Prometheus is not configured or no series answers."""
    if not (settings.prometheus_url and settings.metrics_evidence):
        return None
    import httpx

    from baynet.detector.series import query_range

    step = settings.metrics_step_s
    window = f"{max(step * 2, 30)}s"
    series: dict[tuple, dict[str, dict[float, float]]] = {}
    with httpx.Client(timeout=30.0) as client:
        for name, query in edge_queries(settings.namespace, window, quantiles, counts).items():
            for item in query_range(client, settings.prometheus_url, query, windows.baseline[0],
                                    windows.incident[1], step):
                m = item.get("metric") or {}
                key = (m.get("source_canonical_service", ""), m.get("destination_canonical_service", ""),
                       m.get("reporter", ""), m.get("destination_version", ""))
                if key[1]:
                    series.setdefault(key, {})[name] = {float(t): float(v) for t, v in item.get("values") or []}
    rows = []
    for (src, dst, reporter, version), cols in sorted(series.items()):
        times = sorted(cols.get("rate", {}) if counts else set().union(*cols.values()))
        for t in times:
            row = {"time": t, "source": "" if src in ("", "unknown") else src, "destination": dst,
                   "window_s": float(step), "requests": np.nan, "error_ratio": np.nan,
                   "destination_version": "" if version in ("", "unknown") else version, "reporter": reporter}
            if counts:
                r = cols["rate"][t]
                err = cols.get("errors", {}).get(t, 0.0)
                row.update(requests=r * step, error_ratio=(err / r) if r > 0 else np.nan)
            for q in (50, 90, 99):
                v = cols.get(f"p{q}", {}).get(t)
                row[f"latency_ms_p{q}"] = v if v is not None and np.isfinite(v) else np.nan
            rows.append(row)
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=SIGNAL_COLUMNS)
    if counts:
        frame = frame[np.isfinite(frame["requests"])]
    else:
        frame = frame[frame[[f"latency_ms_p{q}" for q in quantiles]].notna().any(axis=1)]
    return frame.reset_index(drop=True) if len(frame) else None


def fetch_versions(windows: Windows, settings: Settings) -> pd.DataFrame | None:
    """Requests and error ratio per service and ``destination_version`` (Istio's label for the workload
    version serving the calls), at the metric step: the rows the change evidence reads
    (:mod:`baynet.evidence.changes`), summed over callers from :func:`edge_signals`. None when no series
    carries a version."""
    edges = edge_signals(windows, settings, quantiles=())
    if edges is None:
        return None
    edges = edges[(edges["reporter"] == "destination") & (edges["destination_version"] != "")]
    if edges.empty:
        return None
    rows = edges.assign(errors=edges["requests"] * edges["error_ratio"].fillna(0.0)).groupby(
        ["time", "destination", "destination_version"], as_index=False)[["requests", "errors"]].sum()
    ratio = (rows["errors"] / rows["requests"]).where(rows["requests"] > 0, 0.0)
    return rows.assign(source="", window_s=float(settings.metrics_step_s), error_ratio=ratio,
                       reporter="destination").drop(columns="errors")


# --- step 3: topology ----------------------------------------------------------------------------

def read_topology(settings: Settings, at: float | None = None) -> Topology | None:
    """The live graph from Prometheus or a Kiali body, whichever is configured; ``None`` if neither."""
    if settings.prometheus_url:
        prom = PrometheusClient(settings.prometheus_url,
                                verify=str(settings.ca_bundle) if settings.ca_bundle else True)
        try:
            return prom.topology(settings.namespace, settings.topology_window_s, at)
        finally:
            prom.close()
    if settings.kiali_graph_file:
        return topology_from_kiali(json.loads(Path(settings.kiali_graph_file).read_text()), settings.namespace)
    return None


def trace_topology(edges: pd.DataFrame, namespace: str, window_s: float) -> Topology:
    rows = [(r.caller, r.callee, r.calls / max(window_s, 1e-9), 0.0) for r in edges.itertuples()]
    return topology_from_edges(rows, namespace, "traces")


def snapshot_age(settings: Settings, now: float | None = None) -> str:
    """Which stored snapshot stands in for the live graph, and how old it is (for the run's report)."""
    previous = SnapshotStore(make_store(settings)).latest(settings.namespace)
    if previous is None:
        return "no stored snapshot either: call edges from traces only"
    taken = datetime.fromisoformat(previous.taken_at)
    age = (now if now is not None else time.time()) - taken.timestamp()
    return f"last stored snapshot used, taken at {previous.taken_at} ({age:.0f} s old)"


def diff_and_snapshot(live: Topology, snapshots: SnapshotStore, *, store_changes: bool = True
                      ) -> tuple[TopologyDiff, bool]:
    """Diff ``live`` against the last snapshot; store it when the graph changed (or, with
    ``store_changes=False``, only when there is no snapshot yet). Returns (diff, stored).

    Read, diff and store are one compare-and-swap on the latest snapshot: when another writer (a refresh
    on another host) stored one in between, read it again and diff against that."""
    for _ in range(CAS_ATTEMPTS):
        previous, etag = snapshots.latest_versioned(live.namespace)
        diff = diff_topology(previous, live)
        if not (previous is None or (store_changes and not diff.empty)):
            return diff, False
        if snapshots.save_if(live, etag) is not None:
            return diff, True
    raise RuntimeError(f"topology snapshot of {live.namespace!r}: {CAS_ATTEMPTS} writers in a row got there first")


# --- steps 4-5: model ----------------------------------------------------------------------------

def load_model(store: ArtifactStore, namespace: str) -> DBNModel:
    """The namespace's model: every recorded incident update folded in event-time order (:mod:`baynet.state`)."""
    return ModelLog(store, namespace).current()


def blast_radius(topology: Topology, service: str, hops: int, with_evidence: set[str]) -> list[str]:
    if service in topology.services:
        members = topology.downstream(service, hops)
    else:
        members = set(with_evidence)
    return sorted(members & with_evidence) or sorted(with_evidence)


def evidence_summary(evidence: pd.DataFrame, service: str) -> str:
    rows = evidence[(evidence["service"] == service) & (evidence["window"] >= 0)].sort_values("window")
    parts = []
    for r in rows.itertuples():
        bits = []
        if r.error_ratio > 0:
            bits.append(f"errors {r.error_ratio:.0%}")
        if r.slow_frac > 0:
            bits.append(f"slow {r.slow_frac:.0%}")
        if r.self_slow_frac > 0:
            bits.append(f"self-time slow {r.self_slow_frac:.0%}")
        if r.fast_frac > 0:
            bits.append(f"fast {r.fast_frac:.0%}")
        if r.shape_frac > 0:
            bits.append(f"shape changed {r.shape_frac:.0%}")
        if abs(r.rate_ratio - 1) > 0.2:
            bits.append(f"rate x{r.rate_ratio:.2f}")
        if getattr(r, "sources", "traces") != "metrics":
            bits.append(f"p95 {r.p95_ms:.0f} ms, {int(r.requests)} req")
        bits += _metric_bits(r)
        own_bad = r.own_state > 0 or getattr(r, "m_own_state", 0) > 0
        parts.append(f"w{r.window}: {O_STATES[r.state]}{'/own' if own_bad else ''}"
                     + (f" ({', '.join(bits)})" if bits else ""))
    return "; ".join(parts)


def _metric_bits(r: Any) -> list[str]:
    """What the metrics said about a service in one window (fused evidence has ``m_*`` columns)."""
    m = {k: getattr(r, f"m_{k}", None) for k in ("resource_z", "resource", "latency_z", "error_up", "rate_ratio",
                                                   "gap_edges", "canary_z")}
    if m["resource_z"] is None or pd.isna(m["resource_z"]):
        return []
    bits = []
    if m["resource_z"] >= 3:
        bits.append(f"{m['resource']} +{m['resource_z']:.1f} sd")
    if m["latency_z"] >= 3:
        bits.append(f"metric latency +{m['latency_z']:.1f} sd")
    if m["error_up"] > 0.01:
        bits.append(f"metric errors +{m['error_up']:.0%}")
    if abs(m["rate_ratio"] - 1) > 0.2:
        bits.append(f"metric rate x{m['rate_ratio']:.2f}")
    if m["gap_edges"]:
        bits.append(f"{int(m['gap_edges'])} network gap(s)")
    if m["canary_z"] and m["canary_z"] >= 3:
        bits.append(f"new version fails more than the old (+{m['canary_z']:.1f} sd)")
    return bits


@dataclass
class Analysis:
    event: AnomalyEvent
    ranking: list[dict[str, Any]]
    path: list[str]
    model: DBNModel
    evidence: pd.DataFrame
    structure_changes: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def reestimate(model: DBNModel, topology: Topology, edges: pd.DataFrame) -> dict[str, Any]:
    """Step 4: align the structure with the topology, then update parameters from span counts (the same
    fold the persistent model applies to this incident's recorded update)."""
    return apply_update(model, update_record(topology, edges))


def infer(model: DBNModel, event: AnomalyEvent, evidence: pd.DataFrame, topology: Topology,
          settings: Settings, prior_factor: dict[str, float] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Step 5: posteriors over the blast radius, ranked, and the propagation path to the event's service."""
    with_evidence = set(evidence.loc[evidence["window"] >= 0, "service"])
    members = blast_radius(topology, event.service, settings.blast_radius_hops, with_evidence)
    states, own, own_m = states_from_evidence(evidence, members)
    if event.status == "firing" and event.service in states:
        # The detector saw the anomaly on this service: that is evidence too, whatever the spans show.
        states[event.service][-1] = max(states[event.service][-1], 1)
    posteriors = model.infer(states, own, members, own_metrics=own_m, prior_factor=prior_factor)
    # Services the DBN cannot tell apart (equal posteriors) go in the order of their largest deviation
    # where the evidence has one (metrics), then by name.
    score = (evidence[evidence["window"] >= 0].groupby("service")["score"].max().to_dict()
             if "score" in evidence else {})
    order = sorted(posteriors, key=lambda s: (-round(posteriors[s], 12), -score.get(s, 0.0), s))
    # Reported to 12 digits: the order above treats closer posteriors as equal, so the column must too.
    ranking = [{"rank": i + 1, "service": s, "posterior": round(posteriors[s], 12),
                "prior": model.prior(s, (prior_factor or {}).get(s, 1.0)),
                "evidence": evidence_summary(evidence, s),
                "why": model.explain(s, states, own, own_m, (prior_factor or {}).get(s, 1.0))}
               for i, s in enumerate(order)]
    path = model.propagation_path(order[0], event.service, states) if order else []
    return ranking, path


def rank_from_traces(event: AnomalyEvent, settings: Settings) -> tuple[pd.DataFrame, dict[str, Any],
                                                                     pd.DataFrame, list[dict[str, Any]]]:
    """Steps 2-5 from Tempo alone, in memory, on a fresh model (benchmarks and retrieval tests): the span
    frame, the fetch stats, the evidence and the ranking."""
    from baynet.evidence.traces import build_evidence

    windows = Windows.around(event.unix, settings)
    spans, stats = fetch_spans(event, windows, settings)
    evidence, edges = build_evidence(spans, windows.baseline, windows.slices)
    topology = trace_topology(edges, settings.namespace, windows.incident[1] - windows.incident[0])
    model = DBNModel()
    reestimate(model, topology, edges)
    ranking, _ = infer(model, event, evidence, topology, settings)
    return spans, stats, evidence, ranking


def exemplars(spans: pd.DataFrame | None, ranking: list[dict[str, Any]], windows: Windows,
              template: str | None = None, *, top: int = 5, per_kind: int = 2) -> None:
    """Add to the first ``top`` services of ``ranking`` a few trace ids that show their problem in the
    incident slices -- failed (the service's own spans that failed), slowest (its longest spans), unusual
    shape (a span of the service whose calls, as a multiset of callee operations, no baseline span of the
    same operation made) -- as ``exemplars``: ``[{"trace_id", "why", "url"}]``, the url from ``template``
    (``{trace_id}`` filled in, http(s) only) or None."""
    if spans is None or spans.empty:
        return
    lo, hi = windows.incident
    start = spans["start_ns"].to_numpy() / 1e9
    inc = spans[(start >= lo) & (start < hi)]
    if inc.empty:
        return
    shapes = _call_shapes(spans)
    b_lo, b_hi = windows.baseline
    in_base = (start >= b_lo) & (start < b_hi)
    dur = inc["end_ns"] - inc["start_ns"]
    usable = template if template and template.lower().startswith(("http://", "https://")) and \
        "{trace_id}" in template else None
    for row in ranking[:top]:
        mine = inc[inc["service"].astype(str) == row["service"]]
        if mine.empty:
            continue
        picked: list[tuple[str, str]] = []
        failed = mine[mine["failed"].to_numpy(dtype=bool)]
        picked += [(str(t), "failed") for t in dict.fromkeys(failed["trace_id"].astype(str))][:per_kind]
        slow = mine.assign(d=dur.loc[mine.index]).sort_values("d", ascending=False)
        failed_ids = {t for t, _ in picked}
        slow_ids = [str(t) for t in dict.fromkeys(slow["trace_id"].astype(str)) if t not in failed_ids]
        picked += [(t, f"slowest ({slow.loc[slow['trace_id'].astype(str) == t, 'd'].iloc[0] / 1e6:.0f} ms)")
                   for t in slow_ids[:per_kind]]
        picked += _unusual_shapes(spans, shapes, in_base, mine.index, {t for t, _ in picked}, per_kind)
        row["exemplars"] = [{"trace_id": t, "why": why, "url": usable.replace("{trace_id}", t) if usable else None}
                            for t, why in picked]


def _call_shapes(spans: pd.DataFrame) -> pd.DataFrame:
    """Per span: its operation, how many calls it made, and a signature of the multiset of the operations it
    called (a sum of one random 64-bit code per callee operation, so equal multisets sign alike)."""
    op = spans["service"].astype(str) + " " + spans["name"].astype(str)
    codes, labels = pd.factorize(op)
    salt = np.random.default_rng(0).integers(1, 2**62, size=max(1, len(labels)), dtype=np.int64)
    key, parent = span_keys(spans)
    has_parent = spans["parent_span_id"].astype(str).to_numpy() != ""
    sums = pd.DataFrame({"parent": parent[has_parent], "salt": salt[codes][has_parent]}).groupby("parent")[
        "salt"].agg(["sum", "size"])
    sig = pd.Series(key).map(sums["sum"]).fillna(0).astype(np.int64).to_numpy()
    calls = pd.Series(key).map(sums["size"]).fillna(0).astype(np.int64).to_numpy()
    return pd.DataFrame({"op": codes, "sig": sig, "calls": calls}, index=spans.index)


def _unusual_shapes(spans: pd.DataFrame, shapes: pd.DataFrame, in_base: np.ndarray, mine: pd.Index,
                    taken: set[str], per_kind: int) -> list[tuple[str, str]]:
    """Traces where one of ``mine`` (the service's incident spans) made calls its operation never made in
    the baseline, the operations with more baseline spans first (a shape unseen among many is the surer
    sign); nothing for an operation the baseline saw fewer than 20 times."""
    base = shapes[in_base]
    seen = set(zip(base["op"], base["sig"]))
    n_base = base["op"].value_counts()
    usual = base.groupby("op")["calls"].agg(lambda c: int(c.mode().iloc[0]))
    cand = shapes.loc[mine]
    odd = cand[[(o, g) not in seen for o, g in zip(cand["op"], cand["sig"])]]
    odd = odd.assign(n=odd["op"].map(n_base).fillna(0))
    odd = odd[odd["n"] >= 20].sort_values("n", ascending=False, kind="stable")
    out: list[tuple[str, str]] = []
    for idx, row in odd.iterrows():
        trace = str(spans.at[idx, "trace_id"])
        if trace in taken or trace in dict(out):
            continue
        out.append((trace, f"unusual shape ({int(row['calls'])} calls, usually {usual[row['op']]})"))
        if len(out) >= per_kind:
            break
    return out


# --- step 6: artifacts ---------------------------------------------------------------------------

def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def store_artifacts(store: ArtifactStore, event: AnomalyEvent, ranking: list[dict[str, Any]], path: list[str],
                    evidence: pd.DataFrame, topology: Topology, diff: TopologyDiff, model: DBNModel,
                    fetch_stats: dict[str, Any], run_url: str | None = None, run_id: str | None = None,
                    model_update: pd.DataFrame | None = None) -> dict[str, str]:
    """Write every artifact of one incident, then its model update (``model_update``: the per-edge span
    counts, when the model was re-estimated from them), the completion marker last. Returns name -> location."""
    base = f"incidents/{event.id}"
    members = {r["service"] for r in ranking}
    callees = {s: [c for c in model.callees.get(s, []) if c in members] for s in members}
    summary = {"event": json.loads(event.model_dump_json()), "ranking": ranking, "propagation_path": path,
               "fetch": fetch_stats, "model_updates": model.updates,
               "prefect": {"flow_run_id": run_id, "ui_url": run_url}, "analysed_at": time.time()}
    out = {
        "ranking.json": store.put_json(f"{base}/ranking.json", summary),
        "ranking.csv": store.put(f"{base}/ranking.csv", _csv([{k: r[k] for k in ("rank", "service", "posterior")}
                                                              for r in ranking])),
        "posteriors.csv": store.put(f"{base}/posteriors.csv", _csv([
            {k: r.get(k, "") for k in ("rank", "service", "posterior", "prior", "evidence")} for r in ranking])),
        "evidence.csv": store.put(f"{base}/evidence.csv", evidence.to_csv(index=False)),
        "topology.json": store.put_json(f"{base}/topology.json", topology.to_json()),
        "topology_diff.json": store.put_json(f"{base}/topology_diff.json", diff.to_json()),
        "topology_diff.md": store.put(f"{base}/topology_diff.md", diff.to_markdown()),
        "model.json": store.put_json(f"{base}/model.json", model.to_json()),
        "fetch_stats.json": store.put_json(f"{base}/fetch_stats.json", fetch_stats),
        "structure.html": store.put(f"{base}/structure.html", structure_html(
            f"Baynet incident {event.id}: {event.event_type} on {event.service}", ranking, callees, event.service,
            path, diff.to_json(), run_url, evidence=evidence)),
    }
    # The model persists between incidents as a log of their updates (create-only: a duplicate adds
    # nothing), folded in event-time order by the next load (baynet.state).
    if model_update is not None:
        ModelLog(store, topology.namespace).record(event, topology, model_update)
    out[COMPLETE] = store.put(f"{base}/{COMPLETE}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return out
