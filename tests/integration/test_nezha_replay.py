"""One Nezha Online Boutique fault replayed through the Tempo-compatible server and the real flow."""

import io
import os

import pandas as pd
import pytest

from baynet.lab.datasets.nezha import list_cases, normal_trace_files
from baynet.lab.harness import case_bundle, replay_case
from baynet.local.tempo import TempoServer
from tests.conftest import SHARED, require

pytestmark = pytest.mark.integration

DATA = SHARED / "datasets" / "nezha" / "onlineboutique"


def test_cpu_contention_shows_as_the_injected_services_latency_shift(prefect_harness, baynet_env, tmp_path):
    require(DATA.is_dir(), f"Nezha data at {DATA}")
    case = next(c for c in list_cases(DATA) if c.trace_files and c.fault_type == "cpu_contention"
                and c.truth == "checkoutservice")
    store, event, _, _ = replay_case(case_bundle(case, DATA, normal_trace_files(DATA), tmp_path / "bundle"))
    with TempoServer(store) as tempo:
        baynet_env.setenv("BAYNET_TEMPO_URL", tempo.url)
        from flows.incident import incident_rca

        result = incident_rca(event)
    assert any(r.startswith("/api/traces/") for r in tempo.requests)  # fetched over HTTP, trace by trace
    evidence = pd.read_csv(io.StringIO(open(result["artifacts"]["evidence.csv"]).read()))
    checkout = evidence[evidence.service == "checkoutservice"].set_index("window")
    incident = checkout.loc[checkout.index >= 0]
    assert (incident.self_p95_ms > 2 * checkout.loc[-1, "self_p95_ms"]).all()
    assert (incident.own_state >= 1).all()
    assert result["ranking"][0]["service"] == "checkoutservice"
    assert os.path.exists(result["artifacts"]["structure.html"])
