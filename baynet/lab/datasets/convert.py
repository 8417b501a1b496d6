"""Public fault-injection datasets -> incident bundles (``baynet bundle from-nezha`` / ``from-rcd``).

Lab tooling: it reads a dataset's layout and ground truth and writes one bundle per fault, in the
format of :mod:`baynet.bundles.format`. The truth goes to ``truth.json`` only, which no analysis reads.

* **Nezha** (one bundle per fault that :func:`baynet.lab.datasets.nezha.list_cases` places): the fault's span
  files and the normal phase moved to end before the baseline window (as ``baynet eval nezha`` replays
  them) as ``traces/``; per-pod metrics as ``resources.csv`` (``cpu`` millicores, ``memory`` MiB,
  ``net_rx``/``net_tx`` bytes/s); per-pod server latency quantiles and workload as ``signals.csv`` rows
  (destination reporter, no source), the entry service's latency quantiles likewise, and the per-edge p50
  latencies of ``source_50``/``destination_50`` (when the day has them) as rows with a source, reported
  by the source and by the destination; call edges from ``dependency.csv`` or, failing that, the spans;
  where the day has ``log/`` files, the log lines of the same minutes (and of the normal phase, moved
  and re-identified exactly as its spans) as ``logs.csv``.
* **RCD** (one bundle per ``<service>-<fault>/<rep>``): ``<container>_cpu``/``_mem`` as resources,
  ``<svc>_lod`` (requests per second) and ``<svc>_lat_50/90/99`` as signals of 1 s windows; the normal
  recording is moved to end a second before the anomalous one starts (RCD recorded them apart).

The event of every bundle is a latency anomaly on the mesh's entry service, raised
``DETECTION_DELAY_S`` after the injection (the same delay ``baynet eval nezha`` uses).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

import pandas as pd

from baynet.bundles.write import write_bundle
from baynet.lab.datasets.nezha import (
    DETECTION_DELAY_S, NezhaCase, entry_service, list_cases, log_file_of, normal_log_files, normal_trace_files,
    read_logs, read_spans, service_of, shifted,
)
from baynet.settings import Settings
from baynet.windows import Windows

METRICS_BEFORE_S = 3600          # metric rows kept before the injection (baseline and more: 12 windows of 5 min)
METRICS_AFTER_S = 600            # ... and after it
NEZHA_RESOURCES = {"CpuUsage(m)": ("cpu", 1.0), "MemoryUsage(Mi)": ("memory", 1.0),
                   "NetworkReceiveBytes": ("net_rx", 1.0), "NetworkTransmitBytes": ("net_tx", 1.0)}


class ConvertError(ValueError):
    """The dataset is not in the layout the converter reads."""


def _event(case_id: str, service: str, at: float) -> dict:
    return {"id": case_id, "service": service, "event_type": "latency", "timestamp": at,
            "severity": "critical", "labels": {"dataset": case_id.split("-", 1)[0]}}


# --- Nezha ---------------------------------------------------------------------------------------

def _utc(text: pd.Series) -> pd.Series:
    """Nezha's ``Time`` column (``2023-01-29 08:41:10.39 +0000 UTC m=+1.47``) as unix seconds. Its
    ``TimeStamp`` column is not used: some rows carry a mistyped one (a 1861… for a 1661…)."""
    clock = pd.to_datetime(text.str.slice(0, 19), format="%Y-%m-%d %H:%M:%S", utc=True, errors="coerce")
    return (clock - pd.Timestamp(0, tz=UTC)).dt.total_seconds()


def _read_metric_day(metric_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(resources, signals) of one day's ``metric/`` directory, whole day."""
    resources, signals = [], []
    for path in sorted(metric_dir.glob("*_metric.csv*")):
        d = pd.read_csv(path)
        if d.empty or "Time" not in d or "PodName" not in d:
            continue
        t = _utc(d["Time"].astype(str))
        svc = d["PodName"].astype(str).map(service_of)
        for col, (name, scale) in NEZHA_RESOURCES.items():
            if col in d:
                resources.append(pd.DataFrame({"time": t, "service": svc, "metric": name,
                                               "value": pd.to_numeric(d[col], errors="coerce") * scale}))
        sig = pd.DataFrame({"time": t, "source": "", "destination": svc, "window_s": 60.0})
        if "PodWorkload(Ops)" in d:
            sig["requests"] = pd.to_numeric(d["PodWorkload(Ops)"], errors="coerce") * 60.0
        for q in (90, 99):
            col = f"PodServerLatencyP{q}(s)"
            if col in d:
                sig[f"latency_ms_p{q}"] = pd.to_numeric(d[col], errors="coerce") * 1000.0
        sig["reporter"] = "destination"
        signals.append(sig)
    front = next(iter(sorted(metric_dir.glob("front_service.csv*"))), None)
    entry = _front_rows(front) if front else None
    if entry is not None:
        signals.append(entry)
    for name, reporter in (("source_50", "source"), ("destination_50", "destination")):
        path = next(iter(sorted(metric_dir.glob(f"{name}.csv*"))), None)
        if path is not None:
            signals.append(_edge_rows(path, reporter))
    res = pd.concat(resources, ignore_index=True) if resources else pd.DataFrame()
    sig = pd.concat(signals, ignore_index=True) if signals else pd.DataFrame()
    return res.dropna(subset=["time", "value"]) if not res.empty else res, \
        sig.dropna(subset=["time"]) if not sig.empty else sig


