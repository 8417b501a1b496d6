"""The incident bundle, format 1: one directory per incident, a public contract other tools write.

=================  =================================================================================
file               content (every file but ``event.json`` is optional; unknown files are ignored)
=================  =================================================================================
``bundle.json``    ``{"format": 1}`` -- the format version (absent: 1)
``event.json``     the anomaly event, in any form ``baynet event check`` accepts
``traces/*.json``  Tempo/OTLP JSON trace bodies (``{"batches": ...}`` or ``{"resourceSpans": ...}``),
                   any number of traces per file
``signals.csv``    golden signals per call edge and window (columns below)
``resources.csv``  ``time,service,metric,value[,pod]``: per-service resource series, long format; several
                   pods of one service may give several rows with the same time (``pod`` names them:
                   a pod that first reports after the baseline began is judged without its warm-up)
``topology.csv``   ``source,destination``: call edges (caller, callee)
``changes.csv``    ``time,service,kind,detail``: deployments and config changes
``logs.csv``       log lines (columns below), in time order per service
``truth.json``     ``{"root_cause": "<service>", "fault_type": "<free text>"}``: the scorer's only
=================  =================================================================================

``signals.csv`` (header required; a blank cell means "not measured"; unknown columns are ignored):
``time`` (end of the window, unix seconds), ``source`` (calling service; blank when unknown or outside
the mesh), ``destination`` (called service), ``window_s``, ``requests``, ``error_ratio`` (0..1),
``latency_ms_avg``, ``latency_ms_p50``, ``latency_ms_p90``, ``latency_ms_p99``, ``destination_version``,
``reporter`` (``source`` or ``destination``; blank means ``destination``). Windows need not be regular.
Service names are free text (``orders_AWS::DynamoDB::Table``, ``db@host_remote``).

``logs.csv`` (header required): ``time`` (unix seconds, the line's timestamp), ``service``, ``line`` (the
log message as the service wrote it); optional ``pod``, ``trace_id`` and ``span_id`` (hex, the span that
wrote the line, when the logger records it), ``level`` (``TRACE``, ``DEBUG``, ``INFO``, ``WARN``,
``ERROR``, ``FATAL`` in any case, ``WARNING``/``CRITICAL`` too; blank: read from the line).

:func:`check_bundle` reads every file and raises :class:`BundleError` naming the file, the row (its line
in the file, the header being line 1), the column and the value at the first problem; it writes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

FORMAT = 1
REPORTERS = {"", "source", "destination"}
# Every column each CSV may have, in the order the writers write them (the one definition).
SIGNAL_COLUMNS = ["time", "source", "destination", "window_s", "requests", "error_ratio", "latency_ms_avg",
                  "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "destination_version", "reporter"]
RESOURCE_COLUMNS = ["time", "service", "metric", "value", "pod"]
TOPOLOGY_COLUMNS = ["source", "destination"]
CHANGE_COLUMNS = ["time", "service", "kind", "detail"]
LOG_COLUMNS = ["time", "service", "pod", "trace_id", "span_id", "level", "line"]
# Columns each CSV must have in its header; the other known columns are optional.
REQUIRED = {
    "signals.csv": ["time", "destination"],
    "resources.csv": ["time", "service", "metric", "value"],
    "topology.csv": ["source", "destination"],
    "changes.csv": ["time", "service", "kind", "detail"],
    "logs.csv": ["time", "service", "line"],
}
LEVELS = {"", "TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"}


class BundleError(ValueError):
    """A bundle that does not follow the format; the message names the file, row, column and value."""

    def __init__(self, file: str, message: str, *, row: int | None = None, column: str | None = None,
                 value: Any = None):
        self.file, self.row, self.column, self.value = file, row, column, value
        where = file + (f", line {row}" if row is not None else "") + (f", column {column!r}" if column else "")
        shown = "" if value is None else f" (value {_short(value)!r})"
        super().__init__(f"{where}: {message}{shown}")


@dataclass
class BundleSummary:
    """What a valid bundle holds (for ``baynet bundle check`` and the analyses that use it)."""

    path: str
    event: dict[str, Any]
    trace_files: int = 0
    spans: int = 0
    traces: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)
    time_range: tuple[float, float] | None = None
    has_truth: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": FORMAT, "event": self.event, "trace_files": self.trace_files,
                "traces": self.traces, "spans": self.spans, "rows": self.rows, "services": self.services,
                "time_range": list(self.time_range) if self.time_range else None, "has_truth": self.has_truth}


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise BundleError(name, f"cannot be read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(name, f"is not valid JSON: {exc}") from None


def _number(name: str, row: int, column: str, text: str, *, low: float | None = None,
            high: float | None = None) -> float | None:
    """A float cell (blank: ``None``), finite and within ``[low, high]``."""
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BundleError(name, "is not a number", row=row, column=column, value=text) from None
    if not math.isfinite(value):
        raise BundleError(name, "must be a finite number", row=row, column=column, value=text)
    if low is not None and value < low or high is not None and value > high:
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise BundleError(name, f"must be {bounds}", row=row, column=column, value=text)
    return value


def _time(name: str, row: int, text: str) -> float:
    """A row's ``time``: unix seconds, required."""
    value = _number(name, row, "time", text, low=0)
    if value is None:
        raise BundleError(name, "must not be blank", row=row, column="time", value=text)
    return value


