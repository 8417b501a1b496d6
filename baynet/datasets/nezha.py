"""The Nezha dataset layout (FSE'23; Online Boutique and Train-Ticket halves share it).

``<root>/<day>/fault_list.json`` (inject_time, inject_timestamp, inject_pod, inject_type),
``<root>/<day>/trace/HH_MM_trace.csv.gz`` (span CSVs, one per minute), ``<root>/normal/<day>/trace/``
(the fault-free phase). Span CSV columns: ``TraceID,SpanID,ParentID,PodName,OperationName,
StartTimeUnixNano,EndTimeUnixNano,Duration``; ``ParentID`` is ``root`` for roots; there is no status.
A service is its pod name without the two hash suffixes (``cartservice-579f59597d-wc2lz`` -> ``cartservice``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from baynet.otlp import Span

TRACE_FILE = re.compile(r"^(\d\d)_(\d\d)_trace\.csv(\.gz)?$")
# The span file of a fault is the first one that ends within this long after the injection.
TRACE_SEARCH_S = 240


_DEPLOYMENT_POD = re.compile(r"^(.+)-[a-z0-9]{5,10}-[a-z0-9]{5}$")  # <deployment>-<replicaset hash>-<pod hash>
_STATEFUL_POD = re.compile(r"^(.+)-\d+$")  # <statefulset>-<ordinal>


def service_of(pod: str) -> str:
    """Pod name without its ReplicaSet and pod hash suffixes (``frontend-579b9bff58-t2dbm`` -> ``frontend``),
    or without a StatefulSet ordinal (``redis-cart-0`` -> ``redis-cart``); any other name as it is."""
    m = _DEPLOYMENT_POD.match(pod) or _STATEFUL_POD.match(pod)
    return m.group(1) if m else pod


@dataclass
class NezhaCase:
    day: str
    inject_ts: int
    inject_pod: str
    fault_type: str
    trace_file: Path | None

    @property
    def truth(self) -> str:
        """Ground truth: only the scorer reads this, never the model."""
        return service_of(self.inject_pod)

    @property
    def name(self) -> str:
        return f"{self.day} {datetime.fromtimestamp(self.inject_ts, UTC):%H:%M:%S} {self.fault_type}"


def _file_minute(day: str, path: Path) -> int | None:
    m = TRACE_FILE.match(path.name)
    if not m:
        return None
    stamp = datetime.strptime(f"{day} {m.group(1)}:{m.group(2)}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return int(stamp.timestamp())


def list_cases(root: Path) -> list[NezhaCase]:
    """Every fault of every day under ``root``, with the span file that covers it (or ``None``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Nezha dataset at {root}")
    cases = []
    for fault_list in sorted(root.glob("*/fault_list.json")):
        day_dir = fault_list.parent
        day = day_dir.name
        files = sorted((p for p in (day_dir / "trace").glob("*_trace.csv*") if _file_minute(day, p) is not None),
                       key=lambda p: _file_minute(day, p))
        for faults in json.loads(fault_list.read_text()).values():
            for f in faults:
                ts = int(f["inject_timestamp"])
                match = next((p for p in files if ts < _file_minute(day, p) + 60 <= ts + TRACE_SEARCH_S), None)
                cases.append(NezhaCase(day, ts, f["inject_pod"], f["inject_type"], match))
    cases.sort(key=lambda c: c.inject_ts)
    if not cases:
        raise FileNotFoundError(f"no <day>/fault_list.json under {root}")
    return cases


def normal_trace_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("normal/*/trace/*_trace.csv*"))


def read_spans(path: Path, *, shift_ns: int = 0, salt: str = "") -> list[Span]:
    """Spans of one CSV file; ``shift_ns`` moves them in time, ``salt`` gives their traces new ids
    (so the same normal traffic can serve as the baseline of several incidents)."""
    df = pd.read_csv(path, dtype={"TraceID": str, "SpanID": str, "ParentID": str, "PodName": str,
                                  "OperationName": str})
    df = df.dropna(subset=["TraceID", "SpanID", "PodName"])
    trace_ids = df["TraceID"].str.lower()
    if salt:
        unique = trace_ids.unique()
        mapping = {t: hashlib.blake2b(f"{salt}:{t}".encode(), digest_size=16).hexdigest() for t in unique}
        trace_ids = trace_ids.map(mapping)
    else:
        trace_ids = trace_ids.str.zfill(32)
    parents = df["ParentID"].fillna("root").str.lower()
    services = df["PodName"].map(service_of)
    out = []
    for tid, sid, parent, pod, svc, op, start, end in zip(
            trace_ids, df["SpanID"].str.lower().str.zfill(16), parents, df["PodName"], services,
            df["OperationName"].fillna(""), df["StartTimeUnixNano"].astype("int64"),
            df["EndTimeUnixNano"].astype("int64")):
        out.append(Span(tid, sid, "" if parent == "root" else parent.zfill(16), svc, op, "unspecified",
                        int(start) + shift_ns, max(int(end), int(start)) + shift_ns, "unset",
                        resource={"service.name": svc, "k8s.pod.name": pod}))
    return out


def entry_service(spans: list[Span]) -> str:
    """The service that serves most root spans: where users feel an incident."""
    roots = Counter(s.service for s in spans if not s.parent_span_id)
    if not roots:
        raise ValueError("no root spans: cannot tell the entry service")
    return roots.most_common(1)[0][0]
