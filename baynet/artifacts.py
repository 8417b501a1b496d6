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
from datetime import UTC, datetime
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


# (column, label, unit): the unit is printed on the axis; "%" columns hold shares and are shown as percents.
CHART_SIGNALS = (("p95_ms", "latency p95", "ms"), ("self_p95_ms", "self time p95", "ms"),
                 ("error_ratio", "error ratio", "%"), ("rate_ratio", "request rate", "x baseline"),
                 ("net_frac", "network gap share", "%"), ("m_latency_z", "metric latency", "sd"),
                 ("m_resource_z", "resource", "sd"))


def _tick(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    text = f"{value:.3g}"
    return f"{text} {unit}" if unit in ("ms", "sd") else f"x{text}"


def charts_html(evidence: Any, services: list[str], event_time: float | None = None, window_s: float | None = None
                ) -> str:
    """Inline-SVG charts per service: each signal of ``evidence`` (the rows of ``evidence.csv``) in the
    baseline (``B``, dashed line across) and each incident slice, over the baseline band (shaded and
    labelled: the range the signal took over slice-long pieces of the baseline, columns
    ``<signal>_lo``/``_hi``); a slice where the service was flagged (propagating or own-work state above ok)
    is drawn red. The y axis carries the scale and unit, the x axis each slice's start time and the alert
    (the end of the last slice). Each bar carries its value (``data-value``) and the band its bounds
    (``data-lo``, ``data-hi``) so what is drawn can be checked against ``evidence.csv``. Metric signals are
    z-scores, already in baseline spreads: no band."""
    if evidence is None or len(evidence) == 0:
        return ""
    blocks = []
    n_slices = int(evidence["window"].max()) + 1 if len(evidence) else 0
    first = event_time - n_slices * window_s if event_time is not None and window_s else None
    for service in services:
        rows = evidence[evidence["service"] == service].sort_values("window")
        if rows.empty:
            continue
        charts = []
        for col, label, unit in CHART_SIGNALS:
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
            left, plot_h, bar_w, step = 54, 80, 26, 40
            width, height = left + step * len(values) + 80, plot_h + 44

            def y(v: float) -> float:
                return 10 + plot_h * (1 - abs(v) / top)

            base = next((v for w, v, _ in values if w == -1), None)
            parts = [f'<line class="axis" x1="{left}" x2="{left}" y1="10" y2="{10 + plot_h}" stroke="#333"/>',
                     f'<line class="axis" x1="{left}" x2="{width - 50}" y1="{10 + plot_h}" y2="{10 + plot_h}" '
                     'stroke="#333"/>',
                     f'<text class="tick y" x="{left - 4}" y="14" font-size="10" text-anchor="end">'
                     f'{html.escape(_tick(top, unit))}</text>',
                     f'<text class="tick y" x="{left - 4}" y="{10 + plot_h}" font-size="10" text-anchor="end">'
                     f'{html.escape(_tick(0.0, unit))}</text>']
            if has_band:
                y_hi, y_lo = y(hi), y(lo)
                parts.append(f'<rect class="band" data-lo="{float(lo)!r}" data-hi="{float(hi)!r}" x="{left}" '
                             f'y="{min(y_hi, y_lo):.1f}" width="{step * len(values)}" '
                             f'height="{max(0.8, abs(y_lo - y_hi)):.1f}" fill="#cfe3cf"><title>baseline band: '
                             f'{lo:.4g} to {hi:.4g}</title></rect>'
                             f'<text class="band-label" x="{left + step * len(values) + 4}" y="{min(y_hi, y_lo) + 9:.1f}" '
                             f'font-size="9" fill="#386">baseline range</text>')
            for i, (w, v, flagged) in enumerate(values):
                cls = "bar flagged" if flagged and w >= 0 else ("bar base" if w < 0 else "bar")
                colour = "#d33" if "flagged" in cls else ("#999" if w < 0 else "#58a")
                x = left + 7 + step * i
                when = "B" if w < 0 else (datetime.fromtimestamp(first + w * window_s, UTC).strftime("%H:%M")
                                          if first is not None else str(w))
                parts.append(f'<rect class="{cls}" data-window="{w}" data-value="{v!r}" x="{x}" y="{y(v):.1f}" '
                             f'width="{bar_w}" height="{10 + plot_h - y(v):.1f}" fill="{colour}"><title>'
                             f'{"baseline" if w < 0 else f"slice from {when}"}: {html.escape(_tick(v, unit))}'
                             f'</title></rect><text class="tick x" x="{x + bar_w / 2}" y="{plot_h + 24}" '
                             f'font-size="9" text-anchor="middle">{when}</text>')
            if base is not None:
                parts.append(f'<line class="baseline" x1="{left}" x2="{left + step * len(values)}" y1="{y(base):.1f}" '
                             f'y2="{y(base):.1f}" stroke="#555" stroke-dasharray="3 2"/>')
            if event_time is not None:
                x_alert = left + step * len(values)
                alert = datetime.fromtimestamp(event_time, UTC).strftime("%H:%M")
                parts.append(f'<line class="alert" x1="{x_alert}" x2="{x_alert}" y1="10" y2="{10 + plot_h}" '
                             f'stroke="#d00" stroke-dasharray="2 2"/><text class="alert-label" x="{x_alert}" '
                             f'y="{plot_h + 38}" font-size="9" fill="#d00" text-anchor="middle">alert {alert}</text>')
            charts.append(f'<figure class="chart"><svg class="chart" data-service="{html.escape(service)}" '
                          f'data-signal="{col}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
                          f'{"".join(parts)}</svg><figcaption>{html.escape(label)} ({html.escape(unit)})'
                          f'</figcaption></figure>')
        if charts:
            blocks.append(f'<div class="charts" data-service="{html.escape(service)}"><h3>{html.escape(service)}'
                          f'</h3>{"".join(charts)}</div>')
    if not blocks:
        return ""
    return ('<h2>Signals behind the states</h2><p>Per service: baseline (B, dashed line) and the incident '
            'slices, each labelled with its start time (UTC); green band: the range of the baseline\'s '
            'slice-long pieces; red bar: a slice where the service was flagged; red dashed line: the alert.</p>'
            + "".join(blocks))


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


def changes_html(diff: dict[str, Any] | None) -> str:
    """The topology diff for a person: one line on a first view of a mesh; otherwise the changes, the
    biggest first (services before calls, removals before additions, then rate and error changes by size),
    past ten collapsed."""
    diff = diff or {}
    if diff.get("first"):
        return (f'<p id="changes" class="first-view">First view of this mesh: {len(diff.get("services_added", []))} '
                f'services, {len(diff.get("edges_added", []))} calls (no earlier snapshot to compare with).</p>')
    items: list[tuple[float, str]] = []
    for key, label, weight in (("services_removed", "service removed", 4.0), ("services_added", "service added", 3.0),
                               ("edges_removed", "call removed", 2.0), ("edges_added", "call added", 1.5)):
        for item in diff.get(key, []):
            name = " → ".join(map(str, item)) if isinstance(item, (list, tuple)) else str(item)
            items.append((weight, f"{label}: {name}"))
    for c in diff.get("error_changed", []):
        items.append((1.0 + abs(c["after"] - c["before"]), f"errors {c['caller']} → {c['callee']}: "
                      f"{c['before']:.1%} → {c['after']:.1%}"))
    for c in diff.get("rate_changed", []):
        change = abs(c["after"] - c["before"]) / max(c["before"], 1e-9)
        items.append((min(1.0, change / 10), f"rate {c['caller']} → {c['callee']}: {c['before']:.3g} → "
                      f"{c['after']:.3g} req/s"))
    if not items:
        return '<p id="changes">No topology change since the last snapshot.</p>'
    items.sort(key=lambda i: -i[0])
    shown = "".join(f'<li class="change">{html.escape(text)}</li>' for _, text in items[:10])
    rest = "".join(f'<li class="change">{html.escape(text)}</li>' for _, text in items[10:])
    more = f'<details><summary>{len(items) - 10} more</summary><ul>{rest}</ul></details>' if rest else ""
    return f'<h2>Topology changes since the last snapshot</h2><ul id="changes">{shown}</ul>{more}'


def structure_html(title: str, ranking: list[dict[str, Any]], callees: dict[str, list[str]], entry: str,
                   path: list[str], diff: dict[str, Any] | None = None, run_url: str | None = None,
                   evidence: Any = None, headline: str = "", event_time: float | None = None,
                   window_s: float | None = None) -> str:
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
        f'<td><span class="words">{html.escape(r.get("in_words") or r.get("evidence", ""))}</span>'
        f'<span class="shorthand">{html.escape(r.get("evidence", ""))}{_why(r)}</span></td>'
        f'<td class="exemplars">{_exemplar_links(r)}</td></tr>'
        for r in ranking)
    evidence_json = json.dumps({r["service"]: r.get("evidence", "") for r in ranking}).replace("<", "\\u003c")
    if run_url and not run_url.lower().startswith(("http://", "https://")):
        run_url = None  # a link is only ever to the Prefect UI over HTTP(S), never javascript: or data:
    run_link = f'<p>Prefect run: <a id="run" href="{html.escape(run_url)}">{html.escape(run_url)}</a></p>' \
        if run_url else ""
    path_txt = " → ".join(html.escape(s) for s in path)
    changes_section = changes_html(diff)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:sans-serif;margin:1.5em}} .edge{{stroke:#999;stroke-width:1.5}}
.edge.path{{stroke:#d00;stroke-width:3}} .edge.added{{stroke:#07c;stroke-dasharray:4 3}}
.node rect{{stroke:#333}} .node rect.onpath{{stroke:#d00;stroke-width:3}} .node{{cursor:pointer}}
.p{{font-size:11px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px}}
#details{{margin:1em 0;padding:.6em;border:1px solid #aaa;min-height:1.2em;background:#fafafa}}
figure.chart{{display:inline-block;margin:0 1em .5em 0}} figcaption{{font-size:11px}}
.headline{{font-size:1.15em;background:#fff6e0;border-left:4px solid #e90;padding:.6em .8em;max-width:70em}}
table.words .shorthand{{display:none}} table.shorthand .words{{display:none}}
table.shorthand .shorthand{{display:inline}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p id="headline" class="headline">{html.escape(headline)}</p>
<p>Propagation path (root cause first): <b id="path">{path_txt}</b></p>{run_link}
<p>Colour: posterior probability of being the root cause. Red edges: the propagation path; dashed
blue: edges new since the last topology snapshot. Click a service for its evidence.</p>
{''.join(parts)}
<div id="details">Click a service.</div>
{changes_section}
<h2>Ranking</h2>
<p><label><input type="checkbox" id="shorthand-toggle"> show the evidence shorthand (as in evidence.csv)</label></p>
<table id="ranking" class="words"><tr><th>rank</th><th>service</th><th>P(root cause)</th><th>evidence</th>
<th>example traces</th></tr>{rows}</table>
{log_templates_html(ranking[:5])}
{charts_html(evidence, [r["service"] for r in ranking[:5]], event_time, window_s)}
<script>
document.getElementById('shorthand-toggle').addEventListener('change', e => {{
  const t = document.getElementById('ranking');
  t.className = e.target.checked ? 'shorthand' : 'words';
}});
const EVIDENCE = {evidence_json};
document.querySelectorAll('.node').forEach(n => n.addEventListener('click', () => {{
  const s = n.getAttribute('data-service');
  const d = document.getElementById('details');
  d.textContent = s + ': ' + (EVIDENCE[s] || 'no evidence');
}}));
</script></body></html>
"""
