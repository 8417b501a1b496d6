"""The dynamic Bayesian network over the services of a mesh.

Per service ``s`` and slice ``t`` three variables:

* ``R[s,t]`` — latent root-cause indicator (no/yes); persists across slices: ``R[s,t-1] -> R[s,t]``;
* ``O[s,t]`` — observed propagating state (ok/degraded/failing) from errors, latency and traffic of the
  spans that enter ``s``; parents ``R[s,t]``, ``O[c,t]`` for every callee ``c`` of ``s`` (faults travel
  from callee to caller) and ``O[s,t-1]``;
* ``S[s,t]`` — observed own-work state (ok/anomalous/severe) from self time, trace shape, the service's
  own errors and network gaps on its call edges; parent ``R[s,t]`` only.

``O``'s conditional distribution is a *noisy-MAX*: each active cause (the service's own fault, a
degraded or failing callee, its own previous state, a leak) independently produces a level, and ``O`` is
the largest. A noisy-MAX is exactly decomposable (the max is associative), so a service with many callees
never needs a CPT with ``3**k`` columns: the fast path evaluates the likelihood in ``O(k)``, and the pgmpy
export divorces parents into groups of at most :data:`GROUP` (intermediate ``M`` nodes) so its tables stay
small. Parameters are Beta/Dirichlet counts with a forgetting factor: propagation strengths from the
per-edge span counts (a bad child span with a bad caller span = propagated); root-cause priors are Beta
counts too, held at their prior until an operator confirms a root cause (:meth:`DBNModel.confirm`, which
moves them and, a little, the strengths on the confirmed fault's way up, by a stated bound): the model's
own posteriors are never fed back.

Inference: when every ``O`` and ``S`` of the blast radius is observed — always the case for the services
Baynet models, because silence is itself evidence (rate drop) — the root-cause chains of different
services are independent given the evidence, and the exact posterior is a two-state forward-backward
pass per service (:meth:`DBNModel.infer`). :meth:`DBNModel.infer_pgmpy` answers the same query (or one
with missing evidence) by variable elimination on the unrolled pgmpy network; tests hold the two equal.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

O_STATES = ["ok", "degraded", "failing"]
S_STATES = ["ok", "anomalous", "severe"]
R_STATES = ["no", "yes"]
GROUP = 3  # callees per intermediate node in the pgmpy export (parent divorcing)
MAX_TEMPLATES = 5000  # log templates the model keeps
MAX_CHANGE_HISTORY = 500  # confirmed incidents the learnt change prior rests on (the newest)
MODEL_VERSION = 2


@dataclass
class Params:
    """Global parameters of the noisy-MAX model; documented defaults, updated from data."""

    onset: float = 0.05                      # P(R[t]=yes | R[t-1]=no)
    persist: float = 0.95                    # P(R[t]=yes | R[t-1]=yes)
    leak: tuple[float, float, float] = (0.94, 0.05, 0.01)     # O level with no active cause
    # O level produced by the service's own fault. Often none: a network fault shows on the callers'
    # client spans and a CPU fault in self time (S), not always in the service's entry latency.
    root_effect: tuple[float, float, float] = (0.40, 0.30, 0.30)
    self_persist: float = 0.3                # a bad O[t-1] reproduces its level with this probability
    own_given_root: tuple[float, float, float] = (0.2, 0.3, 0.5)     # P(S | R=yes)
    own_given_healthy: tuple[float, float, float] = (0.9, 0.08, 0.02)  # P(S | R=no): false alarms
    # P(Sm | R): the metrics' own-work view (resource saturation, network gaps). Many faults (a code
    # exception, a wrong answer) leave CPU and memory as they were, so "ok" there is weak evidence of health;
    # a saturated resource on a healthy service is rarer than an odd span.
    metrics_given_root: tuple[float, float, float] = (0.6, 0.15, 0.25)
    metrics_given_healthy: tuple[float, float, float] = (0.97, 0.025, 0.005)
    # P(Sl | R): the logs' own-work view (new WARN/ERROR templates, vanished steps within spans). Many faults
    # (CPU, a slow network) change no log line, so "ok" is weak evidence of health, as for the metrics.
    # A healthy service's levels follow from the tests behind them (anomalous at p < 1e-3, severe at
    # p < 1e-6, Bonferroni-corrected), widened tenfold for a baseline that is never the same traffic.
    logs_given_root: tuple[float, float, float] = (0.5, 0.2, 0.3)
    logs_given_healthy: tuple[float, float, float] = (0.99, 0.009, 0.001)
    edge_prior: tuple[float, float] = (3.0, 2.0)   # Beta prior of a propagation strength
    root_prior: tuple[float, float] = (0.5, 9.5)   # Beta prior of P(R=yes) (5 %)
    forgetting: float = 0.9                  # old counts are multiplied by this at each update
    # Propagation counts one confirmation adds per caller on the confirmed fault's way (split over its
    # edges there): small against span counts, and what bounds its effect (DBNModel.confirmation_bound).
    confirm_edge_weight: float = 0.1


@dataclass
class DBNModel:
    """Structure (services, call edges) and parameters (counts) of the DBN; JSON-serialisable."""

    services: list[str] = field(default_factory=list)
    callees: dict[str, list[str]] = field(default_factory=dict)
    edge_counts: dict[str, list[float]] = field(default_factory=dict)   # "caller->callee": [a, b]
    root_counts: dict[str, list[float]] = field(default_factory=dict)   # service: [a, b]
    params: Params = field(default_factory=Params)
    updates: int = 0
    # The mesh's log vocabulary (templates mined from lines without a code location), carried from one
    # incident to the next so the same line gets the same key.
    log_templates: list[str] = field(default_factory=list)
    # Confirmed incidents' changes (root, members, changed members' ages at the alert), newest last, for
    # the learnt change prior (baynet.evidence.changes.learn_change_params).
    change_history: list[dict[str, Any]] = field(default_factory=list)

    # --- structure -------------------------------------------------------------------------------

    @staticmethod
    def edge_key(caller: str, callee: str) -> str:
        return f"{caller}->{callee}"

    def update_structure(self, services: set[str], edges: set[tuple[str, str]]) -> dict[str, Any]:
        """Make the structure match a topology. New services/edges get priors; removed ones go;
        unchanged families keep their learned counts. Returns what changed."""
        before_services, before_edges = set(self.services), self.edge_set()
        services = set(services) | {s for e in edges for s in e}
        self.services = sorted(services)
        callees: dict[str, list[str]] = {s: [] for s in self.services}
        for a, c in edges:
            if a != c:
                callees[a].append(c)
        self.callees = {s: sorted(cs) for s, cs in callees.items()}
        keep = {self.edge_key(a, c) for (a, c) in edges if a != c}
        self.edge_counts = {k: v for k, v in self.edge_counts.items() if k in keep}
        for k in keep:
            self.edge_counts.setdefault(k, list(self.params.edge_prior))
        self.root_counts = {s: self.root_counts.get(s, list(self.params.root_prior)) for s in self.services}
        return {"services_added": sorted(services - before_services),
                "services_removed": sorted(before_services - services),
                "edges_added": sorted(self.edge_set() - before_edges),
                "edges_removed": sorted(before_edges - self.edge_set())}

    def edge_set(self) -> set[tuple[str, str]]:
        return {(s, c) for s, cs in self.callees.items() for c in cs}

    def strength(self, caller: str, callee: str) -> float:
        a, b = self.edge_counts.get(self.edge_key(caller, callee), self.params.edge_prior)
        return a / (a + b)

    def prior(self, service: str, factor: float = 1.0) -> float:
        """P(R = yes) at the first slice; ``factor`` multiplies its odds."""
        a, b = self.root_counts.get(service, self.params.root_prior)
        odds = a / b * factor
        return odds / (1 + odds)

    # --- parameters ------------------------------------------------------------------------------

    def learn_templates(self, templates: list[str]) -> None:
        """Add log templates to the vocabulary (a set: the order incidents arrive in does not matter)."""
        if templates:
            self.log_templates = sorted(set(self.log_templates) | set(templates))[:MAX_TEMPLATES]

    def update_parameters(self, edge_stats: list[dict[str, Any]]) -> None:
        """Bayesian update of propagation strengths from per-edge span counts (forgetting old counts).

        Each item: ``caller``, ``callee``, ``child_bad`` (bad callee spans) and ``both_bad`` (of those, how
        many came with a bad caller span). A strength is the chance that a bad callee makes its caller bad.
        """
        gamma = self.params.forgetting
        a0, b0 = self.params.edge_prior
        for row in edge_stats:
            key = self.edge_key(row["caller"], row["callee"])
            if key not in self.edge_counts:
                continue
            child_bad, both = float(row["child_bad"]), float(row["both_bad"])
            if child_bad <= 0:
                continue
            a, b = self.edge_counts[key]
            # Forget towards the prior, not towards zero, so a quiet edge returns to its default.
            a = a0 + gamma * (a - a0) + both
            b = b0 + gamma * (b - b0) + max(0.0, child_bad - both)
            self.edge_counts[key] = [a, b]
        self.updates += 1

    def confirm(self, root_cause: str, members: list[str], propagation: list[dict[str, Any]] | None = None,
                changed: dict[str, float] | None = None) -> None:
        """Learn from one confirmed outcome (an operator said which service was the root cause of an
        incident whose blast radius was ``members``). Nothing else moves these counts: the model's own
        posteriors are never fed back.

        * Root-cause priors: Beta counts of ``P(R = yes)`` with forgetting towards the prior, as the
          propagation strengths have. The confirmed service gains one "yes"; the other members share one
          "no" (``1/len(members)`` each).
        * Propagation strengths: ``propagation`` (:func:`confirmed_propagation`) says, for each edge on the
          confirmed fault's way up, the share of the slices with a bad callee in which the caller was bad
          too. Each caller there gets ``Params.confirm_edge_weight`` counts, split over its edges on the
          way: ``share`` of them "propagated", the rest "not". Edges off the way learn nothing.
        * Changes: ``changed`` (the incident's changed services and their ages at the alert) joins
          :attr:`change_history`, from which the change prior is learnt.

        The bound on one confirmation, right or wrong (:meth:`confirmation_bound`): a service's prior odds
        grow at most ``(a0 + 1) / a0 / forgetting`` and shrink at most to ``forgetting * b0 / (b0 + 1)``.
        A service's likelihood in one slice is affine in each strength of its own edges (noisy-MAX), so
        adding ``w`` counts to an edge whose counts are at least the prior's ``(a0, b0)`` scales it by at
        most ``1 + w / min(a0, b0)`` either way; over ``T`` slices and both values of ``R`` the service's
        odds move at most ``exp(2 T w / min(a0, b0))``. The posterior odds of any two services therefore
        move against each other by at most the product of these; two services whose odds differ by more
        cannot swap."""
        if changed:
            self.change_history = [*self.change_history, {
                "root": root_cause, "members": list(dict.fromkeys(members)),
                "changed": {s: float(a) for s, a in changed.items() if s in set(members)}}][-MAX_CHANGE_HISTORY:]
        gamma = self.params.forgetting
        a0, b0 = self.params.root_prior
        others = [s for s in dict.fromkeys(members) if s != root_cause]
        for s in [root_cause, *others]:
            a, b = self.root_counts.get(s, [a0, b0])
            yes = 1.0 if s == root_cause else 0.0
            no = 0.0 if s == root_cause else 1.0 / max(1, len(others))
            self.root_counts[s] = [a0 + gamma * (a - a0) + yes, b0 + gamma * (b - b0) + no]
        known = [e for e in propagation or [] if self.edge_key(e["caller"], e["callee"]) in self.edge_counts]
        per_caller: dict[str, int] = {}
        for e in known:
            per_caller[e["caller"]] = per_caller.get(e["caller"], 0) + 1
        for e in known:
            w = self.params.confirm_edge_weight / per_caller[e["caller"]]
            share = min(1.0, max(0.0, float(e["share"])))
            key = self.edge_key(e["caller"], e["callee"])
            a, b = self.edge_counts[key]
            self.edge_counts[key] = [a + w * share, b + w * (1 - share)]

    def confirmation_bound(self, slices: int = 3) -> float:
        """The largest factor by which one confirmation can move the posterior odds of one service
        against another's in an incident of ``slices`` slices (see :meth:`confirm`)."""
        gamma = self.params.forgetting
        a0, b0 = self.params.root_prior
        up = (a0 + 1) / a0 / gamma
        down = gamma * b0 / (b0 + 1)
        edges = math.exp(2 * slices * self.params.confirm_edge_weight / min(self.params.edge_prior))
        return up / down * edges ** 2

    # --- likelihoods -----------------------------------------------------------------------------

    def _cause_cdfs(self, service: str, r: int, callee_states: dict[str, int], prev: int | None
                    ) -> list[np.ndarray]:
        """P(contribution <= level) for each active cause of O[service]."""
        p = self.params
        cdfs = [np.cumsum(p.leak)]
        if r:
            cdfs.append(np.cumsum(p.root_effect))
        for c in self.callees.get(service, []):
            level = callee_states.get(c, 0)
            if level:
                cdfs.append(_level_cdf(level, self.strength(service, c)))
        if prev:
            cdfs.append(_level_cdf(prev, p.self_persist))
        return cdfs

    def o_likelihood(self, service: str, level: int, r: int, callee_states: dict[str, int],
                     prev: int | None) -> float:
        """P(O[service] = level | R = r, callee states, previous own state) under noisy-MAX."""
        cdf = np.prod(self._cause_cdfs(service, r, callee_states, prev), axis=0)
        return float(cdf[level] - (cdf[level - 1] if level else 0.0))

    def s_likelihood(self, own: int, r: int) -> float:
        return (self.params.own_given_root if r else self.params.own_given_healthy)[own]

    def sm_likelihood(self, own: int, r: int) -> float:
        return (self.params.metrics_given_root if r else self.params.metrics_given_healthy)[own]

    def sl_likelihood(self, own: int, r: int) -> float:
        return (self.params.logs_given_root if r else self.params.logs_given_healthy)[own]

    # --- inference -------------------------------------------------------------------------------

    def infer(self, states: dict[str, list[int]], own: dict[str, list[int]],
              services: list[str] | None = None, own_metrics: dict[str, list[int]] | None = None,
              prior_factor: dict[str, float] | None = None, own_logs: dict[str, list[int]] | None = None,
              at: int | None = None) -> dict[str, float]:
        """Exact ``P(R[s, t] = yes for some slice t >= at | all O and S)`` for each service (``at``: the slice
        that holds the alert, default the last, where it is ``P(R[s, last] = yes | all O and S)``), by a
        forward pass per service.

        A root cause is what was at fault when the alert fired, or after: where the window runs on past
        the alert (a later look, ``BAYNET_SETTLE_S``), the state at the window's end alone took a cause
        whose evidence showed at the alert and faded after for one that recovered, and preferred a blip in
        the last slice (``sock-shop-hard-39`` at one minute: the bad version's slowdown, x1.4 at the alert,
        second to a database's one-slice CPU rise two minutes later). Slices before the alert still count
        as evidence, through the persistence of ``R``: a fault that ended before the alert is someone
        else's incident (Train-Ticket's faults follow each other closely).

        ``states[s][t]`` and ``own[s][t]`` are the observed O and S levels per slice. Every service in
        ``services`` (default: all with evidence) must have both; callees without evidence count as ok.
        An own level below 0 means "not observed" (no spans of the service: its S is left out); so does an
        O level below 0 (no call graph known: :func:`baynet.analysis.infer.call_graph_unknown`).
        ``own_metrics[s][t]``, when given, is a second observation of the own-work state from metrics
        (node ``Sm``, its own CPT: ``Params.metrics_given_root``/``metrics_given_healthy``): two sources that both see the service's own fault
        multiply their evidence; a level below 0 is not observed. ``own_logs`` is a third, from the logs
        (node ``Sl``, CPT ``Params.logs_given_root``/``logs_given_healthy``).
        """
        services = services or sorted(states)
        p = self.params
        trans = np.array([[1 - p.onset, p.onset], [1 - p.persist, p.persist]])
        out = {}
        for s in services:
            o_seq, s_seq = states[s], own[s]
            m_seq = (own_metrics or {}).get(s)
            l_seq = (own_logs or {}).get(s)
            n = len(o_seq)
            emis = np.empty((n, 2))
            for t in range(n):
                callee_states = {c: states[c][t] for c in self.callees.get(s, []) if c in states}
                prev = o_seq[t - 1] if t else None
                for r in (0, 1):
                    emis[t, r] = self.o_likelihood(s, o_seq[t], r, callee_states, prev) if o_seq[t] >= 0 else 1.0
                    if s_seq[t] >= 0:
                        emis[t, r] *= self.s_likelihood(s_seq[t], r)
                    if m_seq is not None and m_seq[t] >= 0:
                        emis[t, r] *= self.sm_likelihood(m_seq[t], r)
                    if l_seq is not None and l_seq[t] >= 0:
                        emis[t, r] *= self.sl_likelihood(l_seq[t], r)
            pi = self.prior(s, (prior_factor or {}).get(s, 1.0))
            k = _first_slice(at, n)
            alpha = np.array([1 - pi, pi]) * emis[0]
            alpha /= alpha.sum() or 1.0
            never = alpha[0]  # P(R = no in every slice from ``at`` on, the evidence so far)
            for t in range(1, n):
                alpha = (alpha @ trans) * emis[t]
                never = alpha[0] if t == k else never * (1 - p.onset) * emis[t, 0]
                c = alpha.sum() or 1.0
                alpha /= c
                never /= c
            out[s] = float(1.0 - never)
        return out

    # --- pgmpy -----------------------------------------------------------------------------------

    def _o_cpd_values(self, service: str, callee_order: list[str], with_prev: bool,
                      with_r: bool = True) -> np.ndarray:
        """CPT columns of O[service] over (R, prev?, callees...) in pgmpy's evidence order."""
        axes: list[list[int]] = [[0, 1]] if with_r else []
        if with_prev:
            axes.append([0, 1, 2])
        axes += [[0, 1, 2]] * len(callee_order)
        cols = []
        for combo in itertools.product(*axes):
            r = combo[0] if with_r else 0
            rest = combo[1:] if with_r else combo
            prev = rest[0] if with_prev else None
            cs = dict(zip(callee_order, rest[1:] if with_prev else rest))
            cols.append([self.o_likelihood(service, lvl, r, cs, prev) for lvl in range(3)])
        return np.array(cols).T

    def to_pgmpy(self, slices: int, services: list[str] | None = None, metrics: bool = False,
                 prior_factor: dict[str, float] | None = None, logs: bool = False):
        """Unroll ``slices`` slices into a pgmpy ``DiscreteBayesianNetwork`` (parents divorced in groups);
        with ``metrics``, each slice also has the metrics' own-work observation ``Sm`` (parent ``R``), with
        ``logs`` the logs' (``Sl``)."""
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        services = services or self.services
        inside = set(services)
        p = self.params
        bn = DiscreteBayesianNetwork()
        cpds = []
        for t in range(slices):
            for s in services:
                r, o, own = f"R|{s}|{t}", f"O|{s}|{t}", f"S|{s}|{t}"
                bn.add_nodes_from([r, o, own])
                if t == 0:
                    pi = self.prior(s, (prior_factor or {}).get(s, 1.0))
                    cpds.append(TabularCPD(r, 2, [[1 - pi], [pi]], state_names={r: R_STATES}))
                else:
                    rp = f"R|{s}|{t - 1}"
                    bn.add_edge(rp, r)
                    cpds.append(TabularCPD(r, 2, [[1 - p.onset, 1 - p.persist], [p.onset, p.persist]],
                                           evidence=[rp], evidence_card=[2],
                                           state_names={r: R_STATES, rp: R_STATES}))
                for node, (healthy, root) in [(own, (p.own_given_healthy, p.own_given_root))] + (
                        [(f"Sm|{s}|{t}", (p.metrics_given_healthy, p.metrics_given_root))] if metrics else []) + (
                        [(f"Sl|{s}|{t}", (p.logs_given_healthy, p.logs_given_root))] if logs else []):
                    bn.add_edge(r, node)
                    cpds.append(TabularCPD(node, 3, [[healthy[i], root[i]] for i in range(3)],
                                           evidence=[r], evidence_card=[2], state_names={node: S_STATES, r: R_STATES}))
                callees = [c for c in self.callees.get(s, []) if c in inside]
                groups = [callees[i:i + GROUP] for i in range(0, len(callees), GROUP)]
                with_prev = t > 0 and p.self_persist > 0  # a zero-weight edge is left out
                parents = [r] + ([f"O|{s}|{t - 1}"] if with_prev else [])
                direct = groups[0] if len(groups) == 1 else []
                evidence = parents + [f"O|{c}|{t}" for c in direct]
                if len(groups) > 1:
                    # Parent divorcing: M nodes hold the max of each group's (noisy) contributions; O is
                    # then the noisy-MAX of its own causes and the deterministic max of the M nodes.
                    m_nodes = []
                    for gi, group in enumerate(groups):
                        m = f"M|{s}|{gi}|{t}"
                        m_nodes.append(m)
                        for c in group:
                            bn.add_edge(f"O|{c}|{t}", m)
                        values = self._group_cpd_values(s, group)
                        cpds.append(TabularCPD(m, 3, values, evidence=[f"O|{c}|{t}" for c in group],
                                               evidence_card=[3] * len(group),
                                               state_names={m: O_STATES, **{f"O|{c}|{t}": O_STATES for c in group}}))
                    evidence += m_nodes
                    values = self._o_given_groups(s, with_prev, len(m_nodes))
                else:
                    values = self._o_cpd_values(s, direct, with_prev)
                for e in evidence:
                    bn.add_edge(e, o)
                cards = [2] + [3] * (len(evidence) - 1)
                names = {o: O_STATES, r: R_STATES, **{e: O_STATES for e in evidence[1:]}}
                cpds.append(TabularCPD(o, 3, values, evidence=evidence, evidence_card=cards, state_names=names))
        bn.add_cpds(*cpds)
        return bn

    def to_pgmpy_dbn(self, services: list[str] | None = None):
        """The same model as pgmpy's 2-slice ``DynamicBayesianNetwork`` (for ``DBNInference``)."""
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DynamicBayesianNetwork

        unrolled = self.to_pgmpy(2, services)

        def node(name: str) -> tuple[str, int]:
            base, t = name.rsplit("|", 1)
            return base, int(t)

        dbn = DynamicBayesianNetwork()
        edges = []
        for a, b in unrolled.edges():
            (na, ta), (nb, tb) = node(a), node(b)
            if ta == 0:  # slice-0 intra edges and 0 -> 1 inter edges define the template
                edges.append(((na, ta), (nb, tb)))
        dbn.add_edges_from(edges)
        cpds = []
        for cpd in unrolled.get_cpds():
            name, t = node(cpd.variable)
            parents = cpd.scope()[1:]
            cards = [cpd.cardinality[i] for i in range(1, len(cpd.scope()))]
            cpds.append(TabularCPD(
                (name, t), cpd.variable_card, cpd.get_values(),
                evidence=[node(p) for p in parents] or None, evidence_card=cards or None,
                state_names={node(v): cpd.state_names[v] for v in cpd.scope()}))
        dbn.add_cpds(*cpds)
        dbn.initialize_initial_state()
        return dbn

    def _group_cpd_values(self, service: str, group: list[str]) -> np.ndarray:
        cols = []
        for combo in itertools.product([0, 1, 2], repeat=len(group)):
            cdf = np.ones(3)
            for c, level in zip(group, combo):
                if level:
                    cdf = cdf * _level_cdf(level, self.strength(service, c))
            cols.append([cdf[0], cdf[1] - cdf[0], cdf[2] - cdf[1]])
        return np.array(cols).T

    def _o_given_groups(self, service: str, with_prev: bool, n_groups: int) -> np.ndarray:
        p = self.params
        axes = [[0, 1]] + ([[0, 1, 2]] if with_prev else []) + [[0, 1, 2]] * n_groups
        cols = []
        for combo in itertools.product(*axes):
            r, rest = combo[0], combo[1:]
            prev = rest[0] if with_prev else None
            gmax = max(rest[1:] if with_prev else rest, default=0)
            cdfs = [np.cumsum(p.leak)] + ([np.cumsum(p.root_effect)] if r else [])
            if prev:
                cdfs.append(_level_cdf(prev, p.self_persist))
            cdf = np.prod(cdfs, axis=0) * (np.arange(3) >= gmax)
            cols.append([cdf[0], cdf[1] - cdf[0], cdf[2] - cdf[1]])
        return np.array(cols).T

    def infer_pgmpy(self, states: dict[str, list[int]], own: dict[str, list[int]],
                    services: list[str] | None = None, own_metrics: dict[str, list[int]] | None = None,
                    prior_factor: dict[str, float] | None = None, own_logs: dict[str, list[int]] | None = None,
                    at: int | None = None) -> dict[str, float]:
        """Same query as :meth:`infer` by variable elimination on the unrolled pgmpy network.
        Services without evidence in ``states``/``own`` are left unobserved (marginalised), as are
        levels below 0 (O's too)."""
        from pgmpy.inference import VariableElimination

        services = services or sorted(states)
        slices = max(len(v) for v in states.values())
        bn = self.to_pgmpy(slices, services, metrics=own_metrics is not None, prior_factor=prior_factor,
                           logs=own_logs is not None)
        evidence = {}
        for s in services:
            for t in range(slices):
                if s in states and states[s][t] >= 0:
                    evidence[f"O|{s}|{t}"] = O_STATES[states[s][t]]
                if s in own and own[s][t] >= 0:
                    evidence[f"S|{s}|{t}"] = S_STATES[own[s][t]]
                if own_metrics and s in own_metrics and own_metrics[s][t] >= 0:
                    evidence[f"Sm|{s}|{t}"] = S_STATES[own_metrics[s][t]]
                if own_logs and s in own_logs and own_logs[s][t] >= 0:
                    evidence[f"Sl|{s}|{t}"] = S_STATES[own_logs[s][t]]
        ve = VariableElimination(bn)
        first = _first_slice(at, slices)
        out = {}
        for s in services:
            names = [f"R|{s}|{t}" for t in range(first, slices)]
            q = ve.query(names, evidence=evidence, joint=True, show_progress=False)
            out[s] = 1.0 - float(q.get_value(**{v: "no" for v in names}))
        return out

    # --- paths -----------------------------------------------------------------------------------

    def explain(self, service: str, states: dict[str, list[int]], own: dict[str, list[int]],
                own_metrics: dict[str, list[int]] | None = None, prior_factor: float = 1.0, top: int = 3,
                own_logs: dict[str, list[int]] | None = None) -> str:
        """The posterior's main contributions in words: per observation (the service's own work from
        traces, from metrics, its propagating state given its callees'), the slices where it was not ok and
        its likelihood ratio over them, ``P(obs | root cause) / P(obs | healthy)``; strongest first."""
        parts: list[tuple[float, str]] = []

        def slices(ts: list[int]) -> str:
            return f"slice {ts[0]}" if len(ts) == 1 else f"slices {ts[0]}-{ts[-1]}" if ts == list(
                range(ts[0], ts[-1] + 1)) else "slices " + ", ".join(map(str, ts))

        for name, seq, like, names in (("own work (traces)", own.get(service), self.s_likelihood, S_STATES),
                                       ("own work (metrics)", (own_metrics or {}).get(service), self.sm_likelihood,
                                        S_STATES),
                                       ("own work (logs)", (own_logs or {}).get(service), self.sl_likelihood, S_STATES)):
            if not seq:
                continue
            bad = [t for t, v in enumerate(seq) if v > 0]
            ratio = math.prod(like(v, 1) / like(v, 0) for v in seq if v >= 0)
            if bad or ratio < 0.5:
                worst = names[max(seq)] if bad else "ok"
                parts.append((ratio, f"{name} {worst} in {slices(bad)}" if bad else f"{name} ok throughout"))
        o_seq = states.get(service, [])
        ratio, bad = 1.0, []
        for t, level in enumerate(o_seq):
            if level < 0:  # not observed (no call graph known)
                continue
            callee_states = {c: states[c][t] for c in self.callees.get(service, []) if c in states}
            prev = o_seq[t - 1] if t else None
            ratio *= self.o_likelihood(service, level, 1, callee_states, prev) / max(
                self.o_likelihood(service, level, 0, callee_states, prev), 1e-300)
            if level > 0:
                bad.append(t)
        if bad:
            explained = [c for c in self.callees.get(service, []) if c in states and any(states[c][t] for t in bad)]
            why = f"; callees bad too: {', '.join(explained[:3])}" if explained else "; no callee bad"
            parts.append((ratio, f"{O_STATES[max(o_seq)]} as its callers see it in {slices(bad)}{why}"))
        if prior_factor != 1.0:
            parts.append((prior_factor, "recent change (prior)"))
        parts.sort(key=lambda p: -abs(math.log(max(p[0], 1e-300))))
        return "; ".join(f"{text} x{ratio:.3g}" for ratio, text in parts[:top]) or "no observation moved it"

    def propagation_path(self, root: str, anomalous: str, states: dict[str, list[int]]) -> list[str]:
        """Most probable path by which a fault at ``root`` reaches ``anomalous``: the caller chain from
        ``root`` up to ``anomalous`` maximising the product of propagation strengths, with services
        that looked fine in the last slice penalised. Returned root first."""
        if root == anomalous:
            return [root]
        best: dict[str, float] = {anomalous: 0.0}
        prev: dict[str, str] = {}
        heap = [(0.0, anomalous)]
        while heap:
            cost, s = heapq.heappop(heap)
            if s == root:
                break
            if cost > best.get(s, math.inf):
                continue
            for c in self.callees.get(s, []):
                level = states.get(c, [0])[-1]
                w = -math.log(max(1e-9, self.strength(s, c))) + (0.0 if level else 3.0)
                if cost + w < best.get(c, math.inf):
                    best[c] = cost + w
                    prev[c] = s
                    heapq.heappush(heap, (cost + w, c))
        if root not in prev:
            return [root]
        path = [root]
        while path[-1] != anomalous:
            path.append(prev[path[-1]])
        return path

    # --- persistence -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": MODEL_VERSION, "services": self.services, "callees": self.callees,
                "edge_counts": self.edge_counts, "root_counts": self.root_counts,
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.params).items()},
                "updates": self.updates, "log_templates": self.log_templates, "change_history": self.change_history}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DBNModel":
        if data.get("version") != MODEL_VERSION:
            raise ValueError(f"model version {data.get('version')!r} is not {MODEL_VERSION}; rebuild the model")
        params = Params(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["params"].items()})
        return cls(services=data["services"], callees=data["callees"], edge_counts=data["edge_counts"],
                   root_counts=data["root_counts"], params=params, updates=data.get("updates", 0),
                   log_templates=list(data.get("log_templates", [])),
                   change_history=list(data.get("change_history", [])))


