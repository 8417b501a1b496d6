"""The detector reads Debian's Prometheus through the metric map, and its adapters read the public data."""

from __future__ import annotations

import time

import numpy as np
import pytest

from baynet.families import fetch_series, load_metric_map
from baynet.prometheus import PrometheusClient, PrometheusRejected
from baynet.local.stack import PrometheusServer, prometheus_available
from tests.conftest import SHARED, require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    from baynet.lab.detector.demo import merge_openmetrics
    from baynet.lab.generator import container_openmetrics, generate, istio_openmetrics

    inc = generate("petclinic", "vets-service", "gray", fault_start=time.time() - 600, before_s=600, after_s=240)
    d = tmp_path_factory.mktemp("prom")
    om = d / "metrics.om"
    om.write_text(merge_openmetrics([istio_openmetrics(inc.spans, inc.namespace), container_openmetrics(inc)]))
    server = PrometheusServer(om, d / "prometheus").start()
    yield server, inc
    server.stop()


def test_the_istio_cadvisor_map_gives_every_family_per_service(prometheus):
    server, inc = prometheus
    start = inc.fault_start - 540
    with PrometheusClient(server.url) as prom:
        frames = fetch_series(prom, load_metric_map("istio-cadvisor"), start, inc.fault_start + 200, 15,
                              namespace=inc.namespace)
    assert set(frames) == {"api-gateway", "customers-service", "vets-service", "visits-service", "mysql"}
    vets = frames["vets-service"]
    assert {"cpu", "mem", "net_rx", "net_tx", "load", "lat_p50", "lat_p90", "lat_p99", "net_lat"} <= set(vets.columns)
    before, after = vets[vets.index < inc.fault_start - 60], vets[vets.index > inc.fault_start + 60]
    # callers' client spans wrap the server span by 0.4 ms: a small gap, read through the buckets
    assert 0 <= before["net_lat"].median() < 2
    # the generator puts 0.3 cores of contention into the faulty container and slows a share of requests
    assert after["cpu"].median() - before["cpu"].median() == pytest.approx(0.3, abs=0.08)
    assert after["lat_p90"].median() > 2 * before["lat_p90"].median()
    assert "load" not in frames["api-gateway"]  # the entry service has no inbound mesh traffic
    assert np.isfinite(frames["mysql"]["load"].dropna()).all()


def test_a_bad_query_names_itself(prometheus):
    server, inc = prometheus
    with PrometheusClient(server.url) as prom, pytest.raises(PrometheusRejected, match="sum by"):
        prom.query_range("sum by (", inc.fault_start - 60, inc.fault_start, 15)


def test_dataset_adapters_read_the_public_data():
    from baynet.lab.detector.datasets import nezha_cases, rcd_cases

    rcd = SHARED / "datasets" / "rcd-sockshop"
    require(rcd.is_dir(), f"RCD Sock Shop data at {rcd}")
    cases = rcd_cases(rcd)
    assert len(cases) == 50 and {c.group for c in cases} == {"carts", "catalogue", "orders", "payment", "user"}
    case = next(c for c in cases if c.name == "carts-cpu/1")
    carts = next(s for s in case.services if s.service == "carts")
    (fault,) = case.faults
    assert fault.service == "carts" and set(carts.labels[fault.start:fault.end]) == {1}
    assert set(carts.labels[:fault.start]) == {0}
    other = next(s for s in case.services if s.service == "orders")
    assert set(other.labels[fault.start:]) == {-1}  # a neighbour during the fault is not scored
    nezha = SHARED / "datasets" / "nezha" / "onlineboutique"
    require(nezha.is_dir(), f"Nezha data at {nezha}")
    days = nezha_cases(nezha)
    assert [d.group for d in days] == ["2022-08-22", "2022-08-23"] and all(d.step_s == 60 for d in days)
    for day in days:
        assert day.faults and all(f.end > f.start for f in day.faults)
        for s in day.services:  # the reference (quiet hours) comes after every scored window
            assert s.reference.index.min() > s.observed.index.max()
