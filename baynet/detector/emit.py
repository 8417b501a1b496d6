"""From per-window flags to anomaly events on the queue, in the format the incident flow accepts.

Each event is a CloudEvents 1.0 envelope whose ``data`` is Baynet's plain event. Its id is derived from
(service, namespace, onset time, status), so a detector run that looks at overlapping windows again sends
the same id and the consumer treats it as a duplicate. A service *fires* at the first flagged window and is
*resolved* after ``clear_windows`` unflagged windows in a row; the state between runs (what is firing, the
last window looked at) is kept in the artifact store.

One fault makes many services deviate, and a page per service is noise. Firings are therefore grouped into
*incidents* (:func:`group_events`): services that start firing within ``group_s`` of each other, or of an
incident still open, are one incident, and only one event goes out for it — named after the most
upstream firing service (one that no other firing service reaches through calls, in the last topology
snapshot; among several, the highest score), with the others in its ``labels.also_firing``. The RCA then
looks downstream from that service, where the others are. The members' own resolved events are not sent;
the incident's is, when its named service resolves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

EVENT_TYPES = {"cpu": "cpu", "mem": "memory", "net_rx": "network", "net_tx": "network", "load": "traffic",
               "lat_p50": "latency", "lat_p90": "latency", "lat_p99": "latency", "errors": "errors"}
SOURCE = "baynet/detector"
STATE_KEY = "detector/state.json"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def event_id(service: str, namespace: str, onset: float, status: str) -> str:
    return hashlib.sha256(f"{service}|{namespace}|{_iso(onset)}|{status}".encode()).hexdigest()[:32]


def cloud_event(service: str, namespace: str, event_type: str, at: float, onset: float, status: str,
                score: float, model_version: str, critical_at: float = 0.9) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id(service, namespace, onset, status),
        "source": SOURCE,
        "type": f"io.baynet.anomaly.{event_type}",
        "subject": service,
        "time": _iso(at),
        "datacontenttype": "application/json",
        "data": {"service": service, "namespace": namespace, "event_type": event_type, "timestamp": _iso(at),
                 "severity": "critical" if score >= critical_at else "warning", "score": round(float(score), 4),
                 "status": status, "labels": {"detector": SOURCE, "model_version": model_version,
                                              "onset": _iso(onset)}},
    }


@dataclass
class ServiceScores:
    service: str
    times: np.ndarray      # window end times (unix s), ascending
    scores: np.ndarray     # model score per window (a probability; robust z for zmax)
    kinds: list[str]       # the family deviating most per window (-> event type)


def plan_events(s: ServiceScores, threshold: float, state: dict[str, Any] | None, *, namespace: str,
                model_version: str, clear_windows: int = 3, not_before: float | None = None,
                critical_at: float = 0.9) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events for the windows of ``s`` not yet seen (after ``state['last']``), and the new state. An event
    is ``critical`` from a score of ``critical_at`` (a probability; for ``zmax``, twice its threshold)."""
    state = dict(state or {})
    last = state.get("last", float("-inf"))
    firing = state.get("onset")
    quiet = int(state.get("quiet", 0))
    events: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for t, score, kind in zip(s.times, s.scores, s.kinds):
        if t <= last or (not_before is not None and t < not_before):
            continue
        flagged = score >= threshold
        if firing is None and flagged:
            firing, quiet = float(t), 0
            current = cloud_event(s.service, namespace, EVENT_TYPES.get(kind, "anomaly"), t, firing, "firing",
                                  score, model_version, critical_at)
            events.append(current)
            state["type"] = current["data"]["event_type"]  # the resolved event, maybe in a later run, says it too
        elif firing is not None:
            quiet = 0 if flagged else quiet + 1
            if flagged and current is not None:
                # still firing in this run: the event reports the latest window that shows the anomaly, so
                # the analysis it triggers looks at the anomaly rather than at its first minute
                current["time"] = current["data"]["timestamp"] = _iso(t)
                current["data"]["score"] = round(max(current["data"]["score"], float(score)), 4)
                if current["data"]["score"] >= critical_at:
                    current["data"]["severity"] = "critical"
            if quiet >= clear_windows:
                events.append(cloud_event(s.service, namespace, state.get("type", "anomaly"), t, firing,
                                          "resolved", score, model_version, critical_at))
                firing, quiet, current = None, 0, None
        last = float(t)
    state.update({"last": last, "onset": firing, "quiet": quiet})
    return events, state