def _text(name: str, row: int, column: str, text: str) -> str:
    if text.strip() == "":
        raise BundleError(name, "must not be blank", row=row, column=column, value=text)
    return text


def _rows(path: Path, name: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line, row)`` pairs of a CSV file; the required columns must be in the header."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise BundleError(name, f"cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise BundleError(name, f"is not UTF-8 text: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise BundleError(name, "is empty: a header line is required")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED[name] if c not in header]
        if missing:
            raise BundleError(name, f"header lacks the column(s) {', '.join(missing)}", row=1,
                              value=",".join(header))
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise BundleError(name, f"header repeats the column(s) {', '.join(duplicated)}", row=1)
        out = []
        for line, cells in enumerate(reader, start=2):
            if not cells or all(c.strip() == "" for c in cells):
                continue  # blank lines carry nothing
            if len(cells) != len(header):
                raise BundleError(name, f"has {len(cells)} cells where the header has {len(header)}", row=line,
                                  value=",".join(cells))
            out.append((line, dict(zip(header, cells))))
    except csv.Error as exc:
        raise BundleError(name, f"is not valid CSV: {exc}", row=reader.line_num) from None
    return header, out


def _in_order(name: str, series: dict[tuple, float], key: tuple, time: float, line: int, *,
              strictly: bool) -> None:
    """Times within one series must not go back (nor repeat, when ``strictly``)."""
    last = series.get(key)
    if last is not None and (time < last or strictly and time == last):
        what = "repeats" if time == last else "goes back from"
        raise BundleError(name, f"time {what} {last:g} within the series {' / '.join(map(str, key))}: rows of "
                          "one series must be in time order", row=line, column="time", value=time)
    series[key] = time


def _check_signals(rows: list[tuple[int, dict[str, str]]], name: str, seen: Callable[[str, float], None]) -> None:
    series: dict[tuple, float] = {}
    for line, r in rows:
        time = _time(name, line, r["time"])
        destination = _text(name, line, "destination", r["destination"])
        reporter = r.get("reporter", "").strip()
        if reporter not in REPORTERS:
            raise BundleError(name, "must be 'source', 'destination' or blank", row=line, column="reporter",
                              value=reporter)
        _number(name, line, "window_s", r.get("window_s", ""), low=0)
        if r.get("window_s", "").strip() and float(r["window_s"]) == 0:
            raise BundleError(name, "must be positive", row=line, column="window_s", value=r["window_s"])
        _number(name, line, "requests", r.get("requests", ""), low=0)
        _number(name, line, "error_ratio", r.get("error_ratio", ""), low=0, high=1)
        for column in ("latency_ms_avg", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99"):
            _number(name, line, column, r.get(column, ""), low=0)
        key = (r.get("source", ""), destination, reporter or "destination", r.get("destination_version", ""))
        _in_order(name, series, key, time, line, strictly=True)
        seen(destination, time)
        if r.get("source", "").strip():
            seen(r["source"], time)


def _check_resources(rows: list[tuple[int, dict[str, str]]], name: str, seen: Callable[[str, float], None]) -> None:
    series: dict[tuple, float] = {}
    for line, r in rows:
        time = _time(name, line, r["time"])
        service = _text(name, line, "service", r["service"])
        metric = _text(name, line, "metric", r["metric"])
        _number(name, line, "value", r["value"])
        _in_order(name, series, (service, metric), time, line, strictly=False)  # pods share a time
        seen(service, time)


def _check_topology(rows: list[tuple[int, dict[str, str]]], name: str, seen: Callable[[str, float], None]) -> None:
    for line, r in rows:
        seen(_text(name, line, "source", r["source"]), math.nan)
        seen(_text(name, line, "destination", r["destination"]), math.nan)


def _check_changes(rows: list[tuple[int, dict[str, str]]], name: str, seen: Callable[[str, float], None]) -> None:
    series: dict[tuple, float] = {}
    for line, r in rows:
        time = _time(name, line, r["time"])
        service = _text(name, line, "service", r["service"])
        _text(name, line, "kind", r["kind"])
        _in_order(name, series, (service,), time, line, strictly=False)
        seen(service, time)


def _check_logs(rows: list[tuple[int, dict[str, str]]], name: str, seen: Callable[[str, float], None]) -> None:
    series: dict[tuple, float] = {}
    for line, r in rows:
        time = _time(name, line, r["time"])
        service = _text(name, line, "service", r["service"])
        level = r.get("level", "").strip()
        if level.upper() not in LEVELS:
            raise BundleError(name, f"must be one of {', '.join(sorted(LEVELS - {''}))} or blank", row=line,
                              column="level", value=level)
        for column in ("trace_id", "span_id"):
            value = r.get(column, "").strip()
            if value and not all(c in "0123456789abcdefABCDEF" for c in value):
                raise BundleError(name, "must be hex", row=line, column=column, value=value)
        _in_order(name, series, (service,), time, line, strictly=False)  # lines may share a timestamp
        seen(service, time)


CSV_CHECKS = {"signals.csv": _check_signals, "resources.csv": _check_resources, "topology.csv": _check_topology,
              "changes.csv": _check_changes, "logs.csv": _check_logs}


def check_bundle(path: Path) -> BundleSummary:
    """Validate the bundle at ``path`` (every file, column, type and time order); return what it holds."""
    from baynet.events import EventError, parse_message
    from baynet.otlp import TempoParseError, parse_trace

    path = Path(path)
    if not path.is_dir():
        raise BundleError(str(path), "is not a directory: a bundle is one directory per incident")
    meta = path / "bundle.json"
    if meta.exists():
        data = _read_json(meta, "bundle.json")
        if not isinstance(data, dict):
            raise BundleError("bundle.json", "must be a JSON object such as {\"format\": 1}", value=data)
        if data.get("format", FORMAT) != FORMAT:
            raise BundleError("bundle.json", f"format {data.get('format')!r} is not supported (this Baynet reads "
                              f"format {FORMAT})", column="format", value=data.get("format"))
    event_file = path / "event.json"
    if not event_file.is_file():
        raise BundleError("event.json", "is missing: every bundle needs its anomaly event")
    try:
        events = parse_message(event_file.read_bytes())
    except EventError as exc:
        raise BundleError("event.json", str(exc)) from None
    if len(events) != 1:
        raise BundleError("event.json", f"holds {len(events)} events: a bundle is one incident, one event")
    summary = BundleSummary(str(path), json.loads(events[0].model_dump_json()))
    services: set[str] = set()
    times: list[float] = []

    def seen(service: str, time: float) -> None:
        services.add(service)
        if not math.isnan(time):
            times.append(time)

    trace_dir = path / "traces"
    if trace_dir.exists():
        if not trace_dir.is_dir():
            raise BundleError("traces", "must be a directory of JSON files")
        for f in sorted(trace_dir.glob("*.json")):
            name = f"traces/{f.name}"
            body = _read_json(f, name)
            try:
                spans, _ = parse_trace(body)
            except TempoParseError as exc:
                raise BundleError(name, f"is not a Tempo/OTLP trace body: {exc}") from None
            summary.trace_files += 1
            summary.spans += len(spans)
            summary.traces += len({s.trace_id for s in spans})
            for s in spans:
                seen(s.service, s.start_ns / 1e9)
    for name, check in CSV_CHECKS.items():
        f = path / name
        if not f.exists():
            continue
        _, rows = _rows(f, name)
        check(rows, name, seen)
        summary.rows[name] = len(rows)
    truth = path / "truth.json"
    if truth.exists():
        data = _read_json(truth, "truth.json")
        if not isinstance(data, dict):
            raise BundleError("truth.json", "must be a JSON object", value=data)
        root = data.get("root_cause")
        if not isinstance(root, str) or not root.strip():
            raise BundleError("truth.json", "needs a non-blank string root_cause", column="root_cause", value=root)
        if "fault_type" in data and not isinstance(data["fault_type"], str):
            raise BundleError("truth.json", "fault_type must be a string", column="fault_type",
                              value=data["fault_type"])
        summary.has_truth = True
    summary.services = sorted(services)
    summary.time_range = (min(times), max(times)) if times else None
    return summary
