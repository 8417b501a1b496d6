"""State shared by every analysis, on any number of hosts: all of it in the artifact store.

* **The model** (:class:`ModelLog`). Each analysis appends one update record,
  ``model/<ns>/log/<event time>-<event id>.json`` (the topology it saw and its per-edge span counts),
  written create-only: a second analysis of the same event (a duplicate message, a retry) finds it there
  and adds nothing. The model is the fold of every record **in event-time order** (ties by event id)
  over the base model, so it does not depend on how many consumers ran, on which host, or in which order
  their analyses finished: with forgetting, updates do not commute, and arrival order would otherwise
  leak into the counts. ``model/<ns>/latest.json`` is a cache of that fold, tagged with how many records
  it folded and a digest of their keys; a reader whose listing extends the cache folds only the new
  records, one that finds a record older than the cache's last (an incident that finished late) folds
  from the base again. The cache is written compare-and-swap; losing that race loses nothing, because
  the log is the truth. ``model/<ns>/base.json`` is a model from before the log (kept from older
  versions' ``latest.json``), or absent (the empty model).
* **Confirmed root causes** (:class:`Confirmations`): ``baynet confirm`` adds a record beside the
  incident's update, ``model/<ns>/log/<event time>-<event id>~confirm-<when>.json`` (who, when, the
  service, the incident's blast radius; or a withdrawal). The fold applies, per incident, only its latest
  confirmation record, and only if not withdrawn: :meth:`baynet.dbn.DBNModel.confirm` moves the
  root-cause priors, and the propagation strengths on the confirmed fault's way up (the record keeps
  what the incident's states said about it, :func:`baynet.dbn.confirmed_propagation`). A new confirmation record (which may supersede one already folded) makes the next
  read fold from the base again, in event-time order: the model is the same whenever it arrived.
* **Topology snapshots** (:class:`SnapshotStore`): ``topology/<ns>/latest.json`` plus one file per stored
  change; "read the last snapshot, diff, store when changed" is one compare-and-swap on ``latest.json``,
  retried when another writer got there first, so two refreshes on two hosts never store the same graph
  twice and never keep two different "last snapshots".
* **Claims** (:class:`Claims`): ``claims/<event id>.json`` is a lease (owner, expiry) taken create-only
  before an analysis and renewed by the consumer's heartbeat; another consumer that receives the same
  event while the lease is live collapses its message as a duplicate (the holder's own message stays on
  the queue until its analysis completes, so nothing is lost). An expired lease (its holder died) is
  taken over compare-and-swap.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from baynet.artifacts import ArtifactStore
from baynet.dbn import DBNModel, confirmed_propagation
from baynet.evidence.fuse import states_from_evidence
from baynet.topology import Topology

log = logging.getLogger(__name__)

EDGE_FIELDS = ("caller", "callee", "child_bad", "both_bad")
CAS_ATTEMPTS = 20


# --- the model --------------------------------------------------------------------------------------

def update_record(topology: Topology, edges: pd.DataFrame, log_templates: list[str] | None = None
                  ) -> dict[str, Any]:
    """What one incident changes in the model: the topology it saw, its per-edge span counts and the log
    templates its lines were keyed by."""
    rows = edges.reindex(columns=list(EDGE_FIELDS)).to_dict("records") if len(edges) else []
    return {"services": sorted(topology.services), "edges": sorted([a, c] for a, c in topology.edges),
            "edge_stats": [{"caller": str(r["caller"]), "callee": str(r["callee"]),
                            "child_bad": float(r["child_bad"]), "both_bad": float(r["both_bad"])} for r in rows],
            "log_templates": sorted(log_templates or [])}


def apply_update(model: DBNModel, record: dict[str, Any]) -> dict[str, Any]:
    """Fold one record into ``model``: align the structure with its topology, then update the
    propagation strengths from its counts. Returns the structure changes."""
    changes = model.update_structure(set(record["services"]), {(a, c) for a, c in record["edges"]})
    model.update_parameters(record["edge_stats"])
    model.learn_templates(record.get("log_templates", []))
    return changes


CONFIRM = "~confirm-"


def log_key(namespace: str, event_time: datetime, event_id: str) -> str:
    stamp = event_time.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"model/{namespace}/log/{stamp}-{event_id}.json"


class ConfirmationError(ValueError):
    """A confirmation that cannot be taken (no such incident, a service outside its analysis)."""


class Confirmations:
    """Operators' confirmed root causes, kept in the model's log (see the module doc)."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    def add(self, event_id: str, root_cause: str | None, *, by: str = "", note: str = "",
            withdraw: bool = False) -> dict[str, Any]:
        summary = self.store.get_json(f"incidents/{event_id}/ranking.json") if \
            self.store.incident_complete(event_id) else None
        if summary is None:
            raise ConfirmationError(f"no complete analysis of event {event_id!r} in {self.store.location('incidents')}")
        members = [r["service"] for r in summary["ranking"]]
        if not withdraw and root_cause not in members:
            raise ConfirmationError(f"service {root_cause!r} is not among the {len(members)} services analysed for "
                                    f"{event_id!r} ({', '.join(members[:10])}{', ...' if len(members) > 10 else ''})")
        event = summary["event"]
        when = datetime.now(UTC)
        record = {"event_id": event_id, "root_cause": None if withdraw else root_cause, "members": members,
                  "by": by, "note": note, "at": when.isoformat(), "withdrawn": withdraw,
                  "propagation": [] if withdraw else self._propagation(event_id, root_cause, members),
                  "changed": {} if withdraw else dict((summary.get("fetch") or {}).get("change_ages") or {})}
        base = log_key(event["namespace"], datetime.fromisoformat(event["timestamp"]), event_id)[:-len(".json")]
        key = f"{base}{CONFIRM}{when.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:6]}.json"
        self.store.put_if(key, json.dumps(record), None)
        self.store.put_json(f"incidents/{event_id}/confirmation.json", record)
        return record

    def _propagation(self, event_id: str, root_cause: str, members: list[str]) -> list[dict[str, Any]]:
        """The incident's states (``evidence.csv``) and call edges (its ``model.json``) walked up from the
        confirmed root cause; nothing when either is missing."""
        raw, model = self.store.get(f"incidents/{event_id}/evidence.csv"), self.store.get_json(
            f"incidents/{event_id}/model.json")
        if not raw or not model:
            return []
        states = states_from_evidence(pd.read_csv(io.BytesIO(raw)), members).states
        return confirmed_propagation(root_cause, states, model.get("callees", {}))

    def of(self, event_id: str) -> dict[str, Any] | None:
        return self.store.get_json(f"incidents/{event_id}/confirmation.json")


