"""Shared fixtures. Real servers (moto, Prometheus, the Prefect harness) start once per session."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Task-level retries wait 0.2, 0.4, 0.8 s in tests instead of 2, 4, 8 s (read when tasks are imported).
os.environ.setdefault("BAYNET_IO_RETRY_BACKOFF_S", "0.2")
import tasks.retry  # noqa: E402,F401  (import now, before a fixture clears BAYNET_*)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CONTRACTS = SHARED / "contracts"
IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip locally when something external is missing; in CI that is a failure, not a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must have this: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def contracts() -> Path:
    require(CONTRACTS.is_dir(), f"genuine wire samples expected at {CONTRACTS}")
    return CONTRACTS


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def moto_server():
    from baynet.local.stack import MotoServer

    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def baynet_env(monkeypatch, tmp_path):
    """Clear BAYNET_* from the environment and point artifacts at a temporary directory."""
    for key in list(os.environ):
        if key.startswith("BAYNET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BAYNET_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return monkeypatch


@pytest.fixture
def incident():
    """A generated sock-shop incident: latency in carts, fault 10 minutes ago."""
    from baynet.lab.generator import generate

    return generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900, rate_per_s=2.0)
