"""Generate incidents for the demo and tests: traces, Istio series and the anomaly event of a fault
injected into one service of a known mesh. The ground truth is written apart from what the model sees.

Meshes: ``sock-shop`` (the mesh the original system ran on) and ``petclinic`` (Spring PetClinic
microservices). Faults: ``latency`` (the service's own work slows down), ``errors`` (its requests fail)
and ``gray`` (a partial failure: a share of requests slow, a few fail).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from baynet.bundles.write import write_traces
from baynet.local.metrics_generator import generator_openmetrics
from baynet.otlp import Span

# service -> (mean self time ms, [(callee, probability of a call per request)])
MESHES: dict[str, dict[str, Any]] = {
    "sock-shop": {
        "entry": "front-end",
        "services": {
            "front-end": (4.0, [("catalogue", 0.7), ("carts", 0.5), ("user", 0.3), ("orders", 0.2)]),
            "catalogue": (3.0, [("catalogue-db", 1.0)]),
            "carts": (5.0, [("carts-db", 1.0)]),
            "user": (3.0, [("user-db", 1.0)]),
            "orders": (6.0, [("user", 0.8), ("carts", 0.8), ("payment", 1.0), ("shipping", 1.0),
                             ("orders-db", 1.0)]),
            "payment": (2.0, []),
            "shipping": (3.0, [("rabbitmq", 1.0)]),
            "catalogue-db": (2.0, []),
            "carts-db": (2.5, []),
            "user-db": (2.0, []),
            "orders-db": (2.5, []),
            "rabbitmq": (1.0, []),
        },
    },
    "petclinic": {
        "entry": "api-gateway",
        "services": {
            "api-gateway": (3.0, [("customers-service", 0.6), ("vets-service", 0.3), ("visits-service", 0.5)]),
            "customers-service": (5.0, [("mysql", 1.0), ("visits-service", 0.4)]),
            "vets-service": (4.0, [("mysql", 1.0)]),
            "visits-service": (4.0, [("mysql", 1.0)]),
            "mysql": (2.0, []),
        },
    },
}
FAULTS = ("latency", "errors", "gray")


@dataclass
class Incident:
    mesh: str
    namespace: str
    fault_service: str
    fault: str
    fault_start: float
    event: dict[str, Any]
    spans: list[Span]
    truth: dict[str, Any]


class _Gen:
    def __init__(self, mesh: str, fault_service: str, fault: str, fault_start: float, namespace: str,
                 rng: random.Random):
        self.services = MESHES[mesh]["services"]
        self.fault_service, self.fault, self.fault_start = fault_service, fault, fault_start
        self.namespace, self.rng = namespace, rng
        self.spans: list[Span] = []

    def _id(self, nbytes: int) -> str:
        return self.rng.getrandbits(8 * nbytes).to_bytes(nbytes, "big").hex()

    def _resource(self, service: str) -> dict[str, Any]:
        return {"service.name": service, "k8s.namespace.name": self.namespace}

    def call(self, service: str, trace_id: str, parent: str, start_ns: int, faulty: bool, gray_hit: bool
             ) -> tuple[int, bool]:
        """Emit the server span of ``service`` (and its subtree); return (end_ns, failed)."""
        mean_self, callees = self.services[service]
        self_ms = self.rng.lognormvariate(0, 0.25) * mean_self
        own_error = False
        if faulty and service == self.fault_service:
            if self.fault == "latency" or (self.fault == "gray" and gray_hit):
                self_ms *= 6.0
            if self.fault == "errors":
                own_error = self.rng.random() < 0.6
            if self.fault == "gray" and gray_hit:
                own_error = self.rng.random() < 0.15
        span_id = self._id(8)
        t = start_ns + int(self_ms * 1e6 * 0.5)  # half of own work before the calls
        child_failed = False
        for callee, prob in callees:
            if self.rng.random() >= prob:
                continue
            client_id = self._id(8)
            child_start = t + int(0.2e6)
            child_end, failed = self.call(callee, trace_id, client_id, child_start, faulty, gray_hit)
            client_end = child_end + int(0.2e6)
            self.spans.append(Span(trace_id, client_id, span_id, service, f"call {callee}", "client", t, client_end,
                                   "error" if failed else "unset", 500 if failed else 200,
                                   resource=self._resource(service), attributes={"peer.service": callee}))
            child_failed |= failed
            t = client_end
            if failed:
                break  # a failed dependency ends the request
        end = t + int(self_ms * 1e6 * 0.5)
        failed = own_error or (child_failed and self.rng.random() < 0.9)
        self.spans.append(Span(trace_id, span_id, parent, service, f"{service} handle", "server", start_ns, end,
                               "error" if failed else "unset", 500 if failed else 200,
                               resource=self._resource(service)))
        return end, failed


def generate(mesh: str = "sock-shop", fault_service: str | None = None, fault: str = "latency", *,
             fault_start: float, before_s: float = 900, after_s: float = 240, rate_per_s: float = 2.0,
             detection_delay_s: float = 180, namespace: str = "default", seed: int = 7,
             traffic: float = 1.0) -> Incident:
    """Traffic from ``fault_start - before_s`` to ``fault_start + after_s`` with the fault active after
    ``fault_start``; the anomaly event names the entry service at ``fault_start + detection_delay_s``.
    ``traffic`` multiplies the request rate: the same incident (mesh, fault, times, event) at 1x, 10x or
    100x the load."""
    if not 0 < traffic <= 1000:
        raise ValueError(f"traffic multiplier must be in (0, 1000], got {traffic}")
    if mesh not in MESHES:
        raise ValueError(f"unknown mesh {mesh!r}; choose one of {', '.join(MESHES)}")
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
    spec = MESHES[mesh]
    fault_service = fault_service or sorted(spec["services"])[0]
    if fault_service not in spec["services"]:
        raise ValueError(f"service {fault_service!r} is not in mesh {mesh!r}: {', '.join(sorted(spec['services']))}")
    rng = random.Random(seed)
    gen = _Gen(mesh, fault_service, fault, fault_start, namespace, rng)
    t = fault_start - before_s
    end = fault_start + after_s
    while t < end:
        t += rng.expovariate(rate_per_s * traffic)
        faulty = t >= fault_start
        gen.call(spec["entry"], gen._id(16), "", int(t * 1e9), faulty, rng.random() < 0.3)
    detected = fault_start + detection_delay_s
    event = {"service": spec["entry"], "namespace": namespace, "event_type": "latency" if fault != "errors"
             else "errors", "timestamp": detected, "severity": "critical",
             "labels": {"detector": "baynet-generator", "mesh": mesh}}
    truth = {"mesh": mesh, "fault_service": fault_service, "fault": fault, "fault_start": fault_start,
             "detected_at": detected}
    return Incident(mesh, namespace, fault_service, fault, fault_start, event, gen.spans, truth)


_OPS = ("GET /items/{n}", "POST /orders/{n}", "GET /health", "PUT /cart/{n}")


def incident_logs(incident: Incident, seed: int = 13) -> "pd.DataFrame":
    """The log lines the incident's services would write (``logs.csv`` rows), tied to their spans: one
    INFO line per request a service serves; an ERROR line of a kind never seen before the fault where the
    faulty service fails on its own; a WARN line in a caller whose call failed (its callee's fault, which
    the trace tree tells); a sprinkle of ordinary warnings throughout. Plain messages, no code location:
    the template miner keys them."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for s in incident.spans:
        if s.kind != "server":
            continue
        t = s.start_ns / 1e9
        stamp = f"2024-01-01T00:00:{(t % 60):06.3f}Z"
        n = rng.randint(1, 99999)
        rows.append((t, s.service, s.trace_id, s.span_id, f"{stamp} INFO  [{s.service}] handled "
                     f"{rng.choice(_OPS).format(n=n)} in {(s.end_ns - s.start_ns) / 1e6:.1f} ms"))
        if rng.random() < 0.01:
            rows.append((t + 1e-4, s.service, s.trace_id, s.span_id,
                         f"{stamp} WARN  [{s.service}] slow downstream pool, {rng.randint(2, 9)} waiting"))
        if s.failed:
            own = s.service == incident.fault_service and t >= incident.fault_start
            line = (f"{stamp} ERROR [{s.service}] request {n} failed: invariant broken in {s.service} handler"
                    if own else f"{stamp} WARN  [{s.service}] upstream call failed with status 500, request {n}")
            rows.append((t + 2e-4, s.service, s.trace_id, s.span_id, line))
    frame = pd.DataFrame(rows, columns=["time", "service", "trace_id", "span_id", "line"])
    frame.insert(2, "pod", frame["service"] + "-0")
    frame.insert(5, "level", "")
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def istio_openmetrics(spans: list[Span], namespace: str, step_s: int = 15) -> str:
    """``istio_requests_total`` counters (both reporters, as real sidecars report) from the spans'
    cross-service calls, in OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``."""
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    calls: dict[tuple[str, str, str], list[float]] = {}
    for s in spans:
        if s.kind != "server" or not s.parent_span_id:
            continue
        client = by_id.get((s.trace_id, s.parent_span_id))
        if client is None or client.service == s.service:
            continue
        code = str(s.http_status or 200)
        calls.setdefault((client.service, s.service, code), []).append(s.start_ns / 1e9)
    if not calls:
        return "# EOF\n"
    t0 = int(min(min(v) for v in calls.values())) // step_s * step_s
    t1 = int(max(max(v) for v in calls.values())) + step_s
    lines = ["# HELP istio_requests Total requests.", "# TYPE istio_requests counter"]
    for (src, dst, code), times in sorted(calls.items()):
        times.sort()
        for reporter in ("source", "destination"):
            labels = (f'reporter="{reporter}",source_workload="{src}",source_workload_namespace="{namespace}",'
                      f'source_canonical_service="{src}",source_canonical_revision="latest",'
                      f'destination_workload="{dst}",destination_workload_namespace="{namespace}",'
                      f'destination_service="{dst}.{namespace}.svc.cluster.local",destination_service_name="{dst}",'
                      f'destination_service_namespace="{namespace}",destination_canonical_service="{dst}",'
                      f'destination_canonical_revision="latest",request_protocol="http",response_code="{code}",'
                      f'response_flags="-"')
            i = 0
            for ts in range(t0, t1, step_s):
                while i < len(times) and times[i] <= ts:
                    i += 1
                lines.append(f"istio_requests_total{{{labels}}} {i} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write_incident(incident: Incident, directory: Path) -> dict[str, Path]:
    """Write traces, Istio and Tempo metrics-generator series, log lines, the event and (apart) the ground truth under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_traces(incident.spans, directory / "traces")
    om = directory / "istio.om"
    # what the mesh's sidecars and Tempo's metrics-generator would have written to Prometheus
    om.write_text(istio_openmetrics(incident.spans, incident.namespace).removesuffix("# EOF\n")
                  + generator_openmetrics(incident.spans))
    logs = directory / "logs.csv"
    incident_logs(incident).to_csv(logs, index=False, float_format="%.15g")
    event = directory / "event.json"
    event.write_text(json.dumps(incident.event, indent=1))
    truth = directory / "truth" / "truth.json"
    truth.parent.mkdir(exist_ok=True)
    truth.write_text(json.dumps(incident.truth, indent=1))
    return {"traces": directory / "traces", "openmetrics": om, "logs": logs, "event": event, "truth": truth}


LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _pod(service: str, rng: random.Random) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return (f"{service}-{''.join(rng.choice('0123456789abcdef') for _ in range(10))}-"
            f"{''.join(rng.choice(alphabet) for _ in range(5))}")


def container_openmetrics(incident: Incident, step_s: int = 15, seed: int = 11) -> str:
    """Container and request-latency series of every service, as cAdvisor and the Istio sidecars publish
    them: ``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes``,
    ``container_network_{receive,transmit}_bytes_total`` and ``istio_request_duration_milliseconds_bucket``
    (both reporters: the service's server spans, and its callers' client spans).

    CPU follows the service's own work (server span time without its calls); a ``latency`` or ``gray``
    fault is CPU contention in the faulty container (it also uses 0.3 cores more). Latency buckets count
    the server spans by duration."""
    rng = random.Random(seed)
    ns = incident.namespace
    services = sorted(MESHES[incident.mesh]["services"])
    spans = incident.spans
    t0 = int(min(s.start_ns for s in spans) // 10**9) // step_s * step_s
    t1 = int(max(s.end_ns for s in spans) // 10**9) + step_s
    steps = list(range(t0, t1, step_s))
    child_ns: dict[tuple[str, str], int] = {}
    for s in spans:
        if s.kind == "client":
            child_ns[(s.trace_id, s.parent_span_id)] = child_ns.get((s.trace_id, s.parent_span_id), 0) + (
                s.end_ns - s.start_ns)
    work = {svc: [0.0] * len(steps) for svc in services}
    requests = {svc: [0] * len(steps) for svc in services}
    # per reporter: "destination" counts the service's server spans, "source" its callers' client spans
    buckets = {(rep, svc): [[0] * (len(LATENCY_BUCKETS_MS) + 1) for _ in steps]
               for rep in ("destination", "source") for svc in services}
    for s in spans:
        callee = s.service if s.kind == "server" else (s.attributes or {}).get("peer.service")
        i = (s.start_ns // 10**9 - t0) // step_s
        if s.kind not in ("server", "client") or callee not in work or not 0 <= i < len(steps):
            continue
        dur = s.end_ns - s.start_ns
        if s.kind == "server":
            work[s.service][i] += max(dur - child_ns.get((s.trace_id, s.span_id), 0), 0) / 1e9
            requests[s.service][i] += 1
        ms = dur / 1e6
        b = next((k for k, le in enumerate(LATENCY_BUCKETS_MS) if ms <= le), len(LATENCY_BUCKETS_MS))
        buckets[("destination" if s.kind == "server" else "source", callee)][i][b] += 1
    pods = {svc: _pod(svc, rng) for svc in services}
    lines: list[str] = []

    def family(name: str, kind: str, series: list[tuple[str, list[float]]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        sample = f"{name}_total" if kind == "counter" else name
        for labels, values in series:
            lines.extend(f"{sample}{{{labels}}} {v:.6g} {ts}" for ts, v in zip(steps, values))

    cpu, mem, rx, tx, lat = [], [], [], [], []
    for svc in services:
        labels = f'namespace="{ns}",pod="{pods[svc]}",container="{svc}"'
        total, mem_base, values_cpu, values_mem = 0.0, rng.uniform(150e6, 400e6), [], []
        for i, ts in enumerate(steps):
            faulty = svc == incident.fault_service and ts >= incident.fault_start and incident.fault != "errors"
            rate = 0.02 + work[svc][i] / step_s + abs(rng.gauss(0, 0.004)) + (0.3 if faulty else 0.0)
            total += rate * step_s
            values_cpu.append(total)
            values_mem.append(mem_base * (1 + rng.gauss(0, 0.003)))
        cpu.append((labels, values_cpu))
        mem.append((labels, values_mem))
        pod_labels = f'namespace="{ns}",pod="{pods[svc]}",interface="eth0"'
        acc_rx, acc_tx, v_rx, v_tx = 0.0, 0.0, [], []
        for i in range(len(steps)):
            acc_rx += requests[svc][i] * rng.uniform(1800, 2200) + 500
            acc_tx += requests[svc][i] * rng.uniform(7000, 9000) + 500
            v_rx.append(acc_rx)
            v_tx.append(acc_tx)
        rx.append((pod_labels, v_rx))
        tx.append((pod_labels, v_tx))
        if not any(requests[svc]):
            continue
        for reporter in ("destination", "source"):
            counts = buckets[(reporter, svc)]
            base = (f'reporter="{reporter}",destination_canonical_service="{svc}",'
                    f'destination_workload="{svc}",destination_workload_namespace="{ns}"')
            cumulative = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            per_le: list[list[float]] = [[] for _ in cumulative]
            for i in range(len(steps)):
                running = 0
                for b in range(len(cumulative)):
                    cumulative[b] += counts[i][b]
                    running += cumulative[b]
                    per_le[b].append(running)
            for b, le in enumerate([*LATENCY_BUCKETS_MS, "+Inf"]):
                lat.append((f'{base},le="{le}"', per_le[b]))
    family("container_cpu_usage_seconds", "counter", cpu)
    family("container_memory_working_set_bytes", "gauge", mem)
    family("container_network_receive_bytes", "counter", rx)
    family("container_network_transmit_bytes", "counter", tx)
    family("istio_request_duration_milliseconds_bucket", "unknown", lat)
    return "\n".join(lines) + "\n"
