"""Aggregates first, end to end through Debian's Prometheus: a generated incident's spans counted as
Tempo's metrics-generator counts them (:mod:`baynet.local.metrics_generator`), backfilled, and read back by
the metric source (:mod:`baynet.sources.tempo_metrics`). Where those series exist the request rates,
errors and latencies come from them and the traces are read as a small sample; where they do not, the
Istio series and the full trace budget are used, and the stats say which."""

from __future__ import annotations

import time

import pytest

from baynet.analysis import analyse
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.lab.generator import generate, istio_openmetrics, write_incident
from baynet.local.stack import LocalStack, prometheus_available
from baynet.sources import gather
from baynet.sources.prometheus import PrometheusMetrics, fetch_metrics
from baynet.sources.tempo import TempoTraces, has_generator_series
from baynet.windows import Windows
from tests.conftest import require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def incident():
    return generate("sock-shop", "carts", "gray", fault_start=time.time() - 300, seed=5)


@pytest.fixture(scope="module")
def stack(incident, tmp_path_factory):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    work = tmp_path_factory.mktemp("aggregates")
    paths = write_incident(incident, work / "incident")
    with LocalStack(work, traces=paths["traces"], openmetrics=paths["openmetrics"]) as st:
        yield st


def _windows(incident, settings):
    (event,) = parse_object(incident.event)
    return event, Windows.around(event.unix, settings)


def test_request_rates_come_from_the_span_metrics_and_match_the_spans(stack, incident):
    settings = stack.settings()
    event, windows = _windows(incident, settings)
    signals, _, stats = fetch_metrics(windows, settings)
    assert stats["aggregates"].startswith("Tempo metrics-generator"), stats
    per_service = signals[signals["source"] == ""].groupby("destination")["requests"].sum()
    lo, hi = windows.baseline[0], windows.incident[1]
    served = {}
    for s in incident.spans:
        if s.kind == "server" and lo <= s.end_ns / 1e9 <= hi:
            served[s.service] = served.get(s.service, 0) + 1
    assert set(per_service.index) == set(served)
    for service, n in served.items():  # rate() extrapolates at the edges of the range: within a fifth
        assert 0.8 <= per_service[service] / n <= 1.25, (service, per_service[service], n)
    edges = signals[signals["source"] != ""]
    assert set(edges["reporter"]) == {"source", "destination"}
    assert ("front-end", "carts") in set(zip(edges["source"], edges["destination"]))


def test_with_a_sample_size_traces_are_a_sample_beside_the_aggregates_and_the_ranking_holds(stack, incident):
    settings = stack.settings(traces_sample_per_slice=20)
    event, windows = _windows(incident, settings)
    assert has_generator_series(settings, windows)
    observations = gather(event, windows, [TempoTraces(settings), PrometheusMetrics(settings)])
    traces = observations.parts[0].stats
    assert "at most 20 traces per slice" in traces["retrieval"]
    assert "BAYNET_TRACES_SAMPLE_PER_SLICE" in traces["retrieval"]
    default = TempoTraces(stack.settings()).fetch(event, windows).stats  # the default: a sample of 100
    assert "at most 100 traces per slice" in default["retrieval"], default["retrieval"]
    assert "BAYNET_TRACES_SAMPLE_PER_SLICE" in default["retrieval"]
    full = TempoTraces(stack.settings(traces_sample_per_slice=0)).fetch(event, windows).stats  # no sample
    assert "BAYNET_TRACES_SAMPLE_PER_SLICE" not in full["retrieval"]
    assert traces["traces_fetched"] < full["traces_fetched"], (traces["traces_fetched"], full["traces_fetched"])
    ranking = analyse(event, observations, DBNModel(), settings).ranking
    assert ranking[0]["service"] == "carts"


def test_without_generator_series_istio_and_the_full_budget_are_used(incident, tmp_path):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    paths = write_incident(incident, tmp_path / "incident")
    paths["openmetrics"].write_text(istio_openmetrics(incident.spans, incident.namespace))
    with LocalStack(tmp_path, traces=paths["traces"], openmetrics=paths["openmetrics"]) as st:
        settings = st.settings()
        event, windows = _windows(incident, settings)
        assert not has_generator_series(settings, windows)
        _, _, stats = fetch_metrics(windows, settings)
        assert stats["aggregates"].startswith("Istio") and "no Tempo metrics-generator" in stats["aggregates"]
        traces = TempoTraces(st.settings(traces_sample_per_slice=20)).fetch(event, windows).stats
        assert "BAYNET_TRACES_SAMPLE_PER_SLICE" not in traces["retrieval"]  # no aggregates: no sample


def test_an_operator_can_keep_istio_where_the_generator_writes_too(stack, incident):
    settings = stack.settings(aggregates="istio")
    event, windows = _windows(incident, settings)
    assert not has_generator_series(settings, windows)
    signals, _, stats = fetch_metrics(windows, settings)
    assert stats["aggregates"] == "Istio and the metric map (BAYNET_AGGREGATES=istio)"
    assert "latency_ms_p50" not in signals  # the demo's Istio series carry counts only


def test_span_metrics_without_the_service_graph_still_give_the_services(incident, tmp_path):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    paths = write_incident(incident, tmp_path / "incident")
    text = paths["openmetrics"].read_text()
    kept = [line for line in text.splitlines() if "traces_service_graph" not in line]
    assert len(kept) < len(text.splitlines())
    paths["openmetrics"].write_text("\n".join(kept) + "\n")
    with LocalStack(tmp_path, traces=paths["traces"], openmetrics=paths["openmetrics"]) as st:
        settings = st.settings()
        event, windows = _windows(incident, settings)
        signals, _, stats = fetch_metrics(windows, settings)
        assert stats["aggregates"].endswith("0 edges (service graph)"), stats["aggregates"]
        assert (signals["source"] == "").all() and "carts" in set(signals["destination"])
        observations = gather(event, windows, [TempoTraces(settings), PrometheusMetrics(settings)])
        assert analyse(event, observations, DBNModel(), settings).ranking[0]["service"] == "carts"
