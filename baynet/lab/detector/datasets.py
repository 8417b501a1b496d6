"""Public fault-injection data as detector cases. Labels come from each dataset's own record of what was
injected when; the model never reads them, only the scorer and the training step do.

``rcd-sockshop`` (RCD, NeurIPS'22): per case ``normal.csv`` and ``anomalous.csv`` at 1 s, columns
``<container>_cpu``, ``_mem``, ``<svc>_lod`` (load), ``<svc>_lat_50/90/99``. The anomalous file was recorded
while the fault was active. Reference = the first half of the normal file; scored = its second half, then
the anomalous file. The injected service's anomalous rows are positive; every service's normal rows are
negative; the other services' anomalous rows are *unknown* (a fault spreads to its neighbours, and
whether they count is not recorded), so they are neither rewarded nor punished.

Nezha (FSE'23) layout: per day ``metric/<pod>_metric.csv.gz`` at 1 min and ``fault_list.json`` with each
injection's time and pod. The list records no end: ``fault_s`` (default 300 s) is how long a fault is
taken to last — injections are about 8.5 minutes apart. The day's quiet hours after the last fault (from
one hour after it) are the reference; the experiment hours are scored. During any fault, pods other than
the injected one are unknown, as above. Besides the pod columns: ``errors`` from ``PodSuccessRate(%)`` where
a pod measures it (all zeros = not measured) or else from ``front_service.csv`` for the entry service, and
``net_lat`` from the per-edge ``source_50``/``destination_50`` files.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from baynet.lab.datasets.nezha import locate_fault, service_of
from baynet.detector.series import Case, Fault, ServiceSeries

RCD_SUFFIXES = {"_cpu": "cpu", "_mem": "mem", "_lod": "load", "_lat_50": "lat_p50", "_lat_90": "lat_p90",
                "_lat_99": "lat_p99"}
NEZHA_COLUMNS = {"CpuUsageRate(%)": "cpu", "MemoryUsage(Mi)": "mem", "NetworkReceiveBytes": "net_rx",
                 "NetworkTransmitBytes": "net_tx", "PodWorkload(Ops)": "load", "PodServerLatencyP90(s)": "lat_p90",
                 "PodServerLatencyP99(s)": "lat_p99"}
NEZHA_SUCCESS = "PodSuccessRate(%)"
NEZHA_QUIET_AFTER_S = 3600
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    pass


def _csv(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"{directory} has no {stem}.csv or {stem}.csv.gz")


def _rcd_by_service(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    by_service: dict[str, dict[str, pd.Series]] = {}
    for col in frame.columns:
        for suffix, fam in RCD_SUFFIXES.items():
            if col.endswith(suffix):
                by_service.setdefault(col[: -len(suffix)], {})[fam] = frame[col].astype(float)
                break
    index = frame["time"].astype(float).to_numpy()
    return {svc: pd.DataFrame({k: v.to_numpy() for k, v in cols.items()}, index=index)
            for svc, cols in by_service.items()}


def rcd_cases(root: Path) -> list[Case]:
    """One case per ``<service>-<fault>/<rep>`` directory; group = the injected service."""
    root = Path(root)
    dirs = sorted(p for p in root.glob("*/*") if p.is_dir())
    if not dirs:
        raise DatasetError(f"{root} holds no <service>-<fault>/<rep> directories (RCD Sock Shop layout)")
    cases = []
    for d in dirs:
        target, _, fault = d.parent.name.rpartition("-")
        if not target:
            raise DatasetError(f"case directory {d.parent.name!r} is not <service>-<fault>")
        normal = pd.read_csv(_csv(d, "normal"))
        anomalous = pd.read_csv(_csv(d, "anomalous"))
        if "time" not in normal or "time" not in anomalous:
            raise DatasetError(f"{d}: the CSVs need a 'time' column")
        half = len(normal) // 2
        ref = _rcd_by_service(normal.iloc[:half])
        obs = _rcd_by_service(pd.concat([normal.iloc[half:], anomalous], ignore_index=True))
        n_norm, n_anom = len(normal) - half, len(anomalous)
        if target not in obs:
            raise DatasetError(f"{d}: no column of the injected service {target!r}")
        services = []
        for svc in sorted(obs):
            labels = np.concatenate([np.zeros(n_norm, int), np.full(n_anom, 1 if svc == target else -1)])
            services.append(ServiceSeries(svc, ref.get(svc, obs[svc].iloc[:0]), obs[svc], labels))
        cases.append(Case(f"{d.parent.name}/{d.name}", target, 1.0, services,
                          [Fault(target, n_norm, n_norm + n_anom, fault)]))
    return cases


def nezha_cases(root: Path, fault_s: float = 300.0) -> list[Case]:
    """One case per day directory holding ``fault_list.json`` and ``metric/``; group = the day."""
    root = Path(root)
    days = sorted(p for p in root.iterdir() if (p / "fault_list.json").is_file() and (p / "metric").is_dir())
    if not days:
        raise DatasetError(f"{root} holds no <day>/fault_list.json with a metric/ directory (Nezha layout)")
    cases = []
    for day in days:
        listed = [f for group in json.loads((day / "fault_list.json").read_text()).values() for f in group]
        if not listed:
            continue
        by_service: dict[str, list[pd.DataFrame]] = {}
        for path in sorted((day / "metric").glob("*_metric.csv*")):
            pod = re.sub(r"_metric\.csv(\.gz)?$", "", path.name)
            by_service.setdefault(service_of(pod), []).append(_pod_frame(path, day.name))
        if not by_service:
            raise DatasetError(f"{day / 'metric'} holds no <pod>_metric.csv files")
        # The list's two times (inject_timestamp; inject_time read as UTC) can differ by a time zone; the
        # metrics follow one of them, as the spans do: each fault is placed where the metrics cover it.
        extent = [(float(min(f.index.min() for fs in by_service.values() for f in fs)),
                   float(max(f.index.max() for fs in by_service.values() for f in fs)))]
        injections = []
        for f in listed:
            ts, _ = locate_fault(int(f["inject_timestamp"]), f.get("inject_time", ""), extent)
            injections.append((int(f["inject_timestamp"]) if ts is None else ts, service_of(f["inject_pod"]),
                               f["inject_type"]))
        injections.sort()
        quiet_from = injections[-1][0] + fault_s + NEZHA_QUIET_AFTER_S
        services = []
        faults: list[Fault] = []
        steps = []
        for svc, pods in sorted(by_service.items()):
            frame = _merge_pods(pods)
            if len(frame) > 1:
                steps.append(float(np.median(np.diff(frame.index.to_numpy(float)))))
            obs, ref = frame[frame.index < quiet_from], frame[frame.index >= quiet_from]
            t = obs.index.to_numpy()
            labels = np.zeros(len(obs), int)
            for ts, target, kind in injections:
                inside = (t >= ts) & (t < ts + fault_s)
                if target == svc:
                    labels[inside] = 1
                    idx = np.flatnonzero(inside)
                    if idx.size:
                        faults.append(Fault(svc, int(idx[0]), int(idx[-1]) + 1, kind))
                else:
                    labels[inside & (labels != 1)] = -1
            services.append(ServiceSeries(svc, ref, obs, labels))
        _add_edge_latency(day, services)
        _add_front_service(day, services)
        missing = sorted({target for _, target, _ in injections} - set(by_service))
        if missing:
            log.warning("%s: no metrics for injected service(s) %s; their faults are not scored", day.name,
                        ", ".join(missing))
        cases.append(Case(day.name, day.name, float(np.median(steps)) if steps else 60.0, services, faults))
    return cases


def _pod_frame(path: Path, day: str) -> pd.DataFrame:
    """One pod's metric file as families by unix time."""
    raw = pd.read_csv(path)
    times = _nezha_times(raw, path, day)
    order = np.argsort(times, kind="stable")
    frame = pd.DataFrame({fam: pd.to_numeric(raw[col], errors="coerce").to_numpy()[order]
                          for col, fam in NEZHA_COLUMNS.items() if col in raw}, index=times[order])
    if NEZHA_SUCCESS in raw:  # 0 on every row means "not measured" (Online Boutique's pods)
        success = pd.to_numeric(raw[NEZHA_SUCCESS], errors="coerce").to_numpy(float)[order]
        if np.nanmax(np.abs(success), initial=0.0) > 0:
            idle = (success == 0) & (frame["load"].to_numpy(float) == 0) if "load" in frame else False
            frame["errors"] = np.where(idle, np.nan, 1.0 - success / 100.0)  # no requests: no rate
    return frame