INCIDENT_KEY = "_incident"


def _t(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()


def _onset(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(ev["data"]["labels"]["onset"].replace("Z", "+00:00")).timestamp()


def group_events(events: list[dict[str, Any]], state: dict[str, Any] | None, callees: dict[str, list[str]],
                 group_s: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One event per incident (see the module doc). ``state`` is carried between runs: ``open``, the open
    incident (named service, members, last firing time) or None, and ``absorbed``, the services whose
    firing joined an incident and whose resolved event is therefore not sent. Returns the events to send
    and the new state."""
    from baynet.detector.incidents import group_services

    state = state or {}
    incident = dict(state["open"]) if state.get("open") else None
    absorbed = set(state.get("absorbed", []))
    firing = sorted((e for e in events if e["data"]["status"] == "firing"), key=lambda e: (_onset(e), e["subject"]))
    resolved = [e for e in events if e["data"]["status"] != "firing"]
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(firing):
        ev = firing[i]
        if incident and _onset(ev) - incident["last"] <= group_s:
            incident["members"] = sorted(set(incident["members"]) | {ev["subject"]})
            incident["last"] = max(incident["last"], _t(ev))
            absorbed.add(ev["subject"])
            i += 1
            continue
        batch = [ev]  # firings chained within group_s of each other start one incident
        while i + len(batch) < len(firing) and _onset(firing[i + len(batch)]) - max(map(_t, batch)) <= group_s:
            batch.append(firing[i + len(batch)])
        named = group_services([(e["subject"], e["data"]["score"]) for e in batch], callees)
        head = next(e for e in batch if e["subject"] == named)
        others = sorted({e["subject"] for e in batch} - {named})
        head["data"]["labels"]["also_firing"] = ",".join(others)
        out.append(head)
        absorbed |= set(others)
        absorbed.discard(named)
        incident = {"service": named, "members": others, "onset": _onset(head), "last": max(map(_t, batch)),
                    "id": head["id"]}
        i += len(batch)
    for ev in resolved:
        if ev["subject"] in absorbed:
            absorbed.discard(ev["subject"])  # a member's end is not news; the incident's end is
            continue
        out.append(ev)
        if incident and ev["subject"] == incident["service"]:
            incident = None
    out.sort(key=lambda e: (_t(e), e["data"]["status"] != "resolved"))
    return out, {"open": incident, "absorbed": sorted(absorbed)}


def send_events(store: Any, model: Any, scores: list[ServiceScores], *, namespace: str, not_before: float,
                clear_windows: int, sqs: Any, queue_url: str | None, threshold: float | None = None,
                group_s: float | None = None, callees: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Plan the events of windows not seen before, group them into incidents (``group_s``; None: one event
    per service) and put them on the queue; then save the state. ``threshold`` overrides the model's (a
    threshold calibrated on this mesh's reference).

    Sent first, saved second: a crash in between re-sends, which the consumer drops as a duplicate,
    rather than losing an event."""
    from baynet.detector.models import critical_score

    state_all = store.get_json(STATE_KEY) or {}
    ns_state = dict(state_all.get(namespace, {}))
    events: list[dict[str, Any]] = []
    bar = model.threshold if threshold is None else threshold
    critical_at = critical_score(getattr(model, "kind", ""), bar)
    for s in scores:
        planned, ns_state[s.service] = plan_events(s, bar, ns_state.get(s.service), namespace=namespace,
                                                   model_version=model.version, clear_windows=clear_windows,
                                                   not_before=not_before, critical_at=critical_at)
        events += planned
    if group_s is not None:
        grouping = dict(ns_state.get(INCIDENT_KEY) or {})
        incident = grouping.get("open")
        if incident:  # members still firing keep the incident open, though they send nothing new
            for s in scores:
                if s.service in {incident["service"], *incident["members"]} and (s.scores >= bar).any():
                    incident = {**incident, "last": max(incident["last"], float(s.times[s.scores >= bar].max()))}
            grouping["open"] = incident
        events, ns_state[INCIDENT_KEY] = group_events(events, grouping, callees or {}, group_s)
    for ev in events:
        if sqs is not None and queue_url:
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(ev))
    state_all[namespace] = ns_state
    store.put_json(STATE_KEY, state_all)
    return events
