"""Topology read from a real Prometheus (Debian's package) with Istio series backfilled by promtool."""

import time

import pytest

from baynet.lab.generator import generate, istio_openmetrics
from baynet.local.stack import PrometheusServer, prometheus_available
from baynet.prometheus import PrometheusClient, PrometheusRejected, PrometheusUnavailable
from baynet.topology import PROM_EDGE_QUERY, TopologyError, topology_from_prometheus
from tests.conftest import require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    require(prometheus_available(), "Debian's prometheus package (apt-get install -y prometheus)")
    work = tmp_path_factory.mktemp("prom")
    incident = generate("petclinic", "mysql", "errors", fault_start=time.time() - 600, before_s=900, after_s=300)
    om = work / "istio.om"
    om.write_text(istio_openmetrics(incident.spans, "petclinic"))
    server = PrometheusServer(om, work).start()
    yield server, incident
    server.stop()


def test_topology_matches_the_calls_and_is_not_double_counted(prometheus):
    server, incident = prometheus
    at = incident.fault_start - 60  # before the fault: no errors yet
    client = PrometheusClient(server.url)
    topo = topology_from_prometheus(client, "petclinic", 600, at=at)
    by_id = {(s.trace_id, s.span_id): s for s in incident.spans}
    expected: dict = {}
    for s in incident.spans:
        parent = by_id.get((s.trace_id, s.parent_span_id))
        if s.kind == "server" and parent and parent.service != s.service and at - 600 < s.start_ns / 1e9 <= at:
            expected[(parent.service, s.service)] = expected.get((parent.service, s.service), 0) + 1
    assert set(topo.edges) == set(expected)
    for key, count in expected.items():
        # one reporter: the rate matches the calls (both reporters would double it)
        assert topo.edges[key].rate * 600 == pytest.approx(count, rel=0.15)
        assert topo.edges[key].error_rate == 0.0
    during = topology_from_prometheus(client, "petclinic", 120, at=incident.fault_start + 240)
    assert during.edges[("vets-service", "mysql")].error_rate > 0.3


def test_bad_promql_is_a_clear_error(prometheus):
    server, _ = prometheus
    with pytest.raises(PrometheusRejected, match="bad_data|parse error"):
        PrometheusClient(server.url).query("sum(rate(x{[5m]))")
    with pytest.raises(TopologyError, match="rejected"):  # not retried by the tasks (tasks/retry.py)
        topology_from_prometheus(PrometheusClient(server.url), 'quote"d', 600)
    assert "reporter=\"destination\"" in PROM_EDGE_QUERY


def test_prometheus_down_is_reported():
    client = PrometheusClient("http://127.0.0.1:9", max_retries=1)
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        client.query("up")
    with pytest.raises(TopologyError, match="unreachable"):
        topology_from_prometheus(client, "default", 600)