def _merge_pods(pods: list[pd.DataFrame]) -> pd.DataFrame:
    """A service's pods as one series. One pod: as is. Several (a pod replaced during the day, or
    replicas): rows in time order; rows of different pods within half a minute of each other are one
    scrape — latencies and rates are averaged, counts (CPU, memory, bytes, requests) summed."""
    if len(pods) == 1:
        return pods[0]
    frame = pd.concat(pods).sort_index(kind="stable")
    t = frame.index.to_numpy(float)
    scrape = np.concatenate([[0], np.cumsum(np.diff(t) > 30)])
    summed = [c for c in frame.columns if c in ("cpu", "mem", "net_rx", "net_tx", "load")]
    grouped = frame.groupby(scrape)
    out = grouped.mean()
    if summed:
        out[summed] = grouped[summed].sum(min_count=1)
    out.index = pd.Series(t).groupby(scrape).first().to_numpy()
    return out


def _add_edge_latency(day: Path, services: list[ServiceSeries]) -> None:
    """``net_lat`` from ``source_50.csv`` and ``destination_50.csv`` (per call edge ``caller_callee``, the
    median latency measured by the caller and by the callee): per service, the mean over its incoming
    edges of caller minus callee, put on the service's own rows (nearest time within 30 s)."""
    try:
        src, dst = pd.read_csv(_csv(day / "metric", "source_50")), pd.read_csv(_csv(day / "metric", "destination_50"))
    except DatasetError:
        return
    src.columns = [c.strip() for c in src.columns]
    dst.columns = [c.strip() for c in dst.columns]
    renamed = {"time": "Time", "timestamp": "TimeStamp"}
    src_t = _nezha_times(src.rename(columns=renamed), day / "metric" / "source_50.csv", day.name)
    dst_t = _nezha_times(dst.rename(columns=renamed), day / "metric" / "destination_50.csv", day.name)
    edges = [c for c in src.columns if c in dst.columns and c.lower() not in ("time", "timestamp") and "_" in c]
    for s in services:
        incoming = [e for e in edges if e.split("_", 1)[1] == s.service]
        if not incoming:
            continue
        caller = pd.DataFrame(src[incoming].apply(pd.to_numeric, errors="coerce").to_numpy(), index=src_t)
        callee = pd.DataFrame(dst[incoming].apply(pd.to_numeric, errors="coerce").to_numpy(), index=dst_t)
        callee = callee[~callee.index.duplicated()].sort_index().reindex(caller.index, method="nearest", tolerance=30)
        with warnings.catch_warnings():  # a minute where no edge has both sides is NaN, and says so
            warnings.simplefilter("ignore", RuntimeWarning)
            gap = pd.Series(np.nanmean((caller - callee).to_numpy(), axis=1), index=caller.index)
        _attach(s, "net_lat", gap)


