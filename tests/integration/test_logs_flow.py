"""The incident flow with Loki as a source, on the Loki-compatible stand-in over real HTTP: the logs carry the
fault into the ranking; Loki down or empty leaves a complete run marked partial; a query Loki rejects fails
the run with Loki's own message."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prefect_harness):
    work = tmp_path_factory.mktemp("logs")
    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, after_s=300)
    paths = write_incident(incident, work / "incident")
    with LocalStack(work, traces=paths["traces"], logs=paths["logs"], use_prometheus=False,
                    namespace=incident.namespace) as st:
        yield st, incident


def run(stack, **overrides):
    from flows.incident import incident_rca

    st, incident = stack
    settings = st.settings(tempo_max_retries=0, **overrides)
    message = json.dumps({**incident.event, "id": f"logs-{uuid.uuid4().hex[:8]}"})
    state = incident_rca(message, settings=settings, return_state=True)
    return state, (state.result() if state.is_completed() else None)


def test_logs_are_read_and_name_the_fault(stack):
    st, incident = stack
    state, result = run(stack)
    assert state.is_completed()
    assert result["fetch"]["sources"] == ["traces", "logs"] and result["fetch"]["log_lines"] > 1000
    top = result["ranking"][0]
    assert top["service"] == incident.fault_service
    assert "own work (logs) severe" in top["why"] and "new ERROR" in top["evidence"]
    assert "/loki/api/v1/query_range" in st.loki.requests


def test_loki_down_the_run_completes_on_the_traces_marked_partial(stack):
    state, result = run(stack, loki_url=f"http://127.0.0.1:{free_port()}", loki_max_retries=0)
    assert state.is_completed()
    fetch = result["fetch"]
    assert fetch["sources"] == ["traces"] and fetch["evidence_complete"] is False
    assert any(r.startswith("no logs:") for r in fetch["partial_reasons"])


def test_loki_empty_the_run_completes_marked_partial(stack):
    state, result = run(stack, loki_selector='{namespace="nobody-logs-here"}')
    assert state.is_completed()
    assert any(r.startswith("no logs:") and "holds no line" in r for r in result["fetch"]["partial_reasons"])


def test_a_query_loki_rejects_fails_the_run_with_loki_s_message(stack):
    state, _ = run(stack, loki_selector='{namespace="$namespace"')
    assert state.is_failed()
    with pytest.raises(Exception, match=r"Loki rejected .*parse error at line 1"):
        state.result()
