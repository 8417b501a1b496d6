"""Log evidence speed and memory against the floor of only decoding the same Loki bodies (same run).

    python benchmarks/logs.py [--json] [--lines N]

Payloads are Loki ``query_range`` streams bodies (pages of 5000 entries, structured metadata in the
categorize-labels form, as the Loki source reads them) of an incident window: a baseline and three
slices, 24 services, half the lines carrying a code location, half plain text keyed by Drain, a fault
in one service (a new ERROR template and a vanished step). ``evidence`` = body -> entries
(:func:`baynet.loki.parse_streams`) -> ``logs.csv`` rows -> the log evidence, exactly what the flow runs;
``decode_floor`` = ``orjson.loads`` of the same bodies and nothing else; ``drain_ceiling`` = drain3's own
throughput on the plain lines alone (the template miner the evidence calls for them). Peak memory is the
evidence run's, in a fresh process (its VmHWM), against the budget.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MEMORY_BUDGET_MB = 3000.0
T0 = 1_700_000_000.0
BASELINE = (T0, T0 + 600)
SLICES = [(T0 + 720 + 60 * i, T0 + 780 + 60 * i) for i in range(3)]


def bodies(n_lines: int, seed: int = 3) -> tuple[list[bytes], int]:
    """Loki bodies of ``n_lines`` lines over the window; returns them and the plain (location-less) count."""
    rng = random.Random(seed)
    services = [f"svc-{i:02d}" for i in range(24)]
    entries, plain = [], 0
    span = 0
    while len(entries) < n_lines:
        t = rng.uniform(BASELINE[0], SLICES[-1][1])
        if BASELINE[1] <= t < SLICES[0][0]:
            continue
        svc = rng.choice(services)
        span += 1
        faulty = svc == "svc-07" and t >= SLICES[0][0]
        steps = [f"c.{svc}.Handler#12", f"c.{svc}.Service#40"] + ([] if faulty else [f"c.{svc}.Service#57"])
        for k, where in enumerate(steps):
            line = (f"12:00:00.{k:03d} INFO  {where} TraceID: {span:032x} SpanID: {span:016x} [op][step {k}]"
                    if k % 2 == 0 else f"2024-01-01 12:00:00 INFO handled item {rng.randint(1, 10**6)} for user "
                                       f"{rng.randint(1, 999)} in {rng.random() * 40:.1f} ms")
            plain += k % 2 == 1
            entries.append((int((t + k * 1e-4) * 1e9), svc, f"{span:032x}", f"{span:016x}", line))
        if faulty:
            entries.append((int((t + 5e-4) * 1e9), svc, f"{span:032x}", f"{span:016x}",
                            f"12:00:00.009 ERROR c.{svc}.Service#77 TraceID: {span:032x} price missing"))
    entries = sorted(entries[:n_lines])
    out = []
    for i in range(0, len(entries), 5000):
        streams: dict[str, list] = {}
        for ts, svc, trace, sp, line in entries[i:i + 5000]:
            streams.setdefault(svc, []).append([str(ts), line, {"structuredMetadata": {"trace_id": trace,
                                                                                        "span_id": sp}}])
        out.append(orjson.dumps({"status": "success", "data": {
            "resultType": "streams", "encodingFlags": ["categorize-labels"],
            "result": [{"stream": {"namespace": "bench", "service_name": s}, "values": v} for s, v in
                       streams.items()], "stats": {}}}) + b"\n")
    return out, plain


def evidence(payloads: list[bytes]):
    import pandas as pd

    from baynet.evidence.logs import build_log_evidence
    from baynet.loki import parse_streams
    from baynet.sources.loki import logs_frame

    entries = [e for body in payloads for e in parse_streams(orjson.loads(body)).entries]
    frame = logs_frame(entries)
    del entries
    ev = build_log_evidence(frame, BASELINE, SLICES)
    return ev, len(frame)


def _peak_child(n_lines: int, queue: mp.Queue) -> None:
    payloads, _ = bodies(n_lines)
    start = _vmhwm()
    ev, n = evidence(payloads)
    queue.put({"peak_mb": _vmhwm(), "before_mb": start, "lines": n,
               "top": ev[ev["window"] >= 0].groupby("service")["score"].max().idxmax()})


def _vmhwm() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    payloads, plain = bodies(args.lines)
    t = time.perf_counter()
    for body in payloads:
        orjson.loads(body)
    floor_s = time.perf_counter() - t
    t = time.perf_counter()
    ev, n = evidence(payloads)
    evidence_s = time.perf_counter() - t
    from baynet.evidence.logs import Templates

    miner = Templates()
    sample = [f"2024-01-01 12:00:00 INFO handled item {i} for user {i % 999} in {i % 40}.5 ms"
              for i in range(min(plain, 200_000))]
    t = time.perf_counter()
    for line in sample:
        miner.key(line)
    drain_lps = len(sample) / (time.perf_counter() - t)
    queue: mp.Queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_peak_child, args=(args.lines, queue))
    child.start()
    peak = queue.get()
    child.join()
    top = ev[ev["window"] >= 0].groupby("service")["score"].max().idxmax()
    result = {"lines": n, "plain_lines": plain, "decode_floor_s": round(floor_s, 2),
              "decode_floor_lines_per_s": round(n / floor_s), "evidence_s": round(evidence_s, 2),
              "evidence_lines_per_s": round(n / evidence_s), "x_floor": round(evidence_s / floor_s, 1),
              "drain_ceiling_lines_per_s": round(drain_lps), "peak_mb": round(peak["peak_mb"]),
              "memory_budget_mb": MEMORY_BUDGET_MB, "within_budget": peak["peak_mb"] <= MEMORY_BUDGET_MB,
              "top_service": top}
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
