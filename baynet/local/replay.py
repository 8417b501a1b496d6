"""``baynet bundle replay``: a bundle through the real path.

Replay starts the local stack in a working directory: the bundle's traces in the Tempo-compatible
server; its log lines pushed into the Loki-compatible one; its signals, resources and changes rendered as Istio, cAdvisor and kube-state-metrics series (:mod:`baynet.local.openmetrics`)
and backfilled into Debian's Prometheus with ``promtool``; its event on the (moto) SQS queue; then the
consumer runs the incident flow, which reads traces and metrics as it would from a live mesh. The metric
step the flow reads at follows the bundle's data (its median spacing, at least 1 s). Bundles with only
traces, only signals/resources, or both all replay.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from baynet.bundles.read import load_bundle
from baynet.consumer import IncidentRunner, run_consumer
from baynet.evidence.steps import data_step
from baynet.local.openmetrics import render
from baynet.local.stack import LocalStack, prometheus_available, server_logs_to

Step = Callable[[str], None]


def replay(path: Path, run_incident: IncidentRunner, workdir: Path | None = None, *, step: Step | None = None
           ) -> dict[str, Any]:
    """Analyse the bundle at ``path`` through the real path (``run_incident``: the incident flow); returns
    the stored ``ranking.json`` summary plus ``replay`` (what was loaded, what was not)."""
    from baynet.artifacts import LocalStore

    say = step or (lambda line: None)
    bundle = load_bundle(path)
    work = Path(workdir or tempfile.mkdtemp(prefix="baynet-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    server_logs_to(work / "servers.log")
    namespace = bundle.event.namespace or "default"
    rendered = render(bundle.signals, bundle.resources, namespace, bundle.changes)
    om = None
    if rendered.series:
        if not prometheus_available():
            raise RuntimeError("the bundle has metrics, and replaying them needs Debian's prometheus and promtool "
                               "(apt-get install -y prometheus)")
        om = work / "metrics.om"
        om.write_text(rendered.text)
    traces = path / "traces" if bundle.spans is not None and len(bundle.spans) else None
    logs = bundle.logs if bundle.logs is not None and len(bundle.logs) else None
    if traces is None and om is None and logs is None:
        raise ValueError(f"{path}: the bundle has neither traces nor metric rows nor log lines: nothing to analyse")
    metric_step = data_step(bundle.signals, bundle.resources)
    event = bundle.event.model_dump(mode="json")
    with LocalStack(work, traces=traces, openmetrics=om, logs=logs, namespace=namespace) as stack:
        overrides: dict[str, Any] = {"sqs_wait_seconds": 1, "namespace": namespace,
                                     "artifacts_dir": work / "artifacts"}
        if metric_step:
            overrides["metrics_step_s"] = max(1, int(round(metric_step)))
        settings = stack.settings(**overrides)
        say(f"stack up: Tempo {stack.tempo.url} ({len(stack.tempo.store.traces)} traces)"
            + (f", Prometheus {stack.prometheus.url} ({rendered.series} series)" if stack.prometheus else "")
            + (f", Loki {stack.loki.url} ({stack.loki.store.lines} lines)" if stack.loki else ""))
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
        say(f"event {event['id']} on the queue; running the incident flow")
        outcomes = run_consumer(settings, run_incident, max_messages=1, idle_polls=5)
        if not outcomes or outcomes[0].result != "analysed":
            raise RuntimeError(f"the replayed event was not analysed: "
                               f"{outcomes[0].detail if outcomes else 'no message received'}")
        summary = LocalStore(settings.artifacts_dir).get_json(f"incidents/{event['id']}/ranking.json")
    summary["replay"] = {"bundle": str(path), "workdir": str(work),
                         "spans": 0 if bundle.spans is None else len(bundle.spans),
                         "log_lines": 0 if logs is None else len(logs),
                         "metric_series": rendered.series, "metric_step_s": metric_step,
                         "not_replayed": rendered.skipped}
    return summary
