"""``baynet bundle export``: the bundle of a real incident, read from the configured Tempo and Prometheus.

The traces of the windows the analysis reads (OTLP JSON), per-call-edge golden signals
(``istio_requests_total`` and ``istio_request_duration_milliseconds`` by source, destination, reporter
and destination version, at the metric step), resource series through the metric map, the topology and
the event, and the log lines from Loki when ``BAYNET_LOKI_URL`` is set. No ``truth.json``: that is the operator's to add once the cause is known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from baynet.analysis.topology import read_topology
from baynet.bundles.write import fresh_directory, write_bundle
from baynet.events import parse_object
from baynet.settings import Settings
from baynet.sources.prometheus import edge_signals, fetch_families
from baynet.sources.tempo import fetch_spans
from baynet.windows import Windows


def export(event_file: Path, out: Path, settings: Settings, *, step: Callable[[str], None] | None = None
           ) -> dict[str, Any]:
    """Write the bundle of the incident in ``event_file`` at ``out`` (which must not exist or be empty)."""
    say = step or (lambda line: None)
    events = parse_object(json.loads(Path(event_file).read_text()))
    if len(events) != 1:
        raise ValueError(f"{event_file} holds {len(events)} events; export one incident at a time")
    event = events[0]
    windows = Windows.around(event.unix, settings)
    fresh_directory(out)  # refuse before reading anything
    written: dict[str, Any] = {"event": event.id}
    spans, stats = fetch_spans(event, windows, settings)
    written["spans"] = len(spans)
    say(f"traces: {stats.get('traces_fetched', 0)} from {settings.tempo_url}, {len(spans)} spans")
    signals = resources = None
    if settings.prometheus_url:
        signals = edge_signals(windows, settings)  # every edge, reporter and quantile: the bundle's rows
        resources = fetch_families(windows, settings)[2] if settings.metrics_evidence else None
        written["signals"] = 0 if signals is None else len(signals)
        written["resources"] = 0 if resources is None else len(resources)
        say(f"metrics: {written['signals']} signal rows, {written['resources']} resource rows from "
            f"{settings.prometheus_url}")
    logs = None
    if settings.loki_url:
        from baynet.sources.loki import LokiLogs

        try:
            logs = LokiLogs(settings).fetch(event, windows).tables["logs"]
        except LookupError:
            logs = None  # no line in the windows: the bundle has no logs.csv
        written["log_lines"] = 0 if logs is None else len(logs)
        say(f"logs: {written['log_lines']} lines from {settings.loki_url}")
    topo = read_topology(settings, event.unix)
    edges = sorted(topo.edges) if topo is not None else []
    if edges:
        written["edges"] = len(edges)
    write_bundle(out, event.model_dump(mode="json"), spans=spans, signals=signals, resources=resources,
                 topology=edges, logs=logs)
    return written
