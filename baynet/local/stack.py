"""The local stack on 127.0.0.1 for the demo and the tests: moto's SQS/S3 server, the Tempo-compatible
replay server (and the Loki-compatible one, with logs) and, when Debian's ``prometheus`` is installed, a real
Prometheus with Istio series backfilled by ``promtool tsdb create-blocks-from openmetrics``. The stand-ins run
as threads of this process (the tests reach into them), or with ``apart=True`` (the demo) as processes of
their own, as the real servers are.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import httpx

from baynet.local.tempo import TempoServer, TraceStore

if TYPE_CHECKING:
    import pandas as pd

    from baynet.settings import Settings

log = logging.getLogger(__name__)

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0, verify: bool | str = True,
              gone: Callable[[], str | None] | None = None) -> None:
    """Wait until ``url`` answers 200; ``gone``: why the server will never answer (it exited), or None."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        reason = gone() if gone else None
        if reason:
            raise RuntimeError(reason)
        try:
            if httpx.get(url, timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s ({last})")


class ChildServer:
    """A stand-in run as a process of its own (``python -m baynet.cli NAME serve …``), as the real server
    is: the analysis in this process then shares its interpreter lock with none of the server's work.
    Its output goes to ``<workdir>/logs/NAME.log``."""

    def __init__(self, name: str, args: list[str], workdir: Path):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "baynet.cli", name, "serve", *args, "--port", str(self.port)]
        self.log = Path(workdir) / "logs" / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ChildServer":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # a plain traceback in the log: a boxed one is wrapped at 80 columns, paths and all
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=str(ROOT), env={**os.environ, "TYPER_STANDARD_TRACEBACK": "1"})
        return self

    def ready(self, timeout_s: float = 120.0) -> "ChildServer":
        """Wait for ``/ready``; a child that exits first fails with the end of its log."""
        wait_http(f"{self.url}/ready", timeout_s, gone=self._exited)
        return self

    def _exited(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-1500:]
        return f"the {self.name} stand-in exited with {self.proc.returncode}: {tail}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


def prometheus_argv(openmetrics: Path, workdir: Path, port: int, tls: tuple[Path, Path] | None = None) -> list[str]:
    """Backfill a TSDB under ``workdir`` from ``openmetrics`` with promtool; the command that serves it
    (over HTTPS with ``tls``: a certificate and its key, through Prometheus' web configuration file)."""
    if not prometheus_available():
        raise RuntimeError("prometheus/promtool not installed (apt-get install -y prometheus)")
    data = Path(workdir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data)],
                   check=True, capture_output=True, text=True)
    config = Path(workdir) / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    argv = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d"]
    if tls:
        web = Path(workdir) / "web.yml"
        web.write_text(f"tls_server_config:\n  cert_file: {tls[0]}\n  key_file: {tls[1]}\n")
        argv.append(f"--web.config.file={web}")
    return argv


