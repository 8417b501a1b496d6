"""Evidence extraction speed against the floor of only decoding the same bytes (same run).

    python benchmarks/evidence.py [--json] [--traces N]

Payloads are Tempo v1 trace-by-id bodies (base64 ids, int64 as strings, as Tempo sends them) of a
generated sock-shop incident. ``extract`` = typed decode (msgspec) + the span frame (``SpanBatch``) + the evidence frame
and the per-edge counts, exactly what the incident flow runs; ``decode_floor`` = the fastest generic
decode of the same payloads into Python objects (orjson and msgspec both timed, the faster counts),
nothing else.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baynet.evidence import build_evidence  # noqa: E402
from baynet.lab.generator import generate  # noqa: E402
from baynet.otlp import render_resource_spans  # noqa: E402
from baynet.otlp_fast import SpanBatch  # noqa: E402


def payloads(n_traces: int) -> tuple[list[bytes], tuple, list]:
    fault_start = time.time() - 3600
    rate = 10.0
    before = n_traces / rate * 0.8
    inc = generate("sock-shop", "orders", "gray", fault_start=fault_start, before_s=before,
                   after_s=n_traces / rate - before, rate_per_s=rate, seed=11)
    by_trace: dict[str, list] = {}
    for s in inc.spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    bodies = [orjson.dumps({"batches": render_resource_spans(group)}) for group in by_trace.values()]
    baseline = (fault_start - before, fault_start - 60)
    slices = [(fault_start + 60 * i, fault_start + 60 * (i + 1)) for i in range(3)]
    return bodies, baseline, slices


def extract(bodies: list[bytes], baseline: tuple, slices: list):
    batch = SpanBatch()
    for body in bodies:
        batch.add(body)
    spans = batch.frame()
    return build_evidence(spans, baseline, slices), len(spans)


def decode_only(bodies: list[bytes], decode) -> None:
    for body in bodies:
        decode(body)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--traces", type=int, default=20000, help="traces to generate (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side; the best counts (default 5)")
    args = parser.parse_args()
    bodies, baseline, slices = payloads(args.traces)
    (evidence, edges), n_spans = extract(bodies, baseline, slices)
    floors = {"orjson": best_of(lambda: decode_only(bodies, orjson.loads), args.repeat),
              "msgspec": best_of(lambda: decode_only(bodies, msgspec.json.Decoder().decode), args.repeat)}
    floor = min(floors.values())
    took = best_of(lambda: extract(bodies, baseline, slices), args.repeat)
    tracemalloc.start()
    extract(bodies, baseline, slices)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    out = {"traces": len(bodies), "spans": n_spans, "payload_mb": round(sum(map(len, bodies)) / 2**20, 1),
           "extract_s": round(took, 3), "decode_floor_s": round(floor, 3), "ratio": round(took / floor, 2),
           "decoders_s": {k: round(v, 3) for k, v in floors.items()},
           "peak_mb": round(peak, 1), "evidence_rows": len(evidence), "edges": len(edges)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['traces']} traces, {out['spans']} spans, {out['payload_mb']} MB of Tempo JSON")
        print(f"decode only (orjson): {floor:.3f}s; extraction to evidence: {took:.3f}s; ratio {took / floor:.2f}; "
              f"peak {peak:.0f} MB (tracemalloc)")


if __name__ == "__main__":
    main()