def confirmed_propagation(root_cause: str, states: dict[str, list[int]], callees: dict[str, list[str]]
                          ) -> list[dict[str, Any]]:
    """What one incident says about propagation once its root cause is confirmed: walking up from the
    root cause through callers, for each edge ``caller -> callee`` whose callee was bad (propagating state
    above ok) in some slices, the ``share`` of those slices in which the caller was bad too. A caller that
    was bad carries the walk on. Only services with states take part."""
    callers: dict[str, list[str]] = {}
    for caller, cs in callees.items():
        for c in cs:
            callers.setdefault(c, []).append(caller)
    out, seen, todo = [], {root_cause}, [root_cause]
    while todo:
        callee = todo.pop(0)
        bad = [t for t, level in enumerate(states.get(callee, [])) if level > 0]
        if not bad:
            continue
        for caller in sorted(callers.get(callee, [])):
            if caller not in states or caller == callee:
                continue
            share = sum(1 for t in bad if t < len(states[caller]) and states[caller][t] > 0) / len(bad)
            out.append({"caller": caller, "callee": callee, "share": share})
            if share > 0 and caller not in seen:
                seen.add(caller)
                todo.append(caller)
    return out


def _level_cdf(level: int, strength: float) -> np.ndarray:
    """CDF over O levels of a cause that produces ``level`` with probability ``strength``, else ok."""
    cdf = np.ones(3)
    cdf[:level] = 1.0 - strength
    return cdf


def _first_slice(at: int | None, n: int) -> int:
    """The first of ``n`` slices the root-cause query spans (:meth:`DBNModel.infer`): ``at``, within the
    slices, or the last."""
    return n - 1 if at is None else min(max(at, 0), n - 1)