class ModelLog:
    """The persistent model of one namespace as a log of per-incident updates (see the module doc)."""

    def __init__(self, store: ArtifactStore, namespace: str):
        self.store, self.namespace = store, namespace
        self.prefix = f"model/{namespace}/log/"
        self.cache_key = f"model/{namespace}/latest.json"
        self.base_key = f"model/{namespace}/base.json"

    def record(self, event: Any, topology: Topology, edges: pd.DataFrame, log_templates: list[str] | None = None
               ) -> bool:
        """Append this incident's update (create-only). False when the event was recorded before."""
        key = log_key(self.namespace, event.timestamp, event.id)
        record = {"event_id": event.id, "event_time": event.timestamp.isoformat(),
                  **update_record(topology, edges, log_templates)}
        return self.store.put_if(key, json.dumps(record), None) is not None

    def keys(self) -> list[str]:
        return sorted(k for k in self.store.list_keys(self.prefix) if k.endswith(".json"))

    def _fold(self, model: DBNModel, keys: list[str], all_keys: list[str]) -> None:
        latest_confirm: dict[str, str] = {}
        for key in all_keys:  # a confirmation counts only if it is its incident's latest record
            if CONFIRM in key:
                latest_confirm[key.split(CONFIRM)[0]] = key
        for key in keys:
            if CONFIRM in key and latest_confirm.get(key.split(CONFIRM)[0]) != key:
                continue
            record = self.store.get_json(key)
            if record is None:
                continue
            if CONFIRM in key:
                if not record.get("withdrawn"):
                    model.confirm(record["root_cause"], record["members"], record.get("propagation"),
                                  record.get("changed"))
            else:
                apply_update(model, record)

    def _base(self) -> DBNModel:
        data = self.store.get_json(self.base_key)
        if data is None:
            legacy = self.store.get_json(self.cache_key)
            if legacy is not None and "log" not in legacy:
                # latest.json from before the log: it becomes the base the log folds onto
                self.store.put_if(self.base_key, json.dumps(legacy), None)
                data = self.store.get_json(self.base_key)
        return DBNModel.from_json(data) if data else DBNModel()

    @staticmethod
    def _digest(keys: list[str]) -> str:
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()

    def current(self) -> DBNModel:
        """The fold of every recorded update in event-time order (cached in ``latest.json``)."""
        keys = self.keys()
        raw, etag = self.store.get_versioned(self.cache_key)
        cache = json.loads(raw) if raw else None
        folded = 0
        model = None
        if cache and "log" in cache:
            n = int(cache["log"]["folded"])
            # extend the cache only with new incidents: a new confirmation may supersede a folded one
            if n <= len(keys) and self._digest(keys[:n]) == cache["log"]["digest"] and \
                    not any(CONFIRM in k for k in keys[n:]):
                model, folded = DBNModel.from_json(cache["model"]), n
        if model is None:
            model = self._base()
        if folded == len(keys) and cache and "log" in cache:
            return model
        self._fold(model, keys[folded:], keys)
        body = json.dumps({"log": {"folded": len(keys), "digest": self._digest(keys),
                                   "last": keys[-1] if keys else None}, "model": model.to_json()})
        self.store.put_if(self.cache_key, body, etag)  # losing this race loses nothing: the log is the truth
        return model


