"""Bounded retrieval: does an analysis cost the same at 1x, 10x and 100x traffic?

    python benchmarks/retrieval.py [--json] [--multipliers 1,10,100] [--full 1,10] [--budget N] [--sample N]
                                   [--repeat N] [--no-aggregates]

One generated incident (gray failure in sock-shop's carts, ``--rate`` requests a second through the front
end at 1x, default 2) at each traffic multiplier, served by the Tempo-compatible server. Each analysis
(retrieval, evidence, model, inference — the flow's steps 2-5) runs in a process of its own, so its peak
memory is its own. Paths, side by side in the same run:

* ``aggregates`` (needs Debian's ``prometheus``): the generator's series of the same spans backfilled into
  Prometheus, rates, errors and latencies read from them, traces read as a sample of ``--sample`` per slice
  (default: ``BAYNET_TRACES_SAMPLE_PER_SLICE``'s default, see the README);
* ``bounded`` (the default settings without them): at most ``BAYNET_TRACES_PER_SLICE`` (or ``--budget``)
  traces per slice;
* ``full`` (``BAYNET_TRACES_PER_SLICE=0``) at the ``--full`` multipliers: every trace.

Printed per run (the median of ``--repeat`` analyses): seconds, the analysis' own CPU seconds (its process's,
all threads; the Tempo server's are not in them -- steadier than wall time when the machine's pace moves),
Tempo requests, traces read of those that matched, peak RSS and the top-1 root cause; then the goal, on the
aggregates path (the bounded one without Prometheus): its time from the lowest to the highest multiplier
grows at most 1.5x, with the same top 1.

``--json`` prints one object: ``{"runs": [{"multiplier", "path", "seconds", "seconds_each", "cpu_seconds",
"tempo_requests", "peak_mb", "top1", ...}], "budget", "sample", "goal": {...}, "without_aggregates": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def analyse(tempo_url: str, budget: int, event: dict, prometheus_url: str = "", sample: int = 0) -> dict:
    """The flow's steps 2-5 on one event (in this process), timed; with ``prometheus_url`` the metric
    source too (the metrics-generator's aggregates) and traces read as a sample of ``sample`` per slice."""
    from baynet.analysis import analyse
    from baynet.dbn import DBNModel
    from baynet.events import parse_object
    from baynet.settings import Settings
    from baynet.sources import gather
    from baynet.sources.prometheus import PrometheusMetrics
    from baynet.sources.tempo import TempoTraces
    from baynet.windows import Windows

    settings = Settings(tempo_url=tempo_url, traces_per_slice=budget, prometheus_url=prometheus_url or None,
                        traces_sample_per_slice=sample, _env_file=None)
    (ev,) = parse_object(event)
    t0, c0 = time.perf_counter(), time.process_time()
    sources = [TempoTraces(settings)] + ([PrometheusMetrics(settings)] if prometheus_url else [])
    observations = gather(ev, Windows.around(ev.unix, settings), sources)
    ranking = analyse(ev, observations, DBNModel(), settings).ranking
    stats = observations.parts[0].stats
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "top1": ranking[0]["service"], "traces_read": stats["traces_fetched"],
            "traces_matching": stats.get("traces_estimated") or stats["traces_found"],
            "peak_mb": peak_mb()}


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space made at exec; ru_maxrss
    would also count the parent's memory copied at fork (the benchmark's parent holds every trace)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(tempo, budget: int, event: dict, prometheus_url: str = "", sample: int = 0) -> dict:
    before = len(tempo.requests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYNET_")}
    out = subprocess.run([sys.executable, __file__, "--child", tempo.url, str(budget), json.dumps(event),
                          prometheus_url, str(sample)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"analysis failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["tempo_requests"] = len(tempo.requests) - before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--multipliers", default="1,10,100", help="traffic multipliers (default 1,10,100)")
    parser.add_argument("--full", default="1,10", help="multipliers also read whole, today's path (default 1,10)")
    parser.add_argument("--budget", type=int, default=None,
                        help="traces per slice for the bounded path (default: BAYNET_TRACES_PER_SLICE's default)")
    parser.add_argument("--rate", type=float, default=2.0, help="requests a second at 1x (default 2)")
    parser.add_argument("--no-aggregates", action="store_true",
                        help="skip the path with Tempo's metrics-generator series in Prometheus")
    parser.add_argument("--sample", type=int, default=None,
                        help="traces per slice beside the aggregates (default: BAYNET_TRACES_SAMPLE_PER_SLICE's "
                        "default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="analyses per path and multiplier; the median run is reported (default 3: one run "
                        "of two seconds moves by a third with what else the machine does)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, budget, event, prometheus_url, sample = args.child
        print(json.dumps(analyse(url, int(budget), json.loads(event), prometheus_url, int(sample))))
        return

    from baynet.lab.generator import generate
    from baynet.local.metrics_generator import generator_openmetrics
    from baynet.local.stack import PrometheusServer, prometheus_available
    from baynet.local.tempo import TempoServer, TraceStore
    from baynet.settings import Settings

    aggregates = not args.no_aggregates and prometheus_available()

    budget = args.budget if args.budget is not None else Settings.model_fields["traces_per_slice"].default
    if args.sample is None:
        args.sample = Settings.model_fields["traces_sample_per_slice"].default
    multipliers = [float(m) for m in args.multipliers.split(",")]
    full = {float(m) for m in args.full.split(",") if m}
    fault_start = time.time() - 600
    runs = []
    for m in multipliers:
        print(f"generating the incident at {m:g}x traffic ...", file=sys.stderr, flush=True)
        inc = generate("sock-shop", "carts", "gray", fault_start=fault_start, before_s=900, rate_per_s=args.rate,
                       traffic=m, seed=3)
        prometheus = None
        if aggregates:
            print(f"  Tempo's metrics-generator series at {m:g}x into Prometheus ...", file=sys.stderr, flush=True)
            work = Path(tempfile.mkdtemp(prefix="baynet-retrieval-"))
            (work / "generator.om").write_text(generator_openmetrics(inc.spans))
            prometheus = PrometheusServer(work / "generator.om", work / "prometheus").start()
        store = TraceStore()
        store.add_spans(inc.spans)
        del inc.spans
        try:
            with TempoServer(store) as tempo:
                paths = [("bounded", budget, "")] + ([("full", 0, "")] if m in full else [])
                if prometheus:
                    paths.append(("aggregates", budget, prometheus.url))
                for path, b, prom in paths:
                    print(f"  {path} analysis at {m:g}x ...", file=sys.stderr, flush=True)
                    tries = [run_child(tempo, b, inc.event, prom, args.sample if prom else 0)
                             for _ in range(args.repeat)]
                    r = sorted(tries, key=lambda t: t["seconds"])[len(tries) // 2]  # the median run
                    runs.append({"multiplier": m, "path": path, **r,
                                 "seconds_each": [t["seconds"] for t in tries]})
                    print(f"  {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
        finally:
            if prometheus:
                prometheus.stop()
                shutil.rmtree(work, ignore_errors=True)
        del store
    def goal_of(path: str) -> dict:
        runs_of = sorted((r for r in runs if r["path"] == path), key=lambda r: r["multiplier"])
        growth = runs_of[-1]["seconds"] / max(runs_of[0]["seconds"], 1e-9) if runs_of else None
        return {"path": path, "time_growth_lowest_to_highest": round(growth, 2) if growth else None,
                "target_growth": 1.5, "same_top1": len({r["top1"] for r in runs_of}) == 1,
                "met": bool(growth is not None and growth <= 1.5 and len({r["top1"] for r in runs_of}) == 1)}

    # the goal on the aggregates with a trace sample, where the generator's series could be made
    goal = goal_of("aggregates" if aggregates else "bounded")
    out = {"budget": budget, "sample": args.sample if aggregates else None, "runs": runs, "goal": goal,
           "without_aggregates": goal_of("bounded")}
    if args.json:
        print(json.dumps(out))
        return
    print(f"bounded retrieval: at most {budget} traces per slice (BAYNET_TRACES_PER_SLICE)")
    print(f"{'traffic':>8} {'path':>8} {'seconds':>8} {'cpu s':>6} {'tempo req':>10} {'read':>7} {'matching':>9} "
          f"{'peak MB':>8}  top 1")
    for r in runs:
        print(f"{r['multiplier']:>7g}x {r['path']:>8} {r['seconds']:>8.2f} {r['cpu_seconds']:>6.2f} "
              f"{r['tempo_requests']:>10} "
              f"{r['traces_read']:>7} {r['traces_matching']:>9.0f} {r['peak_mb']:>8.1f}  {r['top1']}")
    for g in ([goal, out["without_aggregates"]] if aggregates else [goal]):
        print(f"{g['path']} time x{g['time_growth_lowest_to_highest']} from {multipliers[0]:g}x to "
              f"{multipliers[-1]:g}x (goal <= 1.5), same top 1: {g['same_top1']}")


if __name__ == "__main__":
    main()
