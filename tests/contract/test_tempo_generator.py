"""The metrics-generator stand-in (:mod:`baynet.local.metrics_generator`) against Tempo's own expectations:
Tempo's ``TestServiceGraphs_failedRequests`` pushes the trace in
``../shared/contracts/tempo/otlp_resourceSpans_failed_requests__servicegraphs_testdata.json`` through the
service-graph processor and expects exactly one request and one failure on ``mythical-requester ->
mythical-server`` and on ``mythical-server -> postgres`` (``connection_type="database"``); the span-metrics
processor labels every span ``service``, ``span_name``, ``span_kind`` (``SPAN_KIND_*``) and ``status_code``
(``STATUS_CODE_*``). The reader's PromQL (:mod:`baynet.sources.tempo_metrics`) uses those names."""

from __future__ import annotations

import json
import re

from baynet.local.metrics_generator import generator_openmetrics, service_graph_edges, span_metric_keys
from baynet.otlp import parse_trace
from baynet.sources.tempo_metrics import edge_queries, service_queries
from tests.conftest import CONTRACTS

SAMPLE = CONTRACTS / "tempo" / "otlp_resourceSpans_failed_requests__servicegraphs_testdata.json"


def _spans():
    return parse_trace(json.loads(SAMPLE.read_text()))[0]


def test_service_graph_counts_what_tempo_counts_on_its_failed_requests_trace(contracts):
    edges = {tuple(sorted(labels.items())): failed for labels, _, _, _, failed in service_graph_edges(_spans())}
    assert edges == {
        (("client", "mythical-requester"), ("server", "mythical-server")): True,
        (("client", "mythical-server"), ("connection_type", "database"), ("server", "postgres")): True,
    }


def test_span_metrics_label_every_span_as_tempo_does(contracts):
    spans = _spans()
    keys = span_metric_keys(spans)
    assert len(keys) == len(spans)
    labels = [k for k, _, _ in keys]
    assert {"service": "mythical-server", "span_name": "POST /:endpoint", "span_kind": "SPAN_KIND_SERVER",
            "status_code": "STATUS_CODE_ERROR"} in labels
    assert {"service": "mythical-requester", "span_name": "tcp.connect", "span_kind": "SPAN_KIND_INTERNAL",
            "status_code": "STATUS_CODE_UNSET"} in labels
    assert all(d >= 0 for _, _, d in keys)


def test_the_openmetrics_text_carries_the_series_the_reader_asks_for(contracts):
    text = generator_openmetrics(_spans(), step_s=15)
    assert text.endswith("# EOF\n")
    names = set(re.findall(r"^([a-z_]+)\{", text, flags=re.M))
    asked = set(re.findall(r"(traces_[a-z_]+)\{?", " ".join([*service_queries("30s").values(),
                                                               *edge_queries("30s").values()])))
    assert asked <= names, asked - names
    last = {}
    for line in text.splitlines():
        m = re.match(r'traces_service_graph_request_(total|failed_total)\{client="([^"]+)",'
                     r'(?:connection_type="[^"]+",)?server="([^"]+)"\} (\S+) ', line)
        if m:
            last[(m[1], m[2], m[3])] = float(m[4])
    assert last == {("total", "mythical-requester", "mythical-server"): 1.0,
                    ("failed_total", "mythical-requester", "mythical-server"): 1.0,
                    ("total", "mythical-server", "postgres"): 1.0,
                    ("failed_total", "mythical-server", "postgres"): 1.0}