# --- topology snapshots -----------------------------------------------------------------------------

class SnapshotStore:
    """Topology snapshots under ``topology/<namespace>/`` in the artifact store: ``latest.json`` plus
    one file per stored change (its history)."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    def _latest_key(self, namespace: str) -> str:
        return f"topology/{namespace}/latest.json"

    def latest_versioned(self, namespace: str) -> tuple[Topology | None, str | None]:
        raw, etag = self.store.get_versioned(self._latest_key(namespace))
        return (None, None) if raw is None else (Topology.from_json(json.loads(raw)), etag)

    def latest(self, namespace: str) -> Topology | None:
        return self.latest_versioned(namespace)[0]

    def save_if(self, topo: Topology, etag: str | None) -> str | None:
        """Make ``topo`` the latest snapshot if the latest is still ``etag`` (None: there is none yet);
        then keep it in the history. Returns the history key, or None when another writer got there first."""
        data = json.dumps(topo.to_json(), indent=1)
        if self.store.put_if(self._latest_key(topo.namespace), data, etag) is None:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"topology/{topo.namespace}/{stamp}-{uuid.uuid4().hex[:8]}.json"
        self.store.put(key, data)
        return key

    def history(self, namespace: str) -> list[str]:
        return [k for k in self.store.list_keys(f"topology/{namespace}/") if not k.endswith("/latest.json")]


# --- claims -----------------------------------------------------------------------------------------

def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Lease:
    """A live claim on one event; ``renew`` extends it, ``release`` gives it up."""

    claims: "Claims"
    event_id: str
    owner: str
    etag: str

    def renew(self) -> bool:
        etag = self.claims.store.put_if(self.claims.key(self.event_id),
                                        self.claims.body(self.owner), self.etag)
        if etag is None:
            log.warning("lost the claim on event %s (it expired and another consumer took it over)", self.event_id)
            return False
        self.etag = etag
        return True

    def release(self) -> None:
        _, etag = self.claims.store.get_versioned(self.claims.key(self.event_id))
        if etag == self.etag:  # never delete a claim another consumer took over
            self.claims.store.delete(self.claims.key(self.event_id))


class Claims:
    """Leases on events under ``claims/`` in the artifact store (see the module doc)."""

    def __init__(self, store: ArtifactStore, ttl_s: float):
        self.store, self.ttl_s = store, float(ttl_s)

    @staticmethod
    def key(event_id: str) -> str:
        return f"claims/{event_id}.json"

    def body(self, owner: str) -> str:
        return json.dumps({"owner": owner, "expires_at": time.time() + self.ttl_s})

    def acquire(self, event_id: str, owner: str | None = None) -> Lease | None:
        """The lease on ``event_id``, or None while another consumer holds a live one."""
        owner = owner or owner_id()
        for _ in range(CAS_ATTEMPTS):
            etag = self.store.put_if(self.key(event_id), self.body(owner), None)
            if etag is not None:
                return Lease(self, event_id, owner, etag)
            raw, current = self.store.get_versioned(self.key(event_id))
            if raw is None:
                continue  # released between our two calls: try to create it again
            held = json.loads(raw)
            if float(held.get("expires_at", 0)) > time.time():
                return None
            log.info("claim on event %s held by %s expired; taking it over", event_id, held.get("owner"))
            etag = self.store.put_if(self.key(event_id), self.body(owner), current)
            if etag is not None:
                return Lease(self, event_id, owner, etag)
        return None
