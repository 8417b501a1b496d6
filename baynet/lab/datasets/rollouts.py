"""Generated rollout incidents as bundles (lab tooling): a bad deployment among harmless ones.

Two families. The **hard** one (:func:`hard_rollout_bundles`, the default of ``baynet bundle rollouts``)
is described at :func:`hard_rollout_bundle`. The **easy** one (``--easy``, :func:`rollout_bundles`): each incident is a generated mesh (:func:`baynet.lab.generator.generate`, fault ``errors``) in which a new
version ``v2`` of the faulty service starts serving half of its calls at the fault's start and fails
(the calls that fail are the new version's), while two other services roll out a harmless ``v2`` (half of
their calls, no new failures) within five minutes either side. The bundle holds ``signals.csv`` (per call
edge and 15 s window, the callee's view, with ``destination_version``), ``changes.csv`` (all three
deployments), the event and ``truth.json``. No traces: the deployment evidence is what is measured.
"""

from __future__ import annotations

import errno
import math
import random
from typing import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from baynet.bundles.write import write_bundle
from baynet.lab.generator import MESHES, generate

WINDOW_S = 15.0


def _signals(spans: list, rollout: dict[str, float], bad: str, rng: random.Random) -> pd.DataFrame:
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    rows = []
    for s in spans:
        if s.kind != "server":
            continue
        client = by_id.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        source = client.service if client is not None and client.service != s.service else ""
        t = s.start_ns / 1e9
        version = "v1"
        if s.service in rollout and t >= rollout[s.service]:
            if s.service == bad:
                version = "v2" if s.failed or rng.random() < 0.2 else "v1"
            else:
                version = "v2" if rng.random() < 0.5 else "v1"
        rows.append((np.ceil(t / WINDOW_S) * WINDOW_S, source, s.service, version, s.failed,
                     (s.end_ns - s.start_ns) / 1e6))
    frame = pd.DataFrame(rows, columns=["time", "source", "destination", "destination_version", "failed", "ms"])
    g = frame.groupby(["time", "source", "destination", "destination_version"])
    out = g.agg(requests=("failed", "size"), error_ratio=("failed", "mean"),
                latency_ms_avg=("ms", "mean"), latency_ms_p50=("ms", "median"),
                latency_ms_p90=("ms", lambda x: float(np.quantile(x, 0.9))),
                latency_ms_p99=("ms", lambda x: float(np.quantile(x, 0.99)))).reset_index()
    out["window_s"] = WINDOW_S
    out["reporter"] = "destination"
    return out


def rollout_bundle(out: Path, mesh: str, bad: str, seed: int, fault_start: float = 1_700_000_000.0) -> Path:
    rng = random.Random(seed)
    services = sorted(MESHES[mesh]["services"])
    harmless = rng.sample([s for s in services if s != bad and s != MESHES[mesh]["entry"]], 2)
    incident = generate(mesh, bad, "errors", fault_start=fault_start, before_s=900, after_s=300, rate_per_s=2.0,
                        seed=seed)
    rollout = {bad: fault_start, **{h: fault_start + rng.uniform(-300, 300) for h in harmless}}
    signals = _signals(incident.spans, rollout, bad, rng)
    if out.exists():
        raise FileExistsError(errno.EEXIST, "exists", str(out))
    changes = pd.DataFrame([(t, s, "deploy", "v2") for s, t in sorted(rollout.items(), key=lambda kv: kv[1])],
                           columns=["time", "service", "kind", "detail"])
    return write_bundle(out, {**incident.event, "id": f"rollout-{mesh}-{bad}-{seed}"},
                        truth={"root_cause": bad, "fault_type": "bad deploy"},
                        signals=signals.sort_values(["time", "source", "destination", "destination_version"]),
                        changes=changes)


def rollout_bundles(out: Path, mesh: str = "sock-shop", seeds: tuple[int, ...] = (1, 2, 3)) -> list[Path]:
    """One bundle per service of the mesh (but its entry) and seed."""
    entry = MESHES[mesh]["entry"]
    return [rollout_bundle(Path(out) / f"{mesh}-{bad}-{seed}", mesh, bad, seed)
            for bad in sorted(MESHES[mesh]["services"]) if bad != entry for seed in seeds]


# --- the hard family -------------------------------------------------------------------------------------

EFFECTS = ("errors", "latency", "cpu_leak", "memory_leak", "log_exceptions")
# The bad version's effect at full rollout, drawn log-uniformly between these (the ranges): added
# error probability; latency multiplier of its own work minus 1; leaked cores over ten minutes; leaked share
# of memory over ten minutes; share of its requests that log an exception while answering normally.
EFFECT_RANGES = {"errors": (0.02, 0.20), "latency": (0.30, 3.00), "cpu_leak": (0.05, 0.5),
                 "memory_leak": (0.10, 1.00), "log_exceptions": (0.02, 0.20)}
