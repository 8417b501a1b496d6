"""DBN engine speed: structure update, parameter update and exact inference on generated meshes, and
pgmpy's own DBNInference answering the same queries on small meshes (side by side, same run).

    python benchmarks/inference.py [--json]

Meshes: a heavy-tailed call graph (a tree backbone, plus a few hub services — databases, auth — that
many services call). The blast radius is the first 40 services reached breadth-first from a mid-level
service, as the incident flow restricts the network to the affected service's downstream.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baynet.dbn import O_STATES, S_STATES, DBNModel  # noqa: E402

SLICES = 2  # the template pgmpy's DBNInference works on


def mesh(n: int, seed: int = 0) -> tuple[list[str], set[tuple[str, str]]]:
    rng = random.Random(seed)
    services = [f"svc-{i:04d}" for i in range(n)]
    hubs = services[-max(1, n // 50):]
    edges = set()
    for i in range(1, n - len(hubs)):
        edges.add((services[rng.randrange(0, i)], services[i]))  # backbone: one caller each
    for s in services[:-len(hubs)]:
        for h in hubs:
            if rng.random() < 0.3:
                edges.add((s, h))
    return services, edges


def evidence(services: list[str], seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    states = {s: [rng.choice([0, 0, 0, 1, 2]) for _ in range(SLICES)] for s in services}
    own = {s: [rng.choice([0, 0, 0, 1, 2]) for _ in range(SLICES)] for s in services}
    return states, own


def blast_radius(callees: dict[str, list[str]], start: str, size: int) -> list[str]:
    seen, queue = [start], [start]
    while queue and len(seen) < size:
        for c in callees.get(queue.pop(0), []):
            if c not in seen:
                seen.append(c)
                queue.append(c)
                if len(seen) >= size:
                    break
    return seen


def bench_mesh(n: int) -> dict:
    services, edges = mesh(n)
    tracemalloc.start()
    t0 = time.perf_counter()
    model = DBNModel()
    model.update_structure(set(services), edges)
    t1 = time.perf_counter()
    start = next(s for s in services if len(model.callees[s]) >= 2 and s != services[0])
    members = blast_radius(model.callees, start, min(40, n))
    rng = random.Random(1)
    stats = [{"caller": a, "callee": c, "child_bad": rng.randint(0, 50), "both_bad": rng.randint(0, 20)}
             for a in members for c in model.callees[a]]
    model.update_parameters(stats)
    t2 = time.perf_counter()
    states, own = evidence(members, 2)
    post = model.infer(states, own, members)
    top = max(post, key=post.get)
    model.propagation_path(top, start, states)
    t3 = time.perf_counter()
    # a second incident: small topology change, incremental structure update
    edges2 = set(list(edges)[:-5]) | {(services[1], services[-1])}
    model.update_structure(set(services), edges2)
    t4 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"services": n, "edges": len(edges), "blast_radius": len(members),
            "structure_s": round(t1 - t0, 4), "parameters_s": round(t2 - t1, 4), "inference_s": round(t3 - t2, 4),
            "incremental_structure_s": round(t4 - t3, 4), "seconds": round(t3 - t0, 4),
            "peak_mb": round(peak, 1)}


def dbninference_case(n: int) -> dict:
    """Run in a child process (address space capped) because DBNInference may need terabytes."""
    from pgmpy.inference import DBNInference

    services, edges = mesh(n, seed=3)
    model = DBNModel()
    model.params.self_persist = 0.0  # DBNInference's interface clique cannot hold O persistence edges
    model.update_structure(set(services), edges)
    states, own = evidence(services, 5)
    t0 = time.perf_counter()
    ours = model.infer(states, own, services)
    ours_s = time.perf_counter() - t0
    ev = {}
    for s in services:
        for t in range(SLICES):
            ev[(f"O|{s}", t)] = O_STATES[states[s][t]]
            ev[(f"S|{s}", t)] = S_STATES[own[s][t]]
    t0 = time.perf_counter()
    dbn = model.to_pgmpy_dbn(services)
    q = DBNInference(dbn).forward_inference([(f"R|{s}", SLICES - 1) for s in services], ev)
    theirs_s = time.perf_counter() - t0
    diff = max(abs(float(q[(f"R|{s}", SLICES - 1)].values[1]) - ours[s]) for s in services)
    return {"services": n, "baynet_s": ours_s, "dbninference_s": theirs_s, "speedup": theirs_s / ours_s,
            "max_abs_diff": diff}


def vs_variable_elimination(n: int = 10) -> dict:
    """pgmpy's VariableElimination on the same model unrolled (the exact path DESIGN.md measured)."""
    services, edges = mesh(n, seed=3)
    model = DBNModel()
    model.update_structure(set(services), edges)
    states, own = evidence(services, 5)
    t0 = time.perf_counter()
    ours = model.infer(states, own, services)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = model.infer_pgmpy(states, own, services)
    theirs_s = time.perf_counter() - t0
    return {"services": n, "baynet_s": ours_s, "variable_elimination_s": theirs_s, "speedup": theirs_s / ours_s,
            "max_abs_diff": max(abs(ours[s] - theirs[s]) for s in services)}


def run_dbninference(n: int, timeout_s: int = 300, memory_gb: int = 8) -> dict:
    code = (f"import resource,json,sys; resource.setrlimit(resource.RLIMIT_AS, ({memory_gb << 30}, {memory_gb << 30}));"
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
            f"import inference; print(json.dumps(inference.dbninference_case({n})))")
    try:
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"services": n, "error": f"DBNInference did not finish in {timeout_s}s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"services": n, "error": f"DBNInference failed: {last[:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="10,50,200,1000", help="mesh sizes")
    args = parser.parse_args()
    ten = run_dbninference(10)
    completed = [r for r in (run_dbninference(n) for n in (3, 4, 5, 6)) if "error" not in r]
    largest = completed[-1] if completed else None
    vs = {"services": 10, "speedup": ten.get("speedup"), "max_abs_diff": ten.get("max_abs_diff"),
          "dbninference": ten.get("error", "completed"), "largest_completed": largest, "completed": completed}
    meshes = [bench_mesh(int(n)) for n in args.sizes.split(",")]
    ve = vs_variable_elimination(10)
    out = {"vs_dbninference": vs, "vs_variable_elimination": ve, "meshes": meshes,
           "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if args.json:
        print(json.dumps(out))
        return
    print(f"DBNInference on 10 services: {vs['dbninference']}")
    for r in completed:
        print(f"  {r['services']} services: DBNInference {r['dbninference_s']:.3f}s, Baynet {r['baynet_s'] * 1e3:.2f}ms, "
              f"speed-up x{r['speedup']:.0f}, max |diff| {r['max_abs_diff']:.1e}")
    print(f"10 services, same model and evidence, pgmpy VariableElimination on the unrolled network: "
          f"{ve['variable_elimination_s']:.3f}s vs Baynet {ve['baynet_s'] * 1e3:.2f}ms, speed-up x{ve['speedup']:.0f}, "
          f"max |diff| {ve['max_abs_diff']:.1e}")
    print(f"{'services':>9} {'edges':>6} {'radius':>6} {'structure':>10} {'params':>8} {'infer':>8} {'total':>8} {'peak MB':>8}")
    for m in meshes:
        print(f"{m['services']:>9} {m['edges']:>6} {m['blast_radius']:>6} {m['structure_s']:>10.4f} "
              f"{m['parameters_s']:>8.4f} {m['inference_s']:>8.4f} {m['seconds']:>8.4f} {m['peak_mb']:>8.1f}")


if __name__ == "__main__":
    main()
