"""The local servers answer without Nagle's delay, as Go's servers (Tempo, Loki) do: headers and body are two
writes, and on a kept-alive connection the second one otherwise waits for the client's delayed ACK (~40 ms a
request: it made reading 1,300 traces from the Tempo stand-in take 9 s instead of 1.5 s)."""

import socket

import httpx
import pytest

from baynet.artifacts import LocalStore
from baynet.local.loki import LokiServer
from baynet.local.tempo import TempoServer, TraceStore
from baynet.report import ReportServer


def _probe(server, seen: list[int]):
    """Record TCP_NODELAY of each connection the server accepts."""
    base = server.httpd.RequestHandlerClass

    def setup(self):
        base.setup(self)
        seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server.httpd.RequestHandlerClass = type("Probe", (base,), {"setup": setup})
    return server


@pytest.mark.parametrize("make", [lambda tmp: TempoServer(TraceStore()), lambda tmp: LokiServer(),
                                  lambda tmp: ReportServer(LocalStore(tmp), port=0)],
                         ids=["tempo", "loki", "report"])
def test_the_local_servers_send_without_nagles_delay(make, tmp_path):
    seen: list[int] = []
    server = _probe(make(tmp_path), seen)
    server.start()
    try:
        host, port = server.httpd.server_address[:2]
        with httpx.Client(base_url=f"http://{host}:{port}") as client:
            for _ in range(2):  # the second on the same, kept-alive connection where the server keeps it
                client.get("/ready")
    finally:
        server.stop()
    assert seen and all(seen), seen
