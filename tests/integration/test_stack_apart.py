"""The local stack with its Tempo and Loki stand-ins as processes of their own (``LocalStack(apart=True)``,
the demo's): the incident flow reads both over HTTP, the children stop with the stack, and a child that
cannot start fails the stack with its own output."""

from __future__ import annotations

import json
import os
import time

import pytest

from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack

pytestmark = pytest.mark.integration


def test_the_flow_reads_stand_ins_that_run_as_processes_of_their_own(tmp_path, prefect_harness):
    from flows.incident import incident_rca

    incident = generate("sock-shop", "payment", "errors", fault_start=time.time() - 600, before_s=900, after_s=300)
    paths = write_incident(incident, tmp_path / "incident")
    with LocalStack(tmp_path, traces=paths["traces"], logs=paths["logs"], use_prometheus=False,
                    namespace=incident.namespace, apart=True) as st:
        children = [st.tempo.proc, st.loki.proc]
        assert all(p is not None and p.pid != os.getpid() and p.poll() is None for p in children)
        state = incident_rca(json.dumps(incident.event), settings=st.settings(tempo_max_retries=0),
                             return_state=True)
        assert state.is_completed()
        result = state.result()
    assert result["fetch"]["sources"] == ["traces", "logs"] and result["fetch"]["log_lines"] > 1000
    assert result["ranking"][0]["service"] == incident.fault_service
    assert all(p.poll() is not None for p in children), "the stand-ins stop with the stack"
    assert f"from {paths['traces']}" in (tmp_path / "logs" / "tempo.log").read_text()  # its output kept


def test_a_stand_in_that_cannot_start_fails_the_stack_with_its_output(tmp_path):
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "broken.json").write_text('{"batches": [')
    with pytest.raises(RuntimeError, match="the tempo stand-in exited") as info:
        with LocalStack(tmp_path, traces=traces, use_prometheus=False, apart=True):
            pass
    assert "broken.json" in str(info.value)
