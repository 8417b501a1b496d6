"""``baynet serve``: the incident report pages, next to Kiali as the original ``/baynet`` page was.

``/`` and ``/baynet`` list the analysed incidents (complete artifacts only, newest first);
``/baynet/incidents/<id>`` is one incident's page (the interactive structure plot — services coloured by
posterior, the propagation path in red, calls new since the last snapshot dashed — the topology changes,
the ranking with its evidence, the link to the Prefect run); ``/baynet/incidents/<id>/<file>`` serves
that incident's raw artifacts (ranking.json, evidence.csv, ...). Offline: no CDN, no external request.
Every name and label shown is HTML-escaped.

Confirming a root cause from the page (a form, ``POST /baynet/incidents/<id>/confirm``) is off unless the
server is given a ``token`` (the form asks for it) or a ``trusted_user_header`` (a reverse proxy that
authenticates users sets it, e.g. ``X-Forwarded-User``; the form then takes the user from it). A POST is
refused (403) unless its ``Origin`` (or, without one, ``Referer``) is this server, its anti-forgery field
is this server's HMAC of the event id, and the token or the proxy's user header is there: another site
cannot make a signed-in browser confirm anything.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from baynet.artifacts import ArtifactStore

log = logging.getLogger(__name__)

RAW = {"ranking.json": "application/json", "ranking.csv": "text/csv", "posteriors.csv": "text/csv",
       "evidence.csv": "text/csv", "topology.json": "application/json", "topology_diff.json": "application/json",
       "topology_diff.md": "text/markdown", "model.json": "application/json", "fetch_stats.json": "application/json",
       "structure.html": "text/html"}
HTML = "text/html; charset=utf-8"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'")


def _when(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(value)


def index_html(store: ArtifactStore, service: str | None = None) -> str:
    """Every analysed incident, newest first, with its headline's short form; ``service`` keeps only the
    incidents where that service raised the anomaly or ranks first."""
    rows = []
    for event_id in store.list_incidents():
        summary = store.get_json(f"incidents/{event_id}/ranking.json") or {}
        event, ranking = summary.get("event", {}), summary.get("ranking", [])
        top = ranking[0] if ranking else {"service": "-", "posterior": 0.0}
        if service and service not in (event.get("service"), top["service"]):
            continue
        complete = summary.get("fetch", {}).get("evidence_complete", True)
        short = summary.get("headline_short") or f'{top["service"]} (P={float(top["posterior"]):.2f})'
        rows.append((str(event.get("timestamp", "")), f"""<tr class="incident" data-services="{html.escape(
            str(event.get("service", "")))} {html.escape(str(top["service"]))}">
<td>{html.escape(_when(event.get("timestamp", "")))}</td>
<td><a href="/baynet/incidents/{quote(event_id, safe='')}">{html.escape(event_id)}</a></td>
<td>{html.escape(str(event.get("service", "")))}</td><td>{html.escape(str(event.get("event_type", "")))}</td>
<td class="top">{html.escape(str(top["service"]))}</td><td>{float(top["posterior"]):.3f}</td>
<td class="short">{html.escape(short)}</td>
<td>{"complete" if complete else "<b>partial</b>"}</td></tr>"""))
    body = "".join(r for _, r in sorted(rows, key=lambda r: _sortable(r[0]), reverse=True)) or \
        '<tr><td colspan="8">No incident analysed yet.</td></tr>'
    shown = html.escape(service or "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Baynet incidents</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}} td.short{{max-width:40em}}</style></head><body>
<h1>Baynet: analysed incidents</h1>
<form method="get" action="/baynet"><label>service <input id="service-filter" name="service" value="{shown}">
</label> <button>filter</button></form>
<table id="incidents"><tr><th>anomaly at</th><th>event</th><th>service</th><th>type</th><th>top root cause</th>
<th>P</th><th>in short</th><th>evidence</th></tr>{body}</table>
<script>
document.getElementById('service-filter').addEventListener('input', e => {{
  const want = e.target.value.trim();
  document.querySelectorAll('tr.incident').forEach(r => {{
    r.style.display = !want || r.dataset.services.split(' ').some(s => s.includes(want)) ? '' : 'none';
  }});
}});
</script></body></html>"""