ENTRY_NAME = "<entry>"  # front_service.csv rows, renamed to the entry service found in the spans


def _front_rows(path: Path) -> pd.DataFrame:
    d = pd.read_csv(path)
    out = pd.DataFrame({"time": _utc(d["Time"].astype(str)), "source": "", "destination": ENTRY_NAME,
                        "window_s": 60.0, "reporter": "destination"})
    for q in (50, 90, 99):
        col = f"LatencyP{q}(s)"
        if col in d:
            out[f"latency_ms_p{q}"] = pd.to_numeric(d[col], errors="coerce") * 1000.0
    return out


def _edge_rows(path: Path, reporter: str) -> pd.DataFrame:
    d = pd.read_csv(path)
    t = _utc(d["time"].astype(str))
    rows = []
    for col in d.columns:
        if col in ("time", "timestamp") or "_" not in col:
            continue
        src, _, dst = col.partition("_")
        rows.append(pd.DataFrame({"time": t, "source": src, "destination": dst, "window_s": 60.0,
                                  "latency_ms_p50": pd.to_numeric(d[col], errors="coerce") * 1000.0,
                                  "reporter": reporter}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _dependency(day_dir: Path) -> list[tuple[str, str]]:
    path = next(iter(sorted((day_dir / "metric").glob("dependency.csv*"))), None)
    if path is None:
        return []
    d = pd.read_csv(path)
    return [(str(a), str(b)) for a, b in zip(d["Source"], d["Target"]) if a != b]


def nezha_bundle(case: NezhaCase, root: Path, out: Path, *, metrics_day: tuple[pd.DataFrame, pd.DataFrame],
                 traces: bool = True, normal_files: list[Path] | None = None) -> Path:
    """One Nezha fault as a bundle at ``out``."""
    resources, signals = metrics_day
    at = case.inject_ts + DETECTION_DELAY_S
    lo, hi = case.inject_ts - METRICS_BEFORE_S, case.inject_ts + METRICS_AFTER_S
    res = resources[(resources["time"] >= lo) & (resources["time"] < hi)] if not resources.empty else resources
    sig = signals[(signals["time"] >= lo) & (signals["time"] < hi)].copy() if not signals.empty else signals
    fault_spans = [s for f in case.trace_files for s in read_spans(f)]
    normal_files = normal_trace_files(root) if normal_files is None else normal_files
    salt = f"{case.day}-{case.inject_ts}"
    normal_spans = [s for f in normal_files for s in read_spans(f, salt=salt)]
    entry = entry_service(fault_spans or normal_spans) if (fault_spans or normal_spans) else "frontend"
    if not sig.empty:
        # The entry's own pod rows, when it has them, measure what front_service.csv does: keep one series.
        has_own = ((sig["destination"] == entry) & (sig["source"] == "")).any()
        sig = sig[sig["destination"] != ENTRY_NAME] if has_own else sig.replace({"destination": {ENTRY_NAME: entry}})
        sig = sig.drop_duplicates(["time", "source", "destination", "reporter"])
    spans, logs = [], None
    if traces and fault_spans:
        windows = Windows.around(at, Settings())
        shift_ns = int((windows.baseline[1] - 1) * 1e9) - max(s.start_ns for s in normal_spans) if normal_spans else 0
        spans = fault_spans + (shifted(normal_spans, shift_ns) if normal_spans else [])
        # The day's log lines of the same minutes, and the normal phase's moved (and its trace ids mapped)
        # exactly as its spans were, so each line still names the span that wrote it.
        fault_logs = [read_logs(f) for f in (log_file_of(t) for t in case.trace_files) if f is not None]
        normal_logs = [read_logs(f, shift_ns=shift_ns, salt=salt) for f in normal_log_files(root)] \
            if normal_spans and fault_logs else []
        if fault_logs:
            logs = pd.concat(fault_logs + normal_logs, ignore_index=True)
    topology = _dependency(root / case.day) or sorted({(p.service, c.service) for p, c in _span_edges(
        fault_spans + normal_spans)})
    case_id = f"nezha-{case.day}-{case.inject_ts}"
    return write_bundle(out, _event(case_id, entry, at), truth={"root_cause": case.truth, "fault_type": case.fault_type},
                        signals=sig, resources=res, topology=topology, spans=spans, logs=logs)


def _span_edges(spans: list) -> list:
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    out = []
    for s in spans:
        p = by_id.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if p is not None and p.service != s.service:
            out.append((p, s))
    return out


def from_nezha(root: Path, out: Path, *, traces: bool = True,
               progress: Callable[[str], None] | None = None) -> list[Path]:
    """Every fault of a Nezha-layout dataset as a bundle ``<out>/<day>-<HHMMSS>-<type>``."""
    root, out = Path(root), Path(out)
    cases = list_cases(root)
    normal = normal_trace_files(root)
    written, days = [], {}
    for i, case in enumerate(cases):
        if case.day not in days:
            days.clear()
            days[case.day] = _read_metric_day(root / case.day / "metric")
        name = f"{case.day}-{datetime.fromtimestamp(case.inject_ts, UTC):%H%M%S}-{case.fault_type}"
        while (out / name).exists() and any(p == out / name for p in written):
            name += "+"
        written.append(nezha_bundle(case, root, out / name, metrics_day=days[case.day], traces=traces,
                                    normal_files=normal))
        if progress:
            progress(f"[{i + 1}/{len(cases)}] {name}")
    return written


# --- RCD -----------------------------------------------------------------------------------------

def _rcd_csv(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (directory / name).is_file():
            return directory / name
    raise ConvertError(f"{directory} has no {stem}.csv or {stem}.csv.gz")


def rcd_bundle(case_dir: Path, out: Path) -> Path:
    service, _, fault = case_dir.parent.name.rpartition("-")
    if not service:
        raise ConvertError(f"case directory {case_dir.parent.name!r} is not <service>-<fault>")
    normal = pd.read_csv(_rcd_csv(case_dir, "normal"))
    anomalous = pd.read_csv(_rcd_csv(case_dir, "anomalous"))
    for frame, stem in ((normal, "normal"), (anomalous, "anomalous")):
        if "time" not in frame:
            raise ConvertError(f"{case_dir}/{stem}.csv has no 'time' column")
    start = float(anomalous["time"].min())
    normal = normal.assign(time=normal["time"] - normal["time"].max() + start - 1)
    data = pd.concat([normal, anomalous], ignore_index=True)
    t = data["time"].astype(float)
    resources, signals = [], {}
    for col in data.columns:
        for suffix, metric in (("_cpu", "cpu"), ("_mem", "memory")):
            if col.endswith(suffix):
                resources.append(pd.DataFrame({"time": t, "service": col[: -len(suffix)], "metric": metric,
                                               "value": data[col].astype(float)}))
        if col.endswith("_lod"):
            signals.setdefault(col[:-4], {})["requests"] = data[col].astype(float)
        for q in (50, 90, 99):
            if col.endswith(f"_lat_{q}"):
                signals.setdefault(col[: -len(f"_lat_{q}")], {})[f"latency_ms_p{q}"] = data[col].astype(float)
    sig = pd.concat([pd.DataFrame({"time": t, "source": "", "destination": svc, "window_s": 1.0, **cols,
                                   "reporter": "destination"}) for svc, cols in signals.items()],
                    ignore_index=True) if signals else None
    res = pd.concat(resources, ignore_index=True)
    services = sorted(set(res["service"]))
    if service not in services:
        raise ConvertError(f"{case_dir}: no column of the injected service {service!r}")
    entry = "front-end" if "front-end" in services else services[0]
    case_id = f"rcd-{case_dir.parent.name}-{case_dir.name}"
    return write_bundle(out, _event(case_id, entry, start + DETECTION_DELAY_S),
                        truth={"root_cause": service, "fault_type": fault}, signals=sig, resources=res)


def from_rcd(root: Path, out: Path, *, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Every ``<service>-<fault>/<rep>`` case of an RCD dataset as a bundle ``<out>/<service>-<fault>-<rep>``."""
    root, out = Path(root), Path(out)
    dirs = sorted(p for p in root.glob("*/*") if p.is_dir())
    if not dirs:
        raise ConvertError(f"{root} holds no <service>-<fault>/<rep> directories (RCD layout)")
    written = []
    for i, d in enumerate(dirs):
        written.append(rcd_bundle(d, out / f"{d.parent.name}-{d.name}"))
        if progress:
            progress(f"[{i + 1}/{len(dirs)}] {d.parent.name}/{d.name}")
    return written


__all__ = ["ConvertError", "from_nezha", "from_rcd", "nezha_bundle", "rcd_bundle"]
