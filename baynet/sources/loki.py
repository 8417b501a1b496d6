"""Log lines from Grafana Loki: the mesh's lines in the baseline and incident windows, as ``logs.csv`` rows.

Per time slice (each incident slice, each ``window_s`` piece of the baseline) at most ``logs_per_slice``
lines: the WARN/ERROR lines first (a line filter on the level words, up to a quarter of the budget), then
every line, the two merged without doubles. A slice cut at the budget is reported, and the evidence marked
partial. The service of a line is its ``loki_service_label`` (``service_name`` by default: Loki derives it
at ingestion), else ``app``, ``container``, ``job``; its level the ``detected_level`` Loki adds (or a
``level``/``severity_text`` label or structured metadata), else the line's own; its trace and span from
the OpenTelemetry structured metadata (``trace_id``, ``span_id``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pandas as pd

from baynet.bundles.format import LOG_COLUMNS
from baynet.events import AnomalyEvent
from baynet.loki import Entry, LokiClient, LokiUnavailable
from baynet.settings import Settings
from baynet.sources.base import Observed
from baynet.windows import Windows

BAD_FILTER = '|~ "(?i)\\\\b(warn|warning|error|fatal|critical)\\\\b"'


class LokiLogs:
    """The live log source."""

    name: ClassVar[str] = "loki"
    kind: ClassVar[str] = "logs"
    # Loki down, or no line at all in the windows: the other sources carry the analysis (marked partial).
    # A rejected query (bad LogQL, no org id, a limit) fails the run with Loki's message.
    unavailable: ClassVar[tuple[type[BaseException], ...]] = (LokiUnavailable, LookupError, httpx.HTTPError)

    def __init__(self, settings: Settings):
        self.settings = settings

    def fetch(self, event: AnomalyEvent, windows: Windows) -> Observed:
        settings = self.settings
        selector = settings.loki_selector.replace("$namespace", event.namespace or settings.namespace)
        pieces = windows.baseline_pieces(settings.window_s) + windows.slices
        budget = settings.logs_per_slice
        entries: dict[tuple, Entry] = {}
        cut = 0
        with LokiClient.from_settings(settings) as loki:
            for lo, hi in pieces:
                start, end = int(lo * 1e9), int(hi * 1e9)
                bad, _ = loki.lines(f"{selector} {BAD_FILTER}", start, end, budget=max(1, budget // 4))
                rest, was_cut = loki.lines(selector, start, end, budget=budget)
                cut += was_cut
                for e in bad + rest:
                    entries.setdefault((e.ts_ns, tuple(sorted(e.labels.items())), e.line), e)
            requests, warnings = loki.requests, loki.warnings
        if not entries:
            raise LookupError(f"Loki at {settings.loki_url} holds no line for {selector} around "
                              f"{event.timestamp.isoformat()}")
        frame = logs_frame(list(entries.values()), settings.loki_service_label)
        stats: dict[str, Any] = {"logs": f"{len(frame)} lines from {settings.loki_url}", "log_lines": len(frame),
                                 "log_requests": requests}
        partial = [f"log lines cut at {budget} in {cut} slice(s) (BAYNET_LOGS_PER_SLICE)"] if cut else []
        partial += [f"Loki: {w}" for w in warnings]
        return Observed("logs", {"logs": frame}, stats, partial, origin=str(settings.loki_url))


def logs_frame(entries: list[Entry], service_label: str = "service_name") -> pd.DataFrame:
    """Loki entries as ``logs.csv`` rows (:data:`baynet.bundles.format.LOG_COLUMNS`), oldest first."""
    rows = [(e.ts_ns / 1e9, e.get(service_label, "service_name", "app", "container", "job") or "unknown_service",
             e.get("pod", "k8s_pod_name"), e.get("trace_id", "traceID", "traceId").lower(),
             e.get("span_id", "spanID", "spanId").lower(),
             e.get("detected_level", "level", "severity_text", "severity").upper(), e.line) for e in entries]
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    frame["level"] = frame["level"].replace({"WARNING": "WARN", "CRITICAL": "FATAL", "UNKNOWN": ""})
    return frame.sort_values("time", kind="stable").reset_index(drop=True)
