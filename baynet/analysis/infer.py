"""Steps 4 and 5: re-estimate the DBN from the graph and the span counts, then rank the services by their
posterior probability of being the root cause, with the evidence behind each in words."""

from __future__ import annotations

from typing import Any

import pandas as pd

from baynet.artifacts import ArtifactStore
from baynet.dbn import O_STATES, DBNModel
from baynet.events import AnomalyEvent
from baynet.evidence.fuse import states_from_evidence
from baynet.settings import Settings
from baynet.state import ModelLog, apply_update, update_record
from baynet.topology import Topology
from baynet.windows import Windows


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
        bits += _metric_bits(r) + _log_bits(r)
        own_bad = r.own_state > 0 or getattr(r, "m_own_state", 0) > 0 or getattr(r, "l_own_state", 0) > 0
        parts.append(f"w{r.window}: {O_STATES[r.state]}{'/own' if own_bad else ''}"
                     + (f" ({', '.join(bits)})" if bits else ""))
    return "; ".join(parts)


def _log_bits(r: Any) -> list[str]:
    """What the logs said about a service in one window (fused evidence has ``l_*`` columns)."""
    level = getattr(r, "l_own_state", None)
    if level is None or pd.isna(level) or level <= 0:
        return []
    top = str(getattr(r, "l_top", "") or "")
    return [f"logs: {top[:120]}" if top else f"logs {int(r.l_bad_lines)} WARN/ERROR"]


def _metric_bits(r: Any) -> list[str]:
    """What the metrics said about a service in one window (fused evidence has ``m_*`` columns)."""
    m = {k: getattr(r, f"m_{k}", None) for k in ("resource_z", "resource", "latency_z", "error_up", "rate_ratio",
                                                   "gap_edges", "canary_z", "canary", "calls")}
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
        bits.append(f"{m['canary'] or 'new version does worse than the old'} (+{m['canary_z']:.1f} sd)")
    if isinstance(m["calls"], str) and m["calls"]:
        bits.append(m["calls"])
    return bits


def reestimate(model: DBNModel, topology: Topology, edges: pd.DataFrame, log_templates: list[str] | None = None
               ) -> dict[str, Any]:
    """Step 4: align the structure with the topology, then update parameters from span counts and the log
    vocabulary (the same fold the persistent model applies to this incident's recorded update)."""
    return apply_update(model, update_record(topology, edges, log_templates))


def quiet_beside_changes(evidence: pd.DataFrame, service: str, members: list[str],
                         prior_factor: dict[str, float] | None) -> bool:
    """Whether the alert on ``service`` is left out of the model's observations: every source's evidence
    on the service itself is quiet in every incident slice (its propagating and own-work states all ok or
    unobserved) and another service of the blast radius changed recently (``prior_factor``, from
    :mod:`baynet.evidence.changes`).

    The model takes each "ok" it observes as exact, so it cannot hold a change whose effect stays under
    the evidence's thresholds and still reaches the alerting service. Applied to a quiet alerting service,
    the alert is then explained only by that service's own fault, and it outranks every recently changed
    one (the generated hard rollouts: the front end, never changed and never the cause, first in 5 of
    100). Without changes the alert stays evidence: on Online Boutique a quiet exception fault in the
    frontend is found through it alone."""
    changed = [s for s in (prior_factor or {}) if s != service and s in members]
    rows = evidence[(evidence["service"] == service) & (evidence["window"] >= 0)]
    if not changed or rows.empty:
        return False
    levels = [c for c in ("state", "own_state", "m_own_state", "l_own_state") if c in rows]
    return float(rows[levels].fillna(0).to_numpy(dtype=float).max()) <= 0


def call_graph_unknown(model: DBNModel, members: list[str]) -> bool:
    """Whether no call edge is known between the ranked services (no traces, no topology, no series that
    name their caller): every "no callee bad" would then be a guess. The propagating state (O, what the
    service's callers experience) is left out of the model, the alert with it: it can tell a root cause
    from a service that only passed the fault on through the callees alone. Own-work evidence (resources,
    logs, versions), the change prior and, between services the model cannot tell apart, the largest
    deviation decide. Measured on every development mesh with the data shape ``latency_only`` (each
    service's mean latency and nothing else): the front end, never the cause, had come first in 57 of the
    100 hard rollouts (README, data shapes)."""
    return len(members) > 1 and not any(model.callees.get(s) for s in members)


def alert_slice(event: AnomalyEvent, settings: Settings) -> int:
    """The incident slice that holds the alert: the last one, unless the window runs on after it
    (``BAYNET_SETTLE_S``, a later look)."""
    slices = Windows.around(event.unix, settings).slices
    return next((i for i, (lo, hi) in enumerate(slices) if event.unix <= hi), len(slices) - 1)


def infer(model: DBNModel, event: AnomalyEvent, evidence: pd.DataFrame, topology: Topology,
          settings: Settings, prior_factor: dict[str, float] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Step 5: posteriors over the blast radius, ranked, and the propagation path to the event's service."""
    with_evidence = set(evidence.loc[evidence["window"] >= 0, "service"])
    members = blast_radius(topology, event.service, settings.blast_radius_hops, with_evidence)
    levels = states_from_evidence(evidence, members)
    states = levels.states
    at = alert_slice(event, settings)
    if call_graph_unknown(model, members):
        # What a service's callers experience (O) tells a root cause from a victim only through its callees:
        # with none known, the alerting service -- whose symptom nothing could then explain -- came first.
        states = {s: [-1] * len(v) for s, v in states.items()}
    elif event.status == "firing" and event.service in states \
            and not quiet_beside_changes(evidence, event.service, members, prior_factor):
        # The detector saw the anomaly on this service, in the slice that holds the alert: that is evidence
        # too, whatever the spans show.
        k = min(at, len(states[event.service]) - 1)
        states[event.service][k] = max(states[event.service][k], 1)
    # a fault from the alert's slice on (DBNModel.infer): where the window runs on past the alert, the state
    # at its end alone took a cause that showed at the alert and faded after for one that recovered
    posteriors = model.infer(states, levels.own, members, own_metrics=levels.metrics, prior_factor=prior_factor,
                             own_logs=levels.logs, at=at)
    # Services the DBN cannot tell apart (equal posteriors) go in the order of their largest deviation
    # where the evidence has one (metrics), then by name.
    score = (evidence[evidence["window"] >= 0].groupby("service")["score"].max().to_dict()
             if "score" in evidence else {})
    order = sorted(posteriors, key=lambda s: (-round(posteriors[s], 12), -score.get(s, 0.0), s))
    # Reported to 12 digits: the order above treats closer posteriors as equal, so the column must too.
    ranking = [{"rank": i + 1, "service": s, "posterior": round(posteriors[s], 12),
                "prior": model.prior(s, (prior_factor or {}).get(s, 1.0)),
                "evidence": evidence_summary(evidence, s),
                "why": model.explain(s, states, levels.own, levels.metrics, (prior_factor or {}).get(s, 1.0),
                                     own_logs=levels.logs)}
               for i, s in enumerate(order)]
    path = model.propagation_path(order[0], event.service, states) if order else []
    return ranking, path
