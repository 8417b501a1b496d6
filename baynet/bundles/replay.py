"""``baynet bundle replay`` and ``baynet bundle export``: a bundle through the real path, and back.

**Replay** starts the local stack in a working directory: the bundle's traces in the Tempo-compatible
server; its signals and resources rendered as Istio and cAdvisor series (:mod:`baynet.bundles.openmetrics`)
and backfilled into Debian's Prometheus with ``promtool``; its event on the (moto) SQS queue; then the
consumer runs the incident flow, which reads traces and metrics as it would from a live mesh. The metric
step the flow reads at follows the bundle's data (its median spacing, at least 1 s). Bundles with only
traces, only signals/resources, or both all replay.

**Export** writes the bundle of an incident from the configured Tempo and Prometheus: the traces of the
windows the analysis reads (OTLP JSON), per-call-edge golden signals (``istio_requests_total`` and
``istio_request_duration_milliseconds`` by source, destination, reporter and destination version, at
the metric step), resource series through the metric map, the topology and the event. No ``truth.json``:
that is the operator's to add.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from baynet.bundles.openmetrics import render
from baynet.bundles.read import load_bundle
from baynet.evidence.metrics import data_step

Step = Callable[[str], None]


def replay(path: Path, workdir: Path | None = None, *, step: Step | None = None) -> dict[str, Any]:
    """Analyse the bundle at ``path`` through the real path; returns the stored ``ranking.json`` summary
    plus ``replay`` (what was loaded, what was not)."""
    from baynet.artifacts import LocalStore
    from baynet.cli import run_consumer, server_logs_to
    from baynet.settings import Settings
    from baynet.stack import LocalStack, prometheus_available

    say = step or (lambda line: None)
    bundle = load_bundle(path)
    work = Path(workdir or tempfile.mkdtemp(prefix="baynet-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    server_logs_to(work / "servers.log")
    namespace = bundle.event.namespace or "default"
    rendered = render(bundle.signals, bundle.resources, namespace)
    om = None
    if rendered.series:
        if not prometheus_available():
            raise RuntimeError("the bundle has metrics, and replaying them needs Debian's prometheus and promtool "
                               "(apt-get install -y prometheus)")
        om = work / "metrics.om"
        om.write_text(rendered.text)
    traces = path / "traces" if bundle.spans is not None and len(bundle.spans) else None
    if traces is None and om is None:
        raise ValueError(f"{path}: the bundle has neither traces nor metric rows: nothing to analyse")
    metric_step = data_step(bundle.signals, bundle.resources)
    event = bundle.event.model_dump(mode="json")
    saved = dict(os.environ)
    try:
        with LocalStack(work, traces=traces, openmetrics=om) as stack:
            os.environ.update(stack.env)
            os.environ.update({"BAYNET_SQS_WAIT_SECONDS": "1", "BAYNET_NAMESPACE": namespace,
                               "BAYNET_ARTIFACTS_DIR": str(work / "artifacts")})
            if metric_step:
                os.environ["BAYNET_METRICS_STEP_S"] = str(max(1, int(round(metric_step))))
            say(f"stack up: Tempo {stack.tempo.url} ({len(stack.tempo.store.traces)} traces)"
                + (f", Prometheus {stack.prometheus.url} ({rendered.series} series)" if stack.prometheus else ""))
            settings = Settings()
            stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
            say(f"event {event['id']} on the queue; running the incident flow")
            outcomes = run_consumer(settings, max_messages=1, idle_polls=5)
            if not outcomes or outcomes[0].result != "analysed":
                raise RuntimeError(f"the replayed event was not analysed: "
                                   f"{outcomes[0].detail if outcomes else 'no message received'}")
            summary = LocalStore(settings.artifacts_dir).get_json(f"incidents/{event['id']}/ranking.json")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    summary["replay"] = {"bundle": str(path), "workdir": str(work),
                         "spans": 0 if bundle.spans is None else len(bundle.spans),
                         "metric_series": rendered.series, "metric_step_s": metric_step,
                         "not_replayed": rendered.skipped}
    return summary


# --- export ---------------------------------------------------------------------------------------


def export(event_file: Path, out: Path, *, step: Step | None = None) -> dict[str, Any]:
    """Write the bundle of the incident in ``event_file`` from the configured Tempo and Prometheus."""
    from baynet.analysis import Windows, edge_signals, fetch_families, fetch_spans, read_topology
    from baynet.datasets.convert import ConvertError, _fresh
    from baynet.events import parse_object
    from baynet.generator import write_traces
    from baynet.otlp import Span
    from baynet.settings import Settings

    say = step or (lambda line: None)
    settings = Settings()
    events = parse_object(json.loads(Path(event_file).read_text()))
    if len(events) != 1:
        raise ValueError(f"{event_file} holds {len(events)} events; export one incident at a time")
    event = events[0]
    windows = Windows.around(event.unix, settings)
    try:
        _fresh(out)
    except ConvertError as exc:
        raise ValueError(str(exc)) from None
    tmp = Path(tempfile.mkdtemp(prefix="baynet-export-", dir=out.parent))
    try:
        (tmp / "bundle.json").write_text(json.dumps({"format": 1}) + "\n")
        (tmp / "event.json").write_text(json.dumps(event.model_dump(mode="json"), indent=1) + "\n")
        written: dict[str, Any] = {"event": event.id}
        spans, stats = fetch_spans(event, windows, settings)
        if len(spans):
            rows = spans.to_dict("records")
            span_objs = [Span(r["trace_id"], r["span_id"], r["parent_span_id"], r["service"], r["name"],
                              "unspecified", int(r["start_ns"]), int(r["end_ns"]),
                              "error" if r["failed"] else "unset", resource={"service.name": r["service"]})
                         for r in rows]
            write_traces(span_objs, tmp / "traces")
        written["spans"] = len(spans)
        say(f"traces: {stats.get('traces', 0)} from {settings.tempo_url}, {len(spans)} spans")
        if settings.prometheus_url:
            signals = edge_signals(windows, settings)  # every edge, reporter and quantile: the bundle's rows
            resources = fetch_families(windows, settings)[2] if settings.metrics_evidence else None
            if signals is not None and len(signals):
                signals.to_csv(tmp / "signals.csv", index=False, float_format="%.15g")
            if resources is not None and len(resources):
                resources.to_csv(tmp / "resources.csv", index=False, float_format="%.15g")
            written["signals"] = 0 if signals is None else len(signals)
            written["resources"] = 0 if resources is None else len(resources)
            say(f"metrics: {written['signals']} signal rows, {written['resources']} resource rows from "
                f"{settings.prometheus_url}")
        topo = read_topology(settings, event.unix)
        if topo is not None and topo.edges:
            pd.DataFrame(sorted(topo.edges), columns=["source", "destination"]).to_csv(tmp / "topology.csv",
                                                                                      index=False)
            written["edges"] = len(topo.edges)
        out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return written