def _add_front_service(day: Path, services: list[ServiceSeries]) -> None:
    """``front_service.csv``: the entry service's own success rate and median latency, measured where it
    serves the users. ``errors`` = 1 - success rate and ``lat_p50``, for the service it names, unless the pod's
    own metrics already carry them (Online Boutique's ``PodSuccessRate(%)`` is 0 throughout: not measured)."""
    try:
        path = _csv(day / "metric", "front_service")
    except DatasetError:
        return
    raw = pd.read_csv(path)
    if "ServiceName" not in raw or "SuccessRate(%)" not in raw:
        raise DatasetError(f"{path}: needs ServiceName and SuccessRate(%) columns")
    times = _nezha_times(raw, path, day.name)
    for name, rows in raw.groupby(raw["ServiceName"].astype(str).str.lower()):
        target = next((s for s in services if s.service == name), None)
        if target is None:
            continue
        t = times[rows.index.to_numpy()]
        success = pd.to_numeric(rows["SuccessRate(%)"], errors="coerce").to_numpy(float)
        _attach(target, "errors", pd.Series(1.0 - success / 100.0, index=t), keep_own=True)
        if "LatencyP50(s)" in rows:
            latency = pd.to_numeric(rows["LatencyP50(s)"], errors="coerce").to_numpy(float)
            _attach(target, "lat_p50", pd.Series(latency, index=t), keep_own=True)


def _attach(s: ServiceSeries, family: str, values: pd.Series, keep_own: bool = False) -> None:
    """Put a series measured outside the pod's file on the service's reference and observed rows (the
    nearest time within 30 s). ``keep_own``: a frame whose own column already has data keeps it."""
    values = values[~values.index.duplicated()].sort_index()
    for frame in (s.reference, s.observed):
        if len(frame) and not (keep_own and family in frame and frame[family].notna().any()):
            frame[family] = values.reindex(frame.index, method="nearest", tolerance=30).to_numpy()


def _nezha_times(raw: pd.DataFrame, path: Path, day: str) -> np.ndarray:
    """Unix seconds of each row. The file has them twice: ``TimeStamp`` and the ``Time`` text. Where they
    disagree, the one inside the day the directory is named after wins (one public file carries a
    ``TimeStamp`` column shifted by years); if neither is, the file is refused."""
    try:
        lo = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() - 86400
    except ValueError:
        lo = None
    candidates = []
    if "TimeStamp" in raw:
        candidates.append(("TimeStamp", pd.to_numeric(raw["TimeStamp"], errors="coerce").to_numpy(float)))
    if "Time" in raw:
        text = pd.to_datetime(raw["Time"].astype(str).str.slice(0, 19), utc=True, format="%Y-%m-%d %H:%M:%S",
                              errors="coerce")
        candidates.append(("Time", (text - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)))
    if not candidates:
        raise DatasetError(f"{path}: neither a TimeStamp nor a Time column")
    for name, values in candidates:
        ok = np.isfinite(values).all() and (lo is None or ((values >= lo) & (values < lo + 3 * 86400)).all())
        if ok:
            if name != candidates[0][0]:
                log.warning("%s: TimeStamp disagrees with Time (first %s vs %s); using Time", path.name,
                            candidates[0][1][0], values[0])
            return values
    raise DatasetError(f"{path}: no time column lies within day {day} (first TimeStamp "
                       f"{candidates[0][1][0]!r})")


ADAPTERS = {"rcd-sockshop": rcd_cases, "nezha": nezha_cases}
