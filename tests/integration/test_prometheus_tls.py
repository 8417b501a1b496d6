"""A Prometheus behind a private CA (Debian's Prometheus serving HTTPS with a certificate we sign): every
reader -- the metric evidence, the versions, the topology -- reaches it through the one client and
``BAYNET_CA_BUNDLE``; without the CA the failure is reported as such, never a silent "metrics alone"."""

from __future__ import annotations

import datetime
import ipaddress
import time

import pytest

from baynet.analysis.topology import read_topology
from baynet.events import parse_object
from baynet.lab.detector.demo import merge_openmetrics
from baynet.lab.generator import container_openmetrics, generate, istio_openmetrics
from baynet.local.stack import PrometheusServer, prometheus_available
from baynet.prometheus import PrometheusUnavailable
from baynet.settings import Settings
from baynet.sources import gather
from baynet.sources.prometheus import IstioVersions, PrometheusMetrics
from baynet.windows import Windows
from tests.conftest import require

pytestmark = pytest.mark.integration


def _private_ca(directory):
    """A CA and a certificate for 127.0.0.1 signed by it, as PEM files: (cert, key, ca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("baynet test CA")).issuer_name(name("baynet test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "server.pem", directory / "server.key", directory / "ca.pem"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory):
    require(prometheus_available(), "Debian's prometheus and promtool (apt-get install -y prometheus)")
    work = tmp_path_factory.mktemp("tls")
    inc = generate("sock-shop", "carts", "latency", fault_start=time.time() - 400, before_s=900, after_s=300)
    om = work / "metrics.om"
    om.write_text(merge_openmetrics([istio_openmetrics(inc.spans, inc.namespace), container_openmetrics(inc)]))
    cert, key, ca = _private_ca(work)
    server = PrometheusServer(om, work / "prometheus", tls=(cert, key, ca)).start()
    yield server, ca, inc
    server.stop()


def _settings(server, inc, **extra):
    return Settings(prometheus_url=server.url, namespace=inc.namespace, tempo_url="http://127.0.0.1:9",
                    _env_file=None, **extra)


def test_with_the_ca_bundle_every_reader_gets_through(tls_prometheus):
    server, ca, inc = tls_prometheus
    settings = _settings(server, inc, ca_bundle=ca)
    (event,) = parse_object(inc.event)
    windows = Windows.around(event.unix, settings)
    observed = PrometheusMetrics(settings).fetch(event, windows)
    signals = observed.tables["signals"]
    assert signals is not None and "carts" in set(signals["destination"])
    assert observed.tables["resources"] is not None
    assert IstioVersions(settings).fetch(event, windows).kind == "changes"
    topology = read_topology(settings, event.unix)
    assert ("orders", "carts") in topology.edges or ("front-end", "carts") in topology.edges


def test_without_it_the_tls_failure_is_named_and_the_evidence_marked_partial(tls_prometheus):
    server, _, inc = tls_prometheus
    settings = _settings(server, inc, prometheus_max_retries=0)
    (event,) = parse_object(inc.event)
    windows = Windows.around(event.unix, settings)
    with pytest.raises(PrometheusUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        PrometheusMetrics(settings).fetch(event, windows)
    # Beside a source that answers, the failure is a reason in the run's report, not silence.
    from baynet.sources.base import Observed

    class Answering:
        name, kind, unavailable = "fixed", "traces", ()

        def fetch(self, event, windows):
            import pandas as pd

            return Observed("traces", {"spans": pd.DataFrame({"trace_id": ["t"]})})

    observations = gather(event, windows, [Answering(), PrometheusMetrics(settings)])
    stats = observations.stats()
    assert stats["evidence_complete"] is False
    assert any("no metrics" in r and "certificate" in r.lower() for r in stats["partial_reasons"])