# Effects at or above these are "clear" (the bar of +5 % errors or +50 % latency; the leaks and
# the logged exceptions at the same share of their range).
CLEAR = {"errors": 0.05, "latency": 0.50, "cpu_leak": 0.10, "memory_leak": 0.20, "log_exceptions": 0.05}
STEPS = (0.2, 0.4, 0.6, 0.8, 1.0)


class _Rollout:
    """One service's canary: the share of its calls the new version serves at a time, step by step."""

    def __init__(self, start: float, step_s: float):
        self.start, self.step_s = start, step_s

    def steps(self, t: float) -> int:
        """Canary steps taken by ``t`` (0 before the rollout; each step starts one new pod)."""
        return 0 if t < self.start else min(int((t - self.start) // self.step_s) + 1, len(STEPS))

    def share(self, t: float) -> float:
        k = self.steps(t)
        return STEPS[k - 1] if k else 0.0

    def since_step(self, t: float) -> float:
        """Seconds since the latest step (a fresh pod's age)."""
        return (t - self.start) % self.step_s if t < self.start + (len(STEPS) - 1) * self.step_s \
            else t - self.start - (len(STEPS) - 1) * self.step_s


class _HardMesh:
    def __init__(self, mesh: str, rollouts: dict[str, _Rollout], bad: str, effect: str, size: float,
                 rng: random.Random):
        self.services = MESHES[mesh]["services"]
        self.rollouts, self.bad, self.effect, self.size, self.rng = rollouts, bad, effect, size, rng
        # each changed service's own harmless noise: cold-start slowness of a fresh pod and its decay (s),
        # and the error burst of the pod that drains at each step
        self.cold = {s: (rng.uniform(0.5, 2.0), rng.uniform(10, 40)) for s in rollouts}
        self.drain = {s: (rng.uniform(0.01, 0.08), rng.uniform(5, 20)) for s in rollouts}
        # which pod of its version serves a call: a stream of its own, so the traffic drawn from ``rng`` is
        # the same whichever pod serves
        self.pods = random.Random(f"{mesh}-{bad}-{effect}-{size}")
        self.calls: list[tuple] = []
        self.exceptions: list[tuple[float, str]] = []

    def version(self, svc: str, t: float) -> str:
        r = self.rollouts.get(svc)
        return "v2" if r is not None and self.rng.random() < r.share(t) else "v1"

    def call(self, svc: str, caller: str, t: float) -> tuple[float, bool]:
        mean_self, callees = self.services[svc]
        version = self.version(svc, t)
        own_ms = self.rng.lognormvariate(0, 0.25) * mean_self
        p_err = 0.001
        r = self.rollouts.get(svc)
        if r is not None and t >= r.start:
            steps = r.steps(t)
            if version == "v2":  # each v2 pod is slow until it warms up: the one serving, by its age
                amp, tau = self.cold[svc]
                born = r.start + self.pods.randrange(steps) * r.step_s
                own_ms *= 1.0 + amp * math.exp(-(t - born) / tau)
            else:  # at each step one old pod drains and drops a few of the calls it serves
                rate, length = self.drain[svc]
                if r.since_step(t) < length and self.pods.randrange(len(STEPS) - steps + 1) == 0:
                    p_err += rate
        if svc == self.bad and version == "v2":
            if self.effect == "errors":
                p_err += self.size
            elif self.effect == "latency":
                own_ms *= 1.0 + self.size
            elif self.effect == "log_exceptions" and self.rng.random() < self.size:
                self.exceptions.append((t, svc))
        ms, failed = own_ms, self.rng.random() < p_err
        if not failed:
            for callee, prob in callees:
                if self.rng.random() >= prob:
                    continue
                c_ms, c_failed = self.call(callee, svc, t + ms / 2e3)
                ms += c_ms + 0.4
                if c_failed:
                    failed = self.rng.random() < 0.9
                    break
        self.calls.append((t, caller, svc, version, failed, ms))
        return ms, failed


def _hard_resources(mesh: _HardMesh, services: list[str], t0: float, t1: float, rng: random.Random
                    ) -> pd.DataFrame:
    """CPU (cores) and memory (bytes) per pod, every 15 s. An unchanged service runs one pod. A changed one
    runs five ``v1`` pods until its rollout begins; each canary step starts a ``v2`` pod and stops a ``v1``
    one. A pod's CPU follows its share of its version's work; a fresh pod burns extra CPU while it warms
    up; the bad version's pods leak (CPU or memory, growing with the pod's age)."""
    calls = pd.DataFrame(mesh.calls, columns=["t", "source", "destination", "version", "failed", "ms"])
    calls["window"] = np.ceil(calls["t"] / WINDOW_S) * WINDOW_S
    work = (calls.groupby(["destination", "version", "window"])["ms"].sum() / 1e3 / WINDOW_S).to_dict()
    n = len(STEPS)
    rows = []
    for svc in services:
        mem0 = rng.uniform(150e6, 400e6)
        r = mesh.rollouts.get(svc)
        for w in np.arange(np.ceil(t0 / WINDOW_S) * WINDOW_S, t1, WINDOW_S):
            if r is None:
                pods = [(f"{svc}-0", "v1", None)]
            else:
                steps = r.steps(w)
                pods = [(f"{svc}-v1-{k}", "v1", None) for k in range(steps, n)]
                pods += [(f"{svc}-v2-{k}", "v2", r.start + k * r.step_s) for k in range(steps)]
            live = {v: sum(1 for p in pods if p[1] == v) for v in ("v1", "v2")}
            for pod, version, born in pods:
                cpu = 0.02 + work.get((svc, version, w), 0.0) / live[version] + abs(rng.gauss(0, 0.004))
                mem = mem0 * (1 + rng.gauss(0, 0.003))
                if born is not None:
                    age = w - born
                    amp, tau = mesh.cold[svc]
                    cpu += 0.05 * amp * math.exp(-age / tau)
                    if svc == mesh.bad and mesh.effect == "cpu_leak":
                        cpu += mesh.size * age / 600.0
                    if svc == mesh.bad and mesh.effect == "memory_leak":
                        mem *= 1 + mesh.size * age / 600.0
                rows += [(w, svc, "cpu_cores", cpu, pod), (w, svc, "memory_bytes", mem, pod)]
    return pd.DataFrame(rows, columns=["time", "service", "metric", "value", "pod"])


def hard_rollout_bundle(out: Path, mesh: str, seed: int, *, counts: bool = True,
                        alert_s: float | None = None) -> Path:
    """One hard rollout incident, deterministic in ``seed``:

    * 2-6 services (never the entry) roll out a ``v2`` in canary steps (1/5, 2/5, ... of their calls, a
      step every 60-150 s), their first steps within ten minutes of one another; one of them is bad;
    * the bad version's effect (:data:`EFFECTS`) is drawn from subtle to blatant (:data:`EFFECT_RANGES`)
      and follows its share of the calls: more errors, slower own work, a CPU or memory leak in its pods,
      or exceptions written only to its log while it answers normally;
    * every rollout, the bad one too, has harmless noise of its own: a fresh pod is slow (x1.5-3, decaying
      in 10-40 s) and burns CPU while it warms up, and the old pod that drains at each step drops 1-8 % of
      its calls for 5-20 s;
    * ``signals.csv`` holds old and new versions side by side (the callee's view, 15 s windows; with
      ``counts=False`` no request counts), ``resources.csv`` CPU and memory per pod, ``logs.csv`` the
      WARN/ERROR lines, ``changes.csv`` every rollout's first step;
    * the alert comes ``alert_s`` (drawn 30-240 s when None) after the bad rollout's first step: often
      before its later steps' data land.

    ``truth.json`` records the effect, its size, whether it is clear (:data:`CLEAR`) and the counts variant.
    """
    rng = random.Random(seed)
    spec = MESHES[mesh]
    services = sorted(spec["services"])
    eligible = [s for s in services if s != spec["entry"]]
    changed = rng.sample(eligible, min(len(eligible), rng.randint(2, 6)))
    bad = rng.choice(changed)
    effect = rng.choice(EFFECTS)
    lo, hi = EFFECT_RANGES[effect]
    size = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    fault_start = 1_700_000_000.0 + 3600.0 * seed
    offset = rng.uniform(0, 600)  # where the bad one falls within the ten minutes of rollouts
    rollouts = {s: _Rollout(fault_start if s == bad else fault_start - offset + rng.uniform(0, 600),
                            rng.uniform(60, 150)) for s in changed}
    alert = fault_start + (alert_s if alert_s is not None else rng.uniform(30, 240))
    begin, end = alert - 1800.0, alert + 60.0
    sim = _HardMesh(mesh, rollouts, bad, effect, size, rng)
    t = begin
    while t < end:
        t += rng.expovariate(2.0)
        sim.call(spec["entry"], "", t)
    calls = pd.DataFrame(sim.calls, columns=["t", "source", "destination", "destination_version", "failed", "ms"])
    calls["time"] = np.ceil(calls["t"] / WINDOW_S) * WINDOW_S
    versioned = calls["destination"].isin(set(changed))
    calls.loc[~versioned, "destination_version"] = ""
    g = calls.groupby(["time", "source", "destination", "destination_version"])
    signals = g.agg(requests=("failed", "size"), error_ratio=("failed", "mean"), latency_ms_avg=("ms", "mean"),
                    latency_ms_p50=("ms", "median"),
                    latency_ms_p90=("ms", lambda x: float(np.quantile(x, 0.9)))).reset_index()
    if not counts:
        signals["requests"] = np.nan
    signals["window_s"] = WINDOW_S
    signals["reporter"] = "destination"
    resources = _hard_resources(sim, services, begin, end, rng)
    logs = _hard_logs(sim, calls, rng)
    changes = pd.DataFrame([(r.start, s, "deploy", "v2 canary, 5 steps") for s, r in
                            sorted(rollouts.items(), key=lambda kv: kv[1].start)],
                           columns=["time", "service", "kind", "detail"])
    event = {"service": spec["entry"], "namespace": "default", "event_type": "latency", "timestamp": alert,
             "severity": "critical", "labels": {"detector": "baynet-rollouts", "mesh": mesh}}
    truth = {"root_cause": bad, "fault_type": f"bad deploy: {effect}", "effect": effect, "effect_size": round(size, 4),
             "clear": size >= CLEAR[effect], "counts": counts, "changed": len(changed),
             "alert_after_s": round(alert - fault_start, 1)}
    return write_bundle(out, {**event, "id": f"rollout-hard-{mesh}-{seed}{'' if counts else '-nocounts'}"},
                        truth=truth, signals=signals.sort_values(["time", "source", "destination",
                                                                   "destination_version"]),
                        resources=resources, changes=changes, logs=logs)


def _pod_of(sim: _HardMesh, svc: str, version: str, t: float, rng: random.Random) -> str:
    """The pod that served a call, named as :func:`_hard_resources` names it."""
    r = sim.rollouts.get(svc)
    if r is None:
        return f"{svc}-0"
    steps = r.steps(t)
    if version == "v2" and steps:
        return f"{svc}-v2-{rng.randrange(steps)}"
    return f"{svc}-v1-{rng.randrange(steps, len(STEPS))}" if steps < len(STEPS) else f"{svc}-v2-0"


def _hard_logs(sim: _HardMesh, calls: pd.DataFrame, rng: random.Random) -> pd.DataFrame:
    """Log lines, each from the pod that served the call: an INFO access line for a tenth of the requests
    (a sampled access log), a caller's warning for each failed call, the failing service's own error for
    a call it failed itself, a sprinkle of ordinary warnings, and the bad version's exceptions."""
    rows = []
    for r in calls.itertuples():
        version = r.destination_version or "v1"
        pod = _pod_of(sim, r.destination, version, r.t, rng)
        if rng.random() < 0.1:
            rows.append((r.t, r.destination, pod, "INFO", f"handled request {rng.randint(1, 99999)} in {r.ms:.1f} ms"))
        if r.failed:
            rows.append((r.t, r.destination, pod, "ERROR",
                         f"request failed: status 500 from handler {rng.randint(1, 9999)}"))
            if r.source:
                caller = _pod_of(sim, r.source, sim.version(r.source, r.t), r.t, rng)
                rows.append((r.t, r.source, caller, "WARN", f"call to {r.destination} failed with status 500"))
        if rng.random() < 0.005:
            rows.append((r.t, r.destination, pod, "WARN", f"slow downstream pool, {rng.randint(2, 9)} waiting"))
    for t, svc in sim.exceptions:
        rows.append((t, svc, _pod_of(sim, svc, "v2", t, rng), "ERROR",
                     f"java.lang.IllegalStateException: stale cache entry {rng.randint(1, 9999)} in {svc} handler, "
                     "answered from fallback"))
    frame = pd.DataFrame(rows, columns=["time", "service", "pod", "level", "line"])
    frame["trace_id"], frame["span_id"] = "", ""
    return frame.sort_values("time", kind="stable")[["time", "service", "pod", "trace_id", "span_id", "level", "line"]]


def hard_rollout_bundles(out: Path, mesh: str = "sock-shop", seeds: tuple[int, ...] = tuple(range(1, 51)),
                         progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """The hard family: one incident per seed, each with and without request counts (two bundles)."""
    written = []
    jobs = [(seed, counts) for seed in seeds for counts in (True, False)]
    for k, (seed, counts) in enumerate(jobs):
        name = f"{mesh}-hard-{seed}" + ("" if counts else "-nocounts")
        written.append(hard_rollout_bundle(Path(out) / name, mesh, seed, counts=counts))
        if progress is not None:
            progress(k + 1, len(jobs))
    return written