class PrometheusServer:
    """Debian's Prometheus over a TSDB backfilled from an OpenMetrics file; over HTTPS with ``tls``
    (certificate, key, and the CA that signed them, which the readiness check trusts)."""

    def __init__(self, openmetrics: Path, workdir: Path, port: int | None = None,
                 tls: tuple[Path, Path, Path] | None = None):
        self.openmetrics, self.workdir = Path(openmetrics), Path(workdir)
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrometheusServer":
        argv = prometheus_argv(self.openmetrics, self.workdir, self.port,  # creates the workdir
                               self.tls[:2] if self.tls else None)
        log_file = open(self.workdir / "prometheus.log", "w")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/-/ready", 60, verify=str(self.tls[2]) if self.tls else True)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class LocalStack:
    """Start what an incident analysis talks to; ``env`` holds the BAYNET_* settings that point at it. With
    ``logs`` (a ``logs.csv`` file or its rows) the Loki stand-in starts too, its lines pushed under
    ``namespace``."""

    def __init__(self, workdir: Path, traces: Path | None = None, openmetrics: Path | None = None,
                 queue_name: str | None = None, max_receive_count: int = 3, visibility_s: int = 120,
                 use_prometheus: bool = True, logs: "Path | pd.DataFrame | None" = None,
                 namespace: str = "default", apart: bool = False):
        """``apart``: the Tempo and Loki stand-ins run as processes of their own (:class:`ChildServer`), as
        the real servers do, instead of threads of this process (which tests can reach into: ``inject``)."""
        self.workdir = Path(workdir)
        self.apart = apart
        self.traces, self.openmetrics = traces, openmetrics
        self.logs, self.namespace = logs, namespace
        # One queue per stack: moto keeps queues for the life of the process, and SQS refuses to create a
        # queue again under the same name with other attributes.
        import uuid

        self.queue_name = queue_name or f"baynet-anomalies-{uuid.uuid4().hex[:8]}"
        self.max_receive_count, self.visibility_s = max_receive_count, visibility_s
        self.use_prometheus = use_prometheus
        self._stack = ExitStack()
        self.env: dict[str, str] = {}

    def __enter__(self) -> "LocalStack":
        from baynet.sqs import create_queues

        try:
            self.loki = None
            children = self._start_children() if self.apart else []
            self.moto = MotoServer().start()
            self._stack.callback(self.moto.stop)
            if not self.apart:
                store = TraceStore()
                if self.traces:
                    store.load_dir(self.traces)
                self.tempo = TempoServer(store).start()
                self._stack.callback(self.tempo.stop)
            self.prometheus = None
            if self.use_prometheus and self.openmetrics and prometheus_available():
                self.prometheus = PrometheusServer(self.openmetrics, self.workdir / "prometheus").start()
                self._stack.callback(self.prometheus.stop)
            if self.apart:
                for child in children:
                    child.ready()
            elif self.logs is not None:
                import pandas as pd

                from baynet.local.loki import LokiServer, push_logs

                self.loki = LokiServer().start()
                self._stack.callback(self.loki.stop)
                rows = self.logs if isinstance(self.logs, pd.DataFrame) else pd.read_csv(
                    self.logs, dtype=str, keep_default_na=False)
                push_logs(self.loki.url, rows, self.namespace)
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
        if self.loki:
            self.env["BAYNET_LOKI_URL"] = self.loki.url
        return self

    def _start_children(self) -> list[ChildServer]:
        """The Tempo and (with logs) Loki stand-ins as processes of their own, started at once."""
        traces = Path(self.traces) if self.traces else self.workdir / "no-traces"
        if not self.traces:
            traces.mkdir(parents=True, exist_ok=True)
        self.tempo = ChildServer("tempo", [str(traces)], self.workdir)
        children = [self.tempo]
        if self.logs is not None:
            logs = self.logs
            if not isinstance(logs, (str, Path)):
                logs = self.workdir / "loki-logs.csv"
                self.logs.to_csv(logs, index=False)
            self.loki = ChildServer("loki", ["--logs", str(logs), "--namespace", self.namespace], self.workdir)
            children.append(self.loki)
        for child in children:
            self._stack.callback(child.stop)
            child.start()
        return children

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def settings(self, **overrides: Any) -> "Settings":
        """Settings pointing at this stack (``overrides`` on top, by field name), built without touching
        ``os.environ``: two analyses with different settings can share one process."""
        from baynet.settings import Settings

        fields = {key.removeprefix("BAYNET_").lower(): value for key, value in self.env.items()
                  if key.startswith("BAYNET_")}
        return Settings(**{**fields, **overrides})


