"""Scheduled gray-failure detection: Prometheus series -> stored model -> anomaly events on SQS."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from baynet.artifacts import make_store
from baynet.settings import Settings
from tasks.detect import fetch_metrics, plan_and_send, score_windows


@flow(name="detect-anomalies", log_prints=True)
def detect_anomalies(end: float | None = None, lookback_s: int | None = None, namespace: str | None = None,
                     model_version: str = "latest", send: bool = True, settings: Settings | None = None
                     ) -> dict[str, Any]:
    """Score the last ``lookback_s`` of every service against the hour before it and send new events.

    ``end`` defaults to now; everything else comes from the BAYNET_DETECTOR_* settings (``settings``, when
    an in-process caller passes them; else the environment's)."""
    settings = settings or Settings()
    if not settings.prometheus_url:
        raise ValueError("BAYNET_PROMETHEUS_URL is not set: the detector reads its series from Prometheus")
    end = float(end if end is not None else time.time())
    step = settings.detector_step_s
    lookback = lookback_s or settings.detector_lookback_s
    namespace = namespace or settings.namespace
    warmup = step * settings.detector_warmup_windows  # scored for context, never the source of an event
    observed_from = end - lookback - warmup
    start = observed_from - settings.detector_baseline_s
    store = make_store(settings)
    frames = fetch_metrics(settings, start, end, step, namespace)
    scored = score_windows(store, frames, observed_from, model_version, step_s=step,
                           false_budget=settings.detector_false_incidents_per_hour,
                           group_windows=settings.detector_group_windows)
    if scored is None:
        return {"events": [], "model_version": None, "top_scores": [],
                "skipped": "no detector model in the artifact store: run 'baynet detect train'"}
    sqs = queue_url = None
    if send:
        import boto3

        sqs = boto3.client("sqs", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region)
        queue_url = settings.sqs_queue_url
        if not queue_url:
            raise ValueError("BAYNET_SQS_QUEUE_URL is not set: nowhere to send anomaly events")
    events = plan_and_send(store, scored, namespace=namespace, not_before=end - lookback,
                           clear_windows=settings.detector_clear_windows, sqs=sqs, queue_url=queue_url,
                           group_s=settings.detector_group_windows * step)
    get_run_logger().info("%d services scored, %d events", len(scored["scores"]), len(events))
    top = sorted(((float(s.scores.max()), s.service) for s in scored["scores"] if len(s.scores)), reverse=True)
    return {"events": events, "model_version": scored["model"].version,
            "top_scores": [{"service": svc, "score": round(sc, 4)} for sc, svc in top[:5]]}
