"""Detector tasks: read metric series, score them with the stored model, put events on the queue."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from baynet.detector.calibrate import calibrate
from baynet.detector.emit import send_events
from baynet.detector.models import load_model
from baynet.detector.run import score_series, split_frames
from baynet.families import fetch_series, load_metric_map
from baynet.prometheus import PrometheusClient
from baynet.settings import DEFAULT_GAP_WINDOWS, Settings
from baynet.state import SnapshotStore


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def fetch_metrics(settings: Settings, start: float, end: float, step_s: float, namespace: str) -> dict[str, Any]:
    """Every family of the metric map, per service, from ``start`` to ``end`` at ``step_s``."""
    with PrometheusClient.from_settings(settings) as prometheus:
        frames = fetch_series(prometheus, load_metric_map(settings.detector_metric_map), start, end, step_s,
                              namespace=namespace)
    get_run_logger().info("read %d services x %s families from %s", len(frames),
                          sorted({c for f in frames.values() for c in f.columns}), settings.prometheus_url)
    return frames


@task(cache_policy=NO_CACHE)  # its inputs (a store client) cannot be hashed; every run scores anew
def score_windows(store: Any, frames: dict[str, Any], observed_from: float, model_version: str,
                  step_s: float | None = None, false_budget: float | None = None,
                  group_windows: int = DEFAULT_GAP_WINDOWS
                  ) -> dict[str, Any] | None:
    """Scores per service, or None when no model has been trained yet (a fresh install: not a failure).
    With ``false_budget``, the threshold is calibrated on the mesh's own reference
    (``baynet.detector.calibrate``)."""
    try:
        model = load_model(store, model_version)
    except FileNotFoundError as exc:
        if model_version != "latest":
            raise
        get_run_logger().warning("%s; nothing scored", exc)
        return None
    series = split_frames(frames, observed_from)
    scores = score_series(model, series)
    threshold = model.threshold
    if false_budget is not None and step_s:
        cal = calibrate(model, series, step_s, false_budget, group_windows)
        threshold = cal.threshold
        get_run_logger().info("threshold %.3g (%s)", threshold, cal.reason)
    return {"model": model, "scores": scores, "threshold": threshold}


@task(cache_policy=NO_CACHE)
def plan_and_send(store: Any, scored: dict[str, Any], *, namespace: str, not_before: float, clear_windows: int,
                  sqs: Any, queue_url: str, group_s: float | None = None) -> list[dict[str, Any]]:
    topology = SnapshotStore(store).latest(namespace) if group_s is not None else None
    callees = {s: topology.callees(s) for s in topology.services} if topology else {}
    events = send_events(store, scored["model"], scored["scores"], namespace=namespace, not_before=not_before,
                         clear_windows=clear_windows, sqs=sqs, queue_url=queue_url,
                         threshold=scored.get("threshold"), group_s=group_s, callees=callees)
    for ev in events:
        get_run_logger().info("%s %s %s at %s (score %.2f)", ev["data"]["status"], ev["data"]["event_type"],
                              ev["data"]["service"], ev["time"], ev["data"]["score"])
    return events
