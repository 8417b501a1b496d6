"""Settings travel as an object, not through ``os.environ``: the consumer and the real incident flow run two
analyses with different settings in one process, and the environment is the same before and after."""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from baynet.cli.common import incident_runner
from baynet.consumer import run_consumer
from baynet.lab.generator import generate, write_incident
from baynet.local.stack import LocalStack

pytestmark = pytest.mark.integration


def test_two_analyses_with_different_settings_in_one_process(tmp_path, prefect_harness):
    incident = generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900, after_s=300)
    paths = write_incident(incident, tmp_path / "incident")
    with LocalStack(tmp_path, traces=paths["traces"], use_prometheus=False) as stack:
        environment = dict(os.environ)
        runs = {"three-slices": stack.settings(sqs_wait_seconds=1, slices=3, artifacts_dir=tmp_path / "a"),
                "two-slices": stack.settings(sqs_wait_seconds=1, slices=2, window_s=30, artifacts_dir=tmp_path / "b")}
        for name, settings in runs.items():
            stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({**incident.event, "id": name}))
            outcomes = run_consumer(settings, incident_runner, max_messages=1, idle_polls=3)
            assert [o.result for o in outcomes] == ["analysed"]
        assert dict(os.environ) == environment
    windows = {name: sorted(pd.read_csv(settings.artifacts_dir / "incidents" / name / "evidence.csv")["window"].unique())
               for name, settings in runs.items()}
    assert windows == {"three-slices": [-1, 0, 1, 2], "two-slices": [-1, 0, 1]}
    assert not (tmp_path / "a" / "incidents" / "two-slices").exists()  # each went where its settings said
