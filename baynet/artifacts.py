"""Where an analysis leaves its results: a local directory (default) or S3.

Per incident, under ``incidents/<event id>/``: ``ranking.json``, ``ranking.csv``, ``posteriors.csv``,
``evidence.csv``, ``topology.json``, ``topology_diff.json``, ``topology_diff.md``, ``model.json``,
``fetch_stats.json``, ``structure.html`` and, written last, ``_COMPLETE`` — an incident without it was
interrupted and is not read as complete.

Shared state lives here too (:mod:`baynet.state`): the model's update log under ``model/<namespace>/``,
topology snapshots under ``topology/<namespace>/``, the event archive under ``events/`` and analysis
claims under ``claims/``. Hosts share it through two conditional writes: create-only
(``put_if(key, data, etag=None)``, S3 ``If-None-Match: *``) and compare-and-swap (``put_if(key, data,
etag)``, S3 ``If-Match``), both refused rather than applied when another writer got there first.
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import math
import threading
from pathlib import Path
from typing import Any

from baynet.topology import atomic_write

COMPLETE = "_COMPLETE"


class ArtifactStore:
    """Key -> bytes. ``location(key)`` says where a key lives (a path or an s3:// URL)."""

    def put(self, key: str, data: bytes | str) -> str:
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def location(self, key: str) -> str:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def get_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """``(data, etag)``; ``(None, None)`` when the key does not exist."""
        raise NotImplementedError

    def put_if(self, key: str, data: bytes | str, etag: str | None) -> str | None:
        """Conditional write: with ``etag=None`` only when ``key`` does not exist yet, else only when its
        current version is ``etag``. Returns the new etag, or None when the condition failed (nothing
        written)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def put_json(self, key: str, obj: Any) -> str:
        return self.put(key, json.dumps(obj, indent=1, default=str))

    def get_json(self, key: str) -> Any | None:
        data = self.get(key)
        return None if data is None else json.loads(data)

    def incident_complete(self, event_id: str) -> bool:
        return self.exists(f"incidents/{event_id}/{COMPLETE}")

    def list_incidents(self) -> list[str]:
        """Event ids with complete artifacts (an interrupted write is never listed)."""
        raise NotImplementedError

    def list_keys(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def archive_event(self, event: Any) -> str:
        """Keep a received event under ``events/<day>/<id>.json`` (what a backfill by time range reads)."""
        day = event.timestamp.strftime("%Y-%m-%d")
        return self.put(f"events/{day}/{event.id}.json", event.model_dump_json())

    def list_events(self, start: Any = None, end: Any = None) -> list[str]:
        """Keys of archived events on the days from ``start`` to ``end`` (datetimes; open when None)."""
        lo = start.strftime("%Y-%m-%d") if start else ""
        hi = end.strftime("%Y-%m-%d") if end else "9999"
        return [k for k in self.list_keys("events/") if k.endswith(".json") and lo <= k.split("/")[1] <= hi]


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore(ArtifactStore):
    """A directory on this host. Conditional writes hold an ``flock`` on ``<root>/.cas.lock`` (and a
    thread lock), so processes sharing the directory on one host see them as atomic; the etag is the
    content's MD5, as S3's is for a plain PUT."""

    _thread_lock = threading.Lock()

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the artifact directory")
        return path

    def put(self, key: str, data: bytes | str) -> str:
        path = self._path(key)
        atomic_write(path, data.encode() if isinstance(data, str) else data)
        return str(path)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.exists() else None

    def location(self, key: str) -> str:
        return str(self._path(key))

    def get_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        data = self.get(key)
        return (None, None) if data is None else (data, _etag(data))

    def put_if(self, key: str, data: bytes | str, etag: str | None) -> str | None:
        path = self._path(key)
        body = data.encode() if isinstance(data, str) else data
        self.root.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.root / ".cas.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = path.read_bytes() if path.exists() else None
                if (etag is None and current is not None) or (
                        etag is not None and (current is None or _etag(current) != etag)):
                    return None
                atomic_write(path, body)
                return _etag(body)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_incidents(self) -> list[str]:
        base = self.root / "incidents"
        return sorted(p.parent.name for p in base.glob(f"*/{COMPLETE}")) if base.is_dir() else []

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


class S3Store(ArtifactStore):
    """S3 (or moto's S3) through boto3. Objects appear whole on PUT, so no rename dance is needed."""

    def __init__(self, bucket: str, prefix: str = "baynet", *, endpoint_url: str | None = None,
                 region: str = "us-east-1", sse: str | None = None, client: Any = None):
        import boto3

        self.bucket, self.prefix, self.sse = bucket, prefix.strip("/"), sse
        self.s3 = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes | str) -> str:
        extra = {"ServerSideEncryption": self.sse} if self.sse else {}
        body = data.encode() if isinstance(data, str) else data
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **extra)
        return self.location(key)

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def get_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        return obj["Body"].read(), obj["ETag"]

    def put_if(self, key: str, data: bytes | str, etag: str | None) -> str | None:
        """S3 conditional writes (``If-None-Match: *`` / ``If-Match``): S3 refuses the second of two
        racing writers with 412 PreconditionFailed (or 409 ConditionalRequestConflict while the first
        is in progress)."""
        from botocore.exceptions import ClientError

        extra: dict[str, Any] = {"ServerSideEncryption": self.sse} if self.sse else {}
        extra.update({"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag})
        body = data.encode() if isinstance(data, str) else data
        try:
            return self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **extra)["ETag"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") or status in (409, 412):
                return None
            raise

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys += [obj["Key"][len(self._key("")):] for obj in page.get("Contents", [])]
        return sorted(keys)

    def list_incidents(self) -> list[str]:
        ids = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=self._key("incidents/")):
            for obj in page.get("Contents", []):
                parts = obj["Key"].rsplit("/", 2)
                if len(parts) == 3 and parts[2] == COMPLETE:
                    ids.append(parts[1])
        return sorted(ids)


def make_store(settings: Any) -> ArtifactStore:
    if settings.s3_bucket:
        return S3Store(settings.s3_bucket, settings.s3_prefix, endpoint_url=settings.aws_endpoint_url,
                       region=settings.aws_region, sse=settings.s3_sse)
    return LocalStore(settings.artifacts_dir)


# ---------------------------------------------------------------------------------------------
# The structure plot: one self-contained HTML file (inline SVG + a few lines of JS, no CDN).

def _layout(services: list[str], callees: dict[str, list[str]], entry: str) -> dict[str, tuple[float, float]]:
    depth = {entry: 0}
    frontier = [entry]
    while frontier:
        nxt = []
        for s in frontier:
            for c in callees.get(s, []):
                if c in services and c not in depth:
                    depth[c] = depth[s] + 1
                    nxt.append(c)
        frontier = nxt
    deepest = max(depth.values(), default=0)
    for s in services:
        depth.setdefault(s, deepest + 1)
    layers: dict[int, list[str]] = {}
    for s in sorted(services):
        layers.setdefault(depth[s], []).append(s)
    pos = {}
    for d, members in layers.items():
        for i, s in enumerate(members):
            pos[s] = (120 + 220 * d, 60 + 80 * i)
    return pos


CHART_SIGNALS = (("p95_ms", "latency p95 (ms)"), ("self_p95_ms", "self time p95 (ms)"),
                 ("error_ratio", "error ratio"), ("rate_ratio", "request rate (x baseline)"), ("net_frac", "network gap share"),
                 ("m_latency_z", "metric latency (sd)"), ("m_resource_z", "resource (sd)"))


def charts_html(evidence: Any, services: list[str]) -> str:
    """Small inline-SVG charts per service: each signal of ``evidence`` (the rows of ``evidence.csv``) in
    the baseline (``B``, dashed line across) and each incident slice, over the baseline band (shaded: the
    range the signal took over slice-long pieces of the baseline, columns ``<signal>_lo``/``_hi``); a slice
    where the service was flagged (propagating or own-work state above ok) is drawn red. Each bar carries
    its value (``data-value``) and the band its bounds (``data-lo``, ``data-hi``) so what is drawn can be
    checked against ``evidence.csv``. Metric signals are z-scores, already in baseline spreads: no band."""
    if evidence is None or len(evidence) == 0:
        return ""
    blocks = []
    for service in services:
        rows = evidence[evidence["service"] == service].sort_values("window")
        if rows.empty:
            continue
        charts = []
        for col, label in CHART_SIGNALS:
            if col not in rows or rows[col].isna().all():
                continue
            values = [(int(w), float(v), bool(st > 0 or own > 0)) for w, v, st, own in zip(
                rows["window"], rows[col].fillna(0.0), rows["state"], rows["own_state"].fillna(0))]
            if all(v == 0 for _, v, _ in values):
                continue
            lo, hi = (float(rows[f"{col}_{side}"].iloc[0]) if f"{col}_{side}" in rows else math.nan
                      for side in ("lo", "hi"))
            has_band = math.isfinite(lo) and math.isfinite(hi)
            top = max([abs(v) for _, v, _ in values] + ([abs(hi)] if has_band else [])) or 1.0
            width, height = 28 * len(values) + 10, 56
            base = next((v for w, v, _ in values if w == -1), None)
            bars = []
            if has_band:
                y_hi, y_lo = 46 - 40 * abs(hi) / top, 46 - 40 * abs(lo) / top
                bars.append(f'<rect class="band" data-lo="{float(lo)!r}" data-hi="{float(hi)!r}" x="0" '
                            f'y="{min(y_hi, y_lo):.1f}" width="{width}" height="{max(0.8, abs(y_lo - y_hi)):.1f}" '
                            f'fill="#cfe3cf"><title>baseline band: {lo:.4g} to {hi:.4g}</title></rect>')
            for i, (w, v, flagged) in enumerate(values):
                h = 40 * abs(v) / top
                cls = "bar flagged" if flagged and w >= 0 else ("bar base" if w < 0 else "bar")
                colour = "#d33" if "flagged" in cls else ("#999" if w < 0 else "#58a")
                bars.append(f'<rect class="{cls}" data-window="{w}" data-value="{v!r}" x="{5 + 28 * i}" '
                            f'y="{46 - h:.1f}" width="20" height="{h:.1f}" fill="{colour}"><title>'
                            f'{"baseline" if w < 0 else f"slice {w}"}: {v:.4g}</title></rect>'
                            f'<text x="{15 + 28 * i}" y="55" font-size="8" text-anchor="middle">'
                            f'{"B" if w < 0 else w}</text>')
            line = (f'<line class="baseline" x1="0" x2="{width}" y1="{46 - 40 * abs(base) / top:.1f}" '
                    f'y2="{46 - 40 * abs(base) / top:.1f}" stroke="#555" stroke-dasharray="3 2"/>'
                    if base is not None else "")
            charts.append(f'<figure class="chart"><svg class="chart" data-service="{html.escape(service)}" '
                          f'data-signal="{col}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
                          f'{"".join(bars)}{line}</svg><figcaption>{html.escape(label)}</figcaption></figure>')
        if charts:
            blocks.append(f'<div class="charts" data-service="{html.escape(service)}"><h3>{html.escape(service)}'
                          f'</h3>{"".join(charts)}</div>')
    if not blocks:
        return ""
    return ('<h2>Signals behind the states</h2><p>Per service: baseline (B, dashed line) and incident slices; '
            'green band: the range of the baseline\'s slice-long pieces; red: a slice where the service was '
            'flagged.</p>' + "".join(blocks))


def _why(row: dict[str, Any]) -> str:
    return f'<br><i class="why">why: {html.escape(row["why"])}</i>' if row.get("why") else ""


def _exemplar_links(row: dict[str, Any]) -> str:
    """A service's exemplar traces: linked (http(s) only) when a trace URL template is set, else the ids."""
    out = []
    for ex in row.get("exemplars") or []:
        label = f"{html.escape(str(ex.get('trace_id', ''))[:16])} ({html.escape(str(ex.get('why', '')))})"
        url = ex.get("url")
        if url and str(url).lower().startswith(("http://", "https://")):
            out.append(f'<a class="exemplar" href="{html.escape(str(url))}">{label}</a>')
        else:
            out.append(f'<span class="exemplar">{label}</span>')
    return "<br>".join(out)


def log_templates_html(ranking: list[dict[str, Any]]) -> str:
    """Per top service, the log templates that appeared or rose, with a few lines linked to their traces."""
    blocks = []
    for r in ranking:
        found = r.get("log_templates") or []
        if not found:
            continue
        rows = []
        for f in found:
            lines = []
            for ex in f.get("samples", []):
                text = html.escape(ex.get("line", ""))
                url = ex.get("url")
                trace = html.escape(str(ex.get("trace_id", ""))[:16])
                link = (f' <a class="log-trace" href="{html.escape(url)}">trace {trace}</a>'
                        if url and str(url).lower().startswith(("http://", "https://"))
                        else (f' <span class="log-trace">trace {trace}</span>' if trace else ""))
                lines.append(f'<code>{text}</code>{link}')
            rows.append(f'<tr><td>{html.escape(f["level"])}</td><td>{html.escape(f["template"][:160])}</td>'
                        f'<td>{html.escape(str(f["change"]))}</td><td>{f["incident"]:g}/min (before {f["baseline"]:g})</td>'
                        f'<td>{"<br>".join(lines)}</td></tr>')
        blocks.append(f'<h3>{html.escape(r["service"])}</h3><table class="log-templates" data-service='
                      f'"{html.escape(r["service"])}"><tr><th>level</th><th>template</th><th>change</th>'
                      f'<th>rate</th><th>lines</th></tr>{"".join(rows)}</table>')
    if not blocks:
        return ""
    return '<h2>Log templates that appeared or rose</h2>' + "".join(blocks)


def _colour(p: float) -> str:
    # white -> red with the posterior
    g = int(255 * (1 - min(1.0, max(0.0, p))))
    return f"rgb(255,{g},{g})"


def structure_html(title: str, ranking: list[dict[str, Any]], callees: dict[str, list[str]], entry: str,
                   path: list[str], diff: dict[str, Any] | None = None, run_url: str | None = None,
                   evidence: Any = None) -> str:
    """Render the network with posteriors; clicking a node shows its evidence. Every name is escaped."""
    services = [r["service"] for r in ranking]
    info = {r["service"]: r for r in ranking}
    pos = _layout(services, callees, entry)
    on_path = set(zip(path, path[1:]))
    added = {tuple(e) for e in (diff or {}).get("edges_added", [])}
    width = max((x for x, _ in pos.values()), default=0) + 200
    height = max((y for _, y in pos.values()), default=0) + 80
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" id="graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>']
    for caller in services:
        for callee in callees.get(caller, []):
            if callee not in pos:
                continue
            (x1, y1), (x2, y2) = pos[caller], pos[callee]
            # faults travel callee -> caller, so the arrow points from callee to caller
            hot = (callee, caller) in on_path
            cls = "edge path" if hot else ("edge added" if (caller, callee) in added else "edge")
            dx, dy = x1 - x2, y1 - y2
            norm = math.hypot(dx, dy) or 1
            parts.append(f'<line class="{cls}" x1="{x2 + 60 * dx / norm:.0f}" y1="{y2 + 22 * dy / norm:.0f}" '
                         f'x2="{x1 - 60 * dx / norm:.0f}" y2="{y1 - 22 * dy / norm:.0f}" marker-end="url(#arrow)"/>')
    for s in services:
        x, y = pos[s]
        p = float(info[s]["posterior"])
        esc = html.escape(s)
        parts.append(f'<g class="node" data-service="{esc}" transform="translate({x},{y})">'
                     f'<rect x="-60" y="-20" width="120" height="40" rx="8" fill="{_colour(p)}" '
                     f'class="{"onpath" if s in path else ""}"/>'
                     f'<text text-anchor="middle" y="-2">{html.escape(s[:18])}</text>'
                     f'<text text-anchor="middle" y="13" class="p">{p:.3f}</text></g>')
    parts.append("</svg>")
    rows = "".join(
        f'<tr><td>{r["rank"]}</td><td>{html.escape(r["service"])}</td><td>{float(r["posterior"]):.4f}</td>'
        f'<td>{html.escape(r.get("evidence", ""))}{_why(r)}</td><td class="exemplars">{_exemplar_links(r)}</td></tr>'
        for r in ranking)
    evidence_json = json.dumps({r["service"]: r.get("evidence", "") for r in ranking}).replace("<", "\\u003c")
    if run_url and not run_url.lower().startswith(("http://", "https://")):
        run_url = None  # a link is only ever to the Prefect UI over HTTP(S), never javascript: or data:
    run_link = f'<p>Prefect run: <a id="run" href="{html.escape(run_url)}">{html.escape(run_url)}</a></p>' \
        if run_url else ""
    path_txt = " → ".join(html.escape(s) for s in path)
    changes = []
    for key, label in (("services_added", "service added"), ("services_removed", "service removed"),
                       ("edges_added", "call added"), ("edges_removed", "call removed")):
        for item in (diff or {}).get(key, []):
            name = " → ".join(map(str, item)) if isinstance(item, (list, tuple)) else str(item)
            changes.append(f'<li class="change">{label}: {html.escape(name)}</li>')
    changes_html = (f'<h2>Topology changes since the last snapshot</h2><ul id="changes">{"".join(changes)}</ul>'
                    if changes else '<p id="changes">No topology change since the last snapshot.</p>')
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:sans-serif;margin:1.5em}} .edge{{stroke:#999;stroke-width:1.5}}
.edge.path{{stroke:#d00;stroke-width:3}} .edge.added{{stroke:#07c;stroke-dasharray:4 3}}
.node rect{{stroke:#333}} .node rect.onpath{{stroke:#d00;stroke-width:3}} .node{{cursor:pointer}}
.p{{font-size:11px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px}}
#details{{margin:1em 0;padding:.6em;border:1px solid #aaa;min-height:1.2em;background:#fafafa}}
figure.chart{{display:inline-block;margin:0 1em .5em 0}} figcaption{{font-size:11px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Propagation path (root cause first): <b id="path">{path_txt}</b></p>{run_link}
<p>Colour: posterior probability of being the root cause. Red edges: the propagation path; dashed
blue: edges new since the last topology snapshot. Click a service for its evidence.</p>
{''.join(parts)}
<div id="details">Click a service.</div>
{changes_html}
<h2>Ranking</h2>
<table id="ranking"><tr><th>rank</th><th>service</th><th>P(root cause)</th><th>evidence</th>
<th>example traces</th></tr>{rows}</table>
{log_templates_html(ranking[:5])}
{charts_html(evidence, [r["service"] for r in ranking[:5]])}
<script>
const EVIDENCE = {evidence_json};
document.querySelectorAll('.node').forEach(n => n.addEventListener('click', () => {{
  const s = n.getAttribute('data-service');
  const d = document.getElementById('details');
  d.textContent = s + ': ' + (EVIDENCE[s] || 'no evidence');
}}));
</script></body></html>
"""
