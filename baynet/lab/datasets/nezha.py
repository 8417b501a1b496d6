"""The Nezha dataset layout (FSE'23; Online Boutique and Train-Ticket halves share it).

``<root>/<day>/fault_list.json`` (inject_time, inject_timestamp, inject_pod, inject_type),
``<root>/<day>/trace/HH_MM_trace.csv.gz`` (span CSVs, one per minute; a fault may have several),
``<root>/normal/<day>/trace/`` (the fault-free phase). Span CSV columns: ``TraceID,SpanID,ParentID,PodName,OperationName,
StartTimeUnixNano,EndTimeUnixNano,Duration``; ``ParentID`` is ``root`` for roots; there is no status.
A service is its pod name without the two hash suffixes (``cartservice-579f59597d-wc2lz`` -> ``cartservice``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from baynet.otlp import Span

# A detector watching user-facing latency fires about two minutes after a fault starts (it needs a few
# scrape intervals of evidence): the anomaly event of every converted fault is raised this long after it.
DETECTION_DELAY_S = 120

TRACE_FILE = re.compile(r"^(\d\d)_(\d\d)_trace\.csv(\.gz)?$")
# Span files are read for the part of a fault an analysis looks at: from a minute before the injection
# to the detection time after it (the incident slices end then).
SPAN_WINDOW_S = (-60.0, 120.0)


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
    inject_ts: int                      # where the fault is taken to be: a listed time the spans cover
    inject_pod: str
    fault_type: str
    trace_files: list[Path] = field(default_factory=list)   # span files covering the analysed window
    relocated: str | None = None        # why inject_ts is not the listed inject_timestamp, if it is not

    @property
    def truth(self) -> str:
        """Ground truth: only the scorer reads this, never the model."""
        return service_of(self.inject_pod)

    @property
    def name(self) -> str:
        return f"{self.day} {datetime.fromtimestamp(self.inject_ts, UTC):%H:%M:%S} {self.fault_type}"


def _span_extent(path: Path) -> tuple[float, float]:
    """First and last span start in a span file, unix seconds: the file's own clock, not its name."""
    starts = pd.read_csv(path, usecols=["StartTimeUnixNano"])["StartTimeUnixNano"]
    if starts.empty:
        return (0.0, 0.0)
    return float(starts.min()) / 1e9, float(starts.max()) / 1e9