def server_logs_to(path: Path) -> Path:
    """The local servers' request logs (moto's and the stand-ins' werkzeug lines) go to ``path``, not to
    the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    access = logging.getLogger("werkzeug")
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    return path


# ---------------------------------------------------------------------------------------------
# `baynet stack up/down`: the same pieces as separate, detached processes that outlive the command,
# plus a Prefect server, the deployments of prefect.yaml with their worker(s), the SQS listener that
# triggers the incident deployment, and the report pages. What was started is recorded in
# <dir>/stack.json so that `down` stops exactly that.

ROOT = Path(__file__).resolve().parents[2]  # the repository: prefect.yaml and the flows
STATE = "stack.json"


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str], cwd: Path | None = None
           ) -> dict[str, Any]:
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (handed to the child)
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=str(cwd or workdir), start_new_session=True)
    log_file.close()
    return {"name": name, "pid": proc.pid, "argv": argv, "log": str(logs / f"{name}.log")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_state(workdir: Path) -> dict[str, Any] | None:
    path = Path(workdir) / STATE
    return json.loads(path.read_text()) if path.exists() else None


def stack_down(workdir: Path, timeout_s: float = 20.0) -> list[str]:
    """Stop the processes `stack_up` recorded in ``workdir`` (their whole process groups); newest first."""
    import signal

    state = read_state(workdir)
    if state is None:
        return []
    stopped = []
    for proc in reversed(state["processes"]):
        pid = proc["pid"]
        if not _alive(pid):
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped.append(proc["name"])
    (Path(workdir) / STATE).unlink(missing_ok=True)
    return stopped


def stack_up(workdir: Path, *, traces: Path | None = None, openmetrics: Path | None = None,
             logs: Path | None = None, prefect_port: int = 4200, sqs_port: int = 5000, tempo_port: int = 3200,
             prometheus_port: int = 9090, loki_port: int = 3100, report_port: int = 8080, workers: int = 1,
             worker_limit: int | None = None, listener: bool = True, refresh_interval_s: int | None = None,
             extra_env: dict[str, str] | None = None, progress: Any = None) -> dict[str, Any]:
    """Start the local stack as detached processes; return the recorded state (urls, env, processes).
    ``worker_limit``: flow runs each worker runs at once (default: this machine's cores)."""
    workdir = Path(workdir).resolve()
    if read_state(workdir) is not None:
        raise RuntimeError(f"a stack is already recorded in {workdir / STATE}: run `baynet stack down` first")
    workdir.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda text: None)
    py = sys.executable
    state: dict[str, Any] = {"dir": str(workdir), "processes": [], "urls": {}}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BAYNET_", "PREFECT_"))}
    base_env.update(FAKE_AWS)
    base_env["TYPER_STANDARD_TRACEBACK"] = "1"  # plain tracebacks in the processes' logs (not boxed, not wrapped)
    base_env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "GX_ANALYTICS_ENABLED": "False"})

    def record(proc: dict[str, Any]) -> None:
        state["processes"].append(proc)
        atomic_json(workdir / STATE, state)

    try:
        prefect_url = f"http://127.0.0.1:{prefect_port}"
        prefect_env = {**base_env, "PREFECT_HOME": str(workdir / "prefect"),
                       "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "10",
                       "PREFECT_UI_API_URL": f"{prefect_url}/api"}
        record(_spawn("prefect-server", [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(prefect_port)], workdir, prefect_env))
        moto_url = f"http://127.0.0.1:{sqs_port}"
        record(_spawn("moto", [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(sqs_port)], workdir, base_env))
        tempo_url = f"http://127.0.0.1:{tempo_port}"
        traces_dir = traces or (workdir / "no-traces")
        traces_dir.mkdir(parents=True, exist_ok=True)
        record(_spawn("tempo", [py, "-m", "baynet.cli", "tempo", "serve", str(traces_dir), "--port",
                                str(tempo_port)], workdir, base_env))
        loki_url = None
        if logs:
            loki_url = f"http://127.0.0.1:{loki_port}"
            record(_spawn("loki", [py, "-m", "baynet.cli", "loki", "serve", "--logs", str(logs), "--port",
                                   str(loki_port)], workdir, base_env))
        prom_url = None
        if openmetrics and prometheus_available():
            argv = prometheus_argv(openmetrics, workdir / "prometheus", prometheus_port)
            record(_spawn("prometheus", argv, workdir, base_env))
            prom_url = f"http://127.0.0.1:{prometheus_port}"
        wait_http(f"{moto_url}/moto-api/", 60)
        wait_http(f"{tempo_url}/ready", 120)
        say(f"SQS/S3 (moto) {moto_url}; Tempo-compatible {tempo_url}")
        if loki_url:
            wait_http(f"{loki_url}/ready", 120)
            say(f"Loki-compatible {loki_url}")
        if prom_url:
            wait_http(f"{prom_url}/-/ready", 60)
            say(f"Prometheus {prom_url}")
        import boto3

        from baynet.sqs import create_queues

        sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        queue_url, dlq_url = create_queues(sqs, "baynet-anomalies", visibility_timeout=300)
        env = {"BAYNET_SQS_QUEUE_URL": queue_url, "BAYNET_SQS_DLQ_URL": dlq_url, "BAYNET_AWS_ENDPOINT_URL": moto_url,
               "BAYNET_TEMPO_URL": tempo_url, "BAYNET_ARTIFACTS_DIR": str(workdir / "artifacts"),
               "PREFECT_API_URL": f"{prefect_url}/api", **FAKE_AWS}
        if prom_url:
            env["BAYNET_PROMETHEUS_URL"] = prom_url
        if loki_url:
            env["BAYNET_LOKI_URL"] = loki_url
        env.update(extra_env or {})
        state["env"] = env
        state["urls"] = {"prefect": prefect_url, "sqs": moto_url, "tempo": tempo_url, "prometheus": prom_url,
                         "loki": loki_url,
                         "report": f"http://127.0.0.1:{report_port}/baynet", "queue": queue_url, "dlq": dlq_url}
        atomic_json(workdir / STATE, state)
        wait_http(f"{prefect_url}/api/health", 180)
        say(f"Prefect server and UI {prefect_url}")
        run_env = {**base_env, **env}
        prefect = [py, "-m", "prefect"]
        subprocess.run(prefect + ["work-pool", "create", "baynet", "--type", "process", "--overwrite"],
                       env=run_env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
        deploy = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], env=run_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        if deploy.returncode != 0:
            raise RuntimeError(f"prefect deploy failed:\n{deploy.stdout[-2000:]}{deploy.stderr[-2000:]}")
        if refresh_interval_s:
            set_refresh_interval(f"{prefect_url}/api", refresh_interval_s)
        say("deployments from prefect.yaml: incident-rca, topology-refresh, detect-anomalies, backfill, "
            "confirm-root-cause")
        # Each flow run is a process of its own: more at once than cores only slows every one of them.
        limit = worker_limit or max(1, os.cpu_count() or 1)
        for i in range(1, workers + 1):
            # Workers poll every few seconds, each at its own pace and start: Prefect 3.8's SQLite server can
            # deadlock for its 60 s busy timeout when two polls collide (PrefectHQ/prefect#23051).
            worker_env = {**run_env, "PREFECT_WORKER_QUERY_SECONDS": str(3 + 2 * i)}
            record(_spawn(f"worker-{i}", prefect + ["worker", "start", "--pool", "baynet", "--name",
                                                    f"baynet-worker-{i}", "--limit", str(limit)],
                                workdir, worker_env, cwd=ROOT))
            time.sleep(1.3)
        say(f"{workers} worker(s) on work pool 'baynet', each running at most {limit} flow run(s) at once")
        if listener:
            record(_spawn("listener", [py, "-m", "baynet.cli", "listen", "--deployment", "incident-rca/incident-rca"],
                          workdir, run_env, cwd=ROOT))
            say("SQS listener -> deployment incident-rca")
        record(_spawn("report", [py, "-m", "baynet.cli", "serve", "--port", str(report_port)], workdir, run_env))
        wait_http(f"http://127.0.0.1:{report_port}/healthz", 60)
        say(f"incident reports {state['urls']['report']}")
    except BaseException:
        stack_down(workdir)
        raise
    env_file = workdir / "env.sh"
    env_file.write_text("".join(f"export {k}={json.dumps(v)}\n" for k, v in env.items()))
    state["env_file"] = str(env_file)
    atomic_json(workdir / STATE, state)
    return state