def _sortable(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def confirmation_html(store: ArtifactStore, event_id: str, form: str = "") -> str:
    """The incident's confirmation (who, when, which service, or withdrawn) and, when enabled, the form."""
    from baynet.state import Confirmations

    record = Confirmations(store).of(event_id)
    if record is None:
        shown = '<p id="confirmation">Not confirmed yet.</p>'
    elif record.get("withdrawn"):
        shown = (f'<p id="confirmation">Confirmation withdrawn by {html.escape(record.get("by") or "unknown")} at '
                 f'{html.escape(_when(record.get("at", "")))}.</p>')
    else:
        note = f' — {html.escape(record["note"])}' if record.get("note") else ""
        shown = (f'<p id="confirmation">Confirmed root cause: <b>{html.escape(str(record["root_cause"]))}</b>, by '
                 f'{html.escape(record.get("by") or "unknown")} at {html.escape(_when(record.get("at", "")))}'
                 f'{note}.</p>')
    return f"<h2>Confirmation</h2>{shown}{form}"


def incident_html(store: ArtifactStore, event_id: str, form: str = "") -> str | None:
    if not store.incident_complete(event_id):
        return None
    page = store.get(f"incidents/{event_id}/structure.html")
    if page is None:
        return None
    links = " · ".join(f'<a href="/baynet/incidents/{quote(event_id, safe="")}/{name}">{name}</a>'
                       for name in RAW if name != "structure.html")
    nav = '<p><a href="/baynet">← all incidents</a></p>'
    text = page.decode()
    return text.replace("<body>", f"<body>{nav}", 1).replace(
        "</body>", f"{confirmation_html(store, event_id, form)}<p>Artifacts: {links}</p></body>", 1)


class ReportServer:
    """A small threaded HTTP server over an artifact store."""

    def __init__(self, store: ArtifactStore, host: str = "127.0.0.1", port: int = 8080, *,
                 token: str | None = None, trusted_user_header: str | None = None):
        self.store = store
        self.token, self.user_header = token or None, trusted_user_header or None
        self._secret = secrets.token_bytes(32)  # signs the anti-forgery field; new at every start
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

    @property
    def confirming(self) -> bool:
        return bool(self.token or self.user_header)

    def csrf(self, event_id: str) -> str:
        return hmac.new(self._secret, event_id.encode(), hashlib.sha256).hexdigest()

    def form_html(self, event_id: str) -> str:
        if not self.confirming:
            return ""
        summary = self.store.get_json(f"incidents/{event_id}/ranking.json") or {}
        options = "".join(f'<option value="{html.escape(r["service"])}">{html.escape(r["service"])}</option>'
                          for r in summary.get("ranking", []))
        who = ('' if self.user_header else
               '<label>your name <input name="by" maxlength="100"></label> '
               '<label>access token <input name="token" type="password" autocomplete="off"></label> ')
        return (f'<form id="confirm" method="post" action="/baynet/incidents/{quote(event_id, safe="")}/confirm">'
                f'<input type="hidden" name="csrf" value="{self.csrf(event_id)}">'
                f'<label>root cause <select name="root_cause">{options}</select></label> {who}'
                f'<label>note <input name="note" maxlength="500"></label> '
                f'<button type="submit" name="action" value="confirm">Confirm</button> '
                f'<button type="submit" name="action" value="withdraw">Withdraw</button></form>')

    def confirm(self, event_id: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        """Handle a confirmation POST (see the module doc for what is checked)."""
        from baynet.state import ConfirmationError, Confirmations

        refuse = lambda why: (403, "text/plain; charset=utf-8", f"refused: {why}".encode(), {})  # noqa: E731
        if not self.confirming:
            return refuse("confirming from the page is off (start `baynet serve` with --token or "
                          "--trusted-user-header)")
        host = headers.get("host", "")
        source = headers.get("origin") or headers.get("referer") or ""
        if not source or urlparse(source).netloc != host:
            return refuse(f"cross-site request (origin {source or 'missing'!r}, this server {host!r})")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf(event_id)):
            return refuse("the form is not this server's (anti-forgery field)")
        if self.user_header:
            by = headers.get(self.user_header.lower(), "")
            if not by:
                return refuse(f"no {self.user_header} header from the proxy")
        else:
            if not hmac.compare_digest(form.get("token", "").encode(), (self.token or "").encode()):
                return refuse("wrong access token")
            by = form.get("by", "")
        withdraw = form.get("action") == "withdraw"
        try:
            Confirmations(self.store).add(event_id, None if withdraw else form.get("root_cause"), by=by,
                                          note=form.get("note", ""), withdraw=withdraw)
        except ConfirmationError as exc:
            return 400, "text/plain; charset=utf-8", str(exc).encode(), {}
        return 303, "text/plain", b"", {"Location": f"/baynet/incidents/{quote(event_id, safe='')}"}

    def route(self, path: str, query: str = "") -> tuple[int, str, bytes]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts in ([], ["baynet"]):
            service = (parse_qs(query).get("service") or [""])[-1].strip() or None
            return 200, HTML, index_html(self.store, service).encode()
        if len(parts) >= 3 and parts[:2] == ["baynet", "incidents"]:
            event_id = parts[2]
            if "/" in event_id or event_id in (".", ".."):
                return 404, HTML, b"not found"
            if len(parts) == 3:
                page = incident_html(self.store, event_id, self.form_html(event_id)
                                     if self.store.incident_complete(event_id) else "")
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
    disable_nagle_algorithm = True  # headers and body are two writes: without it the body waits for an ACK

    def do_GET(self) -> None:  # noqa: N802
        try:
            url = urlparse(self.path)
            status, ctype, body = self.app.route(url.path, url.query)
        except Exception as exc:  # a broken artifact must not take the server down
            log.exception("report page %s failed", self.path)
            status, ctype, body = 500, "text/plain", f"error: {type(exc).__name__}".encode()
        self._reply(status, ctype, body)

    def do_POST(self) -> None:  # noqa: N802
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/") if p]
        length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
        body = self.rfile.read(length) if length else b""
        extra: dict[str, str] = {}
        if len(parts) == 4 and parts[:2] == ["baynet", "incidents"] and parts[3] == "confirm" \
                and "/" not in parts[2] and parts[2] not in (".", ".."):
            try:
                status, ctype, out, extra = self.app.confirm(parts[2], body, {k.lower(): v for k, v in
                                                                              self.headers.items()})
            except Exception as exc:
                log.exception("confirmation of %s failed", parts[2])
                status, ctype, out = 500, "text/plain", f"error: {type(exc).__name__}".encode()
        else:
            status, ctype, out = 404, HTML, b"not found"
        self._reply(status, ctype, out, extra)

    def _reply(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("report %s", fmt % args)


