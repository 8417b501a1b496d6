"""What the local stand-ins for backends that cannot run here (Tempo, Loki) share: a threaded HTTP server
on 127.0.0.1, the request log tests read, and injected faults (a status, a delay, a dropped connection) that
answer the next requests under a path instead of the real endpoint."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = "text/plain; charset=utf-8"


@dataclass
class Fault:
    path_prefix: str
    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    delay_s: float = 0.0
    reset: bool = False


class StandIn:
    """A stand-in server in a background thread: ``with Server(...) as srv: srv.url``. Subclasses give
    ``handler`` (a :class:`StandInHandler` subclass, bound to the server as ``app``) and ``thread_name``."""

    handler: type[StandInHandler]
    thread_name = "stand-in"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.faults: deque[Fault] = deque()
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer((host, port), type("Handler", (self.handler,), {"app": self}))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, path_prefix: str, status: int, body: str | bytes = b"", *, times: int = 1,
               headers: dict[str, str] | None = None, delay_s: float = 0.0, reset: bool = False) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with this fault instead (after
        ``delay_s``); ``status=0`` only delays the real answer; ``reset`` drops the connection."""
        data = body.encode() if isinstance(body, str) else body
        for _ in range(times):
            self.faults.append(Fault(path_prefix, status, data, headers, delay_s, reset))

    def start(self) -> Any:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=self.thread_name, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class StandInHandler(BaseHTTPRequestHandler):
    app: StandIn
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's servers (Tempo, Loki) set on every connection: headers and body go out in two
    # writes, and with Nagle's algorithm the second waits for the client's delayed ACK (~40 ms a request
    # on a kept-alive connection) -- a cost of the stand-in the real backends do not have.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log instead
        pass

    def faulted(self, path: str) -> bool:
        """Log the request; when a fault is injected for ``path``, play it. True when it answered (or
        dropped) the request; False when the real endpoint is to answer (no fault, or a delay only)."""
        self.app.requests.append(path)
        fault = None
        for candidate in list(self.app.faults):
            if path.startswith(candidate.path_prefix):
                try:
                    self.app.faults.remove(candidate)
                except ValueError:  # another thread took it
                    continue
                fault = candidate
                break
        if fault is None:
            return False
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.reset:
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if fault.status:  # status 0: only slow, then the real answer
            self.send(fault.status, TEXT, fault.body, fault.headers or {})
            return True
        return False

    def send(self, status: int, ctype: str, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for key, val in headers.items():
            self.send_header(key, val)
        self.end_headers()
        if body and status != 204:
            self.wfile.write(body)
