"""Generated rollout incidents as bundles (lab tooling): a bad deployment among harmless ones.

Each incident is a generated mesh (:func:`baynet.lab.generator.generate`, fault ``errors``) in which a new
version ``v2`` of the faulty service starts serving half of its calls at the fault's start and fails
(the calls that fail are the new version's), while two other services roll out a harmless ``v2`` (half of
their calls, no new failures) within five minutes either side. The bundle holds ``signals.csv`` (per call
edge and 15 s window, the callee's view, with ``destination_version``), ``changes.csv`` (all three
deployments), the event and ``truth.json``. No traces: the deployment evidence is what is measured.
"""

from __future__ import annotations

import errno
import random
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