def _covered(extents: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of ``[lo, hi]`` that some span file covers (overlapping files counted once)."""
    spans = sorted((max(a, lo), min(b, hi)) for a, b in extents if b > lo and a < hi)
    total, reach = 0.0, lo
    for a, b in spans:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def locate_fault(listed_ts: int, inject_time: str, extents: list[tuple[float, float]]) -> tuple[int | None, str | None]:
    """The fault's time: of the two the list gives (``inject_timestamp``, and ``inject_time`` read as UTC),
    the one whose analysed window the spans cover best; the timestamp on a tie. Nezha's lists carry
    time-zone slips between the two, and the span files follow whichever was right."""
    candidates = [(listed_ts, "inject_timestamp")]
    try:
        clock = int(datetime.strptime(inject_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
        candidates.append((clock, "inject_time"))
    except (TypeError, ValueError):
        pass
    cover = [(_covered(extents, t + SPAN_WINDOW_S[0], t + SPAN_WINDOW_S[1]), t, name) for t, name in candidates]
    best = max(cover, key=lambda c: c[0])  # max keeps the first (the timestamp) on a tie
    if best[0] <= 0:
        return None, None
    if best[1] == listed_ts:
        return listed_ts, None
    stamp = datetime.fromtimestamp(listed_ts, UTC).strftime("%H:%M:%S")
    return best[1], (f"relocated to inject_time {inject_time} (read as UTC): spans cover {best[0]:.0f} s of its "
                     f"window and {cover[0][0]:.0f} s of inject_timestamp {stamp} UTC's "
                     f"({(best[1] - listed_ts) / 3600:+.2f} h)")


def list_cases(root: Path) -> list[NezhaCase]:
    """Every fault of every day under ``root``, located where its spans are, with the span files that
    cover its analysed window (none: the fault has no spans and cannot be analysed)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Nezha dataset at {root}")
    cases = []
    for fault_list in sorted(root.glob("*/fault_list.json")):
        day_dir = fault_list.parent
        files = sorted(p for p in (day_dir / "trace").glob("*_trace.csv*") if TRACE_FILE.match(p.name))
        extents = [_span_extent(p) for p in files]
        try:
            listed = json.loads(fault_list.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{fault_list} is not valid JSON: {exc}") from None
        for faults in listed.values():
            for f in faults:
                try:
                    listed_ts = int(f["inject_timestamp"])
                    pod, kind = f["inject_pod"], f["inject_type"]
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{fault_list}: a fault without a usable {exc} field: {f!r}") from None
                ts, why = locate_fault(listed_ts, f.get("inject_time", ""), extents)
                ts = listed_ts if ts is None else ts
                lo, hi = ts + SPAN_WINDOW_S[0], ts + SPAN_WINDOW_S[1]
                covering = [p for p, (a, b) in zip(files, extents) if b > lo and a < hi]
                cases.append(NezhaCase(day_dir.name, ts, pod, kind, covering, why))
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


def log_file_of(trace_file: Path) -> Path | None:
    """The log file of the same minute as a span file (``HH_MM_trace.csv.gz`` -> ``../log/HH_MM_log.csv.gz``)."""
    name = trace_file.name.replace("_trace.csv", "_log.csv")
    path = trace_file.parent.parent / "log" / name
    return path if path.is_file() else None


def normal_log_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("normal/*/log/*_log.csv*"))


def read_logs(path: Path, *, shift_ns: int = 0, salt: str = "") -> pd.DataFrame:
    """Log lines of one Nezha log CSV as ``logs.csv`` rows (:data:`baynet.bundles.format.LOG_COLUMNS`):
    the message is the ``log`` field of the Docker JSON line (a malformed row keeps what can be read of
    it), trace ids mapped as :func:`read_spans` maps them for the same ``salt``; ``level`` is left blank
    (the evidence reads it from the line, as it would from a plain log)."""
    import csv
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return pd.DataFrame(columns=["time", "service", "pod", "trace_id", "span_id", "level", "line"])
        col = {name: i for i, name in enumerate(header)}
        for cells in reader:
            if len(cells) < len(header):
                continue
            raw = ",".join(cells[col["Log"]:])  # a row whose JSON held unquoted commas spans several cells
            try:
                message = json.loads(raw)["log"]
            except (ValueError, KeyError, TypeError):
                found = re.search(r'"log"\s*:\s*"(.*?)(?:\\n)?"\s*,', raw)
                message = found.group(1) if found else raw
            ns = int(cells[col["TimeUnixNano"]])
            if ns <= 0:  # a few rows carry a broken TimeUnixNano; their Timestamp is readable
                ns = pd.Timestamp(cells[col["Timestamp"]]).tz_localize(None).value
            rows.append((ns + shift_ns, cells[col["PodName"]],
                         cells[col["TraceID"]].lower(), cells[col["SpanID"]].lower(), message.rstrip("\n")))
    frame = pd.DataFrame(rows, columns=["ns", "pod", "trace_id", "span_id", "line"])
    if salt and len(frame):
        unique = frame["trace_id"].unique()
        mapping = {t: hashlib.blake2b(f"{salt}:{t}".encode(), digest_size=16).hexdigest() for t in unique if t}
        frame["trace_id"] = frame["trace_id"].map(lambda t: mapping.get(t, ""))
    else:
        frame["trace_id"] = frame["trace_id"].where(frame["trace_id"] == "", frame["trace_id"].str.zfill(32))
    frame["span_id"] = frame["span_id"].where(frame["span_id"] == "", frame["span_id"].str.zfill(16))
    return pd.DataFrame({"time": frame["ns"] / 1e9, "service": frame["pod"].map(service_of), "pod": frame["pod"],
                         "trace_id": frame["trace_id"], "span_id": frame["span_id"], "level": "",
                         "line": frame["line"]})


def entry_service(spans: list[Span]) -> str:
    """The service that serves most root spans: where users feel an incident."""
    roots = Counter(s.service for s in spans if not s.parent_span_id)
    if not roots:
        raise ValueError("no root spans: cannot tell the entry service")
    return roots.most_common(1)[0][0]


def shifted(spans: list[Span], shift_ns: int) -> list[Span]:
    """Copies of ``spans`` moved ``shift_ns`` later."""
    return [replace(s, start_ns=s.start_ns + shift_ns, end_ns=s.end_ns + shift_ns) for s in spans]


def moved(spans: list[Span], end_s: float) -> list[Span]:
    """Copies of ``spans`` moved in time so that the last one starts at ``end_s``."""
    return shifted(spans, int(end_s * 1e9) - max(s.start_ns for s in spans))
