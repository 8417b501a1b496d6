"""The local stack on 127.0.0.1 for the demo and the tests: moto's SQS/S3 server, the Tempo-compatible
replay server and, when Debian's ``prometheus`` is installed, a real Prometheus with Istio series
backfilled by ``promtool tsdb create-blocks-from openmetrics``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from baynet.tempo.server import TempoServer, TraceStore

log = logging.getLogger(__name__)

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s ({last})")


class MotoServer:
    """moto in server mode (real HTTP; boto3 pointed at it with ``endpoint_url``)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        for key, val in FAKE_AWS.items():
            os.environ.setdefault(key, val)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_http(f"{self.url}/moto-api/")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.stop()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1")


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


class PrometheusServer:
    """Debian's Prometheus over a TSDB backfilled from an OpenMetrics file."""

    def __init__(self, openmetrics: Path, workdir: Path, port: int | None = None):
        self.openmetrics, self.workdir = Path(openmetrics), Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrometheusServer":
        if not prometheus_available():
            raise RuntimeError("prometheus/promtool not installed (apt-get install -y prometheus)")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(self.openmetrics), str(data)],
                       check=True, capture_output=True, text=True)
        config = self.workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        log_file = open(self.workdir / "prometheus.log", "w")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=30d"],
            stdout=log_file, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/-/ready", 60)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class LocalStack:
    """Start what an incident analysis talks to; ``env`` holds the BAYNET_* settings that point at it."""

    def __init__(self, workdir: Path, traces: Path | None = None, openmetrics: Path | None = None,
                 queue_name: str = "baynet-anomalies", max_receive_count: int = 3, visibility_s: int = 120,
                 use_prometheus: bool = True):
        self.workdir = Path(workdir)
        self.traces, self.openmetrics = traces, openmetrics
        self.queue_name, self.max_receive_count, self.visibility_s = queue_name, max_receive_count, visibility_s
        self.use_prometheus = use_prometheus
        self._stack = ExitStack()
        self.env: dict[str, str] = {}

    def __enter__(self) -> "LocalStack":
        from baynet.sqs import create_queues

        try:
            self.moto = MotoServer().start()
            self._stack.callback(self.moto.stop)
            store = TraceStore()
            if self.traces:
                store.load_dir(self.traces)
            self.tempo = TempoServer(store).start()
            self._stack.callback(self.tempo.stop)
            self.prometheus = None
            if self.use_prometheus and self.openmetrics and prometheus_available():
                self.prometheus = PrometheusServer(self.openmetrics, self.workdir / "prometheus").start()
                self._stack.callback(self.prometheus.stop)
            self.sqs = self.moto.client("sqs")
            self.queue_url, self.dlq_url = create_queues(self.sqs, self.queue_name,
                                                         max_receive_count=self.max_receive_count,
                                                         visibility_timeout=self.visibility_s)
        except BaseException:
            self._stack.close()
            raise
        self.env = {
            **FAKE_AWS,
            "BAYNET_SQS_QUEUE_URL": self.queue_url, "BAYNET_SQS_DLQ_URL": self.dlq_url,
            "BAYNET_AWS_ENDPOINT_URL": self.moto.url, "BAYNET_TEMPO_URL": self.tempo.url,
            "BAYNET_ARTIFACTS_DIR": str(self.workdir / "artifacts"),
        }
        if self.prometheus:
            self.env["BAYNET_PROMETHEUS_URL"] = self.prometheus.url
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
