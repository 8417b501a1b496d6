"""Detector tasks: read metric series, score them with the stored model, put events on the queue."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from baynet.detector.emit import send_events
from baynet.detector.models import load_model
from baynet.detector.run import score_series, split_frames
from baynet.detector.series import fetch_series, load_metric_map


@task(retries=2, retry_delay_seconds=10)
def fetch_metrics(prometheus_url: str, metric_map: str, start: float, end: float, step_s: float,
                  namespace: str) -> dict[str, Any]:
    frames = fetch_series(prometheus_url, load_metric_map(metric_map), start, end, step_s, namespace=namespace)
    get_run_logger().info("read %d services x %s families from %s", len(frames),
                          sorted({c for f in frames.values() for c in f.columns}), prometheus_url)
    return frames


@task
def score_windows(store: Any, frames: dict[str, Any], observed_from: float, model_version: str
                  ) -> dict[str, Any] | None:
    """Scores per service, or None when no model has been trained yet (a fresh install: not a failure)."""
    try:
        model = load_model(store, model_version)
    except FileNotFoundError as exc:
        if model_version != "latest":
            raise
        get_run_logger().warning("%s; nothing scored", exc)
        return None
    scores = score_series(model, split_frames(frames, observed_from))
    return {"model": model, "scores": scores}


@task
def plan_and_send(store: Any, scored: dict[str, Any], *, namespace: str, not_before: float, clear_windows: int,
                  sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    events = send_events(store, scored["model"], scored["scores"], namespace=namespace, not_before=not_before,
                         clear_windows=clear_windows, sqs=sqs, queue_url=queue_url)
    for ev in events:
        get_run_logger().info("%s %s %s at %s (score %.2f)", ev["data"]["status"], ev["data"]["event_type"],
                              ev["data"]["service"], ev["time"], ev["data"]["score"])
    return events