class PrefectServer:
    """A real ``prefect server start`` (SQLite under ``workdir``) for tools that need a shared API."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = Path(workdir), port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.proc: dict[str, Any] | None = None

    def start(self) -> "PrefectServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({"PREFECT_HOME": str(self.workdir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        self.proc = _spawn("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host",
                                              "127.0.0.1", "--port", str(self.port)], self.workdir, env)
        wait_http(f"{self.api_url}/health", 180)
        return self

    def stop(self) -> None:
        import signal

        if self.proc and _alive(self.proc["pid"]):
            os.killpg(self.proc["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(self.proc["pid"]) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(self.proc["pid"]):
                os.killpg(self.proc["pid"], signal.SIGKILL)


def set_refresh_interval(api_url: str, seconds: int) -> None:
    """Replace the topology-refresh deployment's schedule with one every ``seconds``."""
    from datetime import timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("topology-refresh/topology-refresh")
        for sched in client.read_deployment_schedules(dep.id):
            client.delete_deployment_schedule(dep.id, sched.id)
        client.create_deployment_schedules(dep.id, [(IntervalSchedule(interval=timedelta(seconds=seconds)), True)])


def atomic_json(path: Path, obj: Any) -> None:
    from baynet.topology import atomic_write

    atomic_write(path, json.dumps(obj, indent=1).encode())
