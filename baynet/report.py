"""``baynet serve``: the incident report pages, next to Kiali as the original ``/baynet`` page was.

``/`` and ``/baynet`` list the analysed incidents (complete artifacts only, newest first);
``/baynet/incidents/<id>`` is one incident's page (the interactive structure plot — services coloured by
posterior, the propagation path in red, calls new since the last snapshot dashed — the topology changes,
the ranking with its evidence, the link to the Prefect run); ``/baynet/incidents/<id>/<file>`` serves
that incident's raw artifacts (ranking.json, evidence.csv, ...). Offline: no CDN, no external request.
Every name and label shown is HTML-escaped.
"""

from __future__ import annotations

import html
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlparse

from baynet.artifacts import ArtifactStore

log = logging.getLogger(__name__)

RAW = {"ranking.json": "application/json", "ranking.csv": "text/csv", "posteriors.csv": "text/csv",
       "evidence.csv": "text/csv", "topology.json": "application/json", "topology_diff.json": "application/json",
       "topology_diff.md": "text/markdown", "model.json": "application/json", "fetch_stats.json": "application/json",
       "structure.html": "text/html"}
HTML = "text/html; charset=utf-8"
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:"


def _when(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(value)


def index_html(store: ArtifactStore) -> str:
    rows = []
    for event_id in store.list_incidents():
        summary = store.get_json(f"incidents/{event_id}/ranking.json") or {}
        event, ranking = summary.get("event", {}), summary.get("ranking", [])
        top = ranking[0] if ranking else {"service": "-", "posterior": 0.0}
        complete = summary.get("fetch", {}).get("evidence_complete", True)
        rows.append((str(event.get("timestamp", "")), f"""<tr class="incident">
<td>{html.escape(_when(event.get("timestamp", "")))}</td>
<td><a href="/baynet/incidents/{quote(event_id, safe='')}">{html.escape(event_id)}</a></td>
<td>{html.escape(str(event.get("service", "")))}</td><td>{html.escape(str(event.get("event_type", "")))}</td>
<td class="top">{html.escape(str(top["service"]))}</td><td>{float(top["posterior"]):.3f}</td>
<td>{"complete" if complete else "<b>partial</b>"}</td></tr>"""))
    body = "".join(r for _, r in sorted(rows, reverse=True)) or \
        '<tr><td colspan="7">No incident analysed yet.</td></tr>'
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Baynet incidents</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}}</style></head><body>
<h1>Baynet: analysed incidents</h1>
<table id="incidents"><tr><th>anomaly at</th><th>event</th><th>service</th><th>type</th><th>top root cause</th>
<th>P</th><th>evidence</th></tr>{body}</table></body></html>"""


def incident_html(store: ArtifactStore, event_id: str) -> str | None:
    if not store.incident_complete(event_id):
        return None
    page = store.get(f"incidents/{event_id}/structure.html")
    if page is None:
        return None
    links = " · ".join(f'<a href="/baynet/incidents/{quote(event_id, safe="")}/{name}">{name}</a>'
                       for name in RAW if name != "structure.html")
    nav = '<p><a href="/baynet">← all incidents</a></p>'
    text = page.decode()
    return text.replace("<body>", f"<body>{nav}", 1).replace("</body>", f"<p>Artifacts: {links}</p></body>", 1)


class ReportServer:
    """A small threaded HTTP server over an artifact store."""

    def __init__(self, store: ArtifactStore, host: str = "127.0.0.1", port: int = 8080):
        self.store = store
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread: threading.Thread | None = None

    def start(self) -> "ReportServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="baynet-report", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str) -> tuple[int, str, bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts in ([], ["baynet"]):
            return 200, HTML, index_html(self.store).encode()
        if len(parts) >= 3 and parts[:2] == ["baynet", "incidents"]:
            event_id = parts[2]
            if "/" in event_id or event_id in (".", ".."):
                return 404, HTML, b"not found"
            if len(parts) == 3:
                page = incident_html(self.store, event_id)
                if page is None:
                    return 404, HTML, f"no complete analysis for {html.escape(event_id)}".encode()
                return 200, HTML, page.encode()
            if len(parts) == 4 and parts[3] in RAW and self.store.incident_complete(event_id):
                data = self.store.get(f"incidents/{event_id}/{parts[3]}")
                if data is not None:
                    ctype = RAW[parts[3]]
                    return 200, f"{ctype}; charset=utf-8", data
        if parts == ["healthz"]:
            return 200, "text/plain", b"ok"
        return 404, HTML, b"not found"


class _Handler(BaseHTTPRequestHandler):
    app: ReportServer
    server_version = "baynet-report"

    def do_GET(self) -> None:  # noqa: N802
        try:
            status, ctype, body = self.app.route(urlparse(self.path).path)
        except Exception as exc:  # a broken artifact must not take the server down
            log.exception("report page %s failed", self.path)
            status, ctype, body = 500, "text/plain", f"error: {type(exc).__name__}".encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("report %s", fmt % args)


