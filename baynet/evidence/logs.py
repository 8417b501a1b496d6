"""Log lines -> per-service, per-slice evidence of the service's own fault.

Code faults (an exception thrown, a wrong value returned) often change neither span durations nor call
shapes nor a pod's metrics; they change what the service logs. Every line gets a **template key**: its
level and, where the line carries its code location (``TravelServiceImpl#451``, ``orders.go:88``), that
location; otherwise the template Drain mines from the message (drain3's miner, :class:`Templates`), its
variable parts masked. Per service and slice, against the service's own baseline:

* **WARN/ERROR lines** -- how many the service wrote, against its baseline rate (a Poisson test, the
  baseline rate taken as ``(count + 0.5) / baseline seconds`` so a baseline without any is not zero),
  and of those, the lines of templates the baseline never had (the same test with a baseline count of
  0): a ``return`` fault writes warnings of a kind it never writes in normal operation;
* **vanished steps** -- within each span, the sequence of its template keys: an expected step
  ``a -> b`` (spans that log ``a`` go on to log ``b`` next, at the baseline's rate ``p0``) that fell by half
  or more, judged by a binomial test of the slice's spans with ``a`` against ``p0`` (Jeffreys estimate),
  Bonferroni-corrected over the steps the service was tested on. An exception often writes nothing in the
  service that throws it: a line that normally follows another stops appearing;
* **own or propagated** -- lines carry the trace and span ids of the span that wrote them: a span whose
  descendant (in another service) is anomalous itself (WARN/ERROR lines, or a vanished step) only passes
  the fault on, and its lines do not count as its service's own evidence. The trace tree decides, so the
  deepest anomalous service keeps the blame. A WARN/ERROR line that names another service of the incident
  is about a call to it (one that may have failed before any span of it existed) and does not count
  either.

Each score is ``-log10`` of its test's p-value; the service's own-work level for the DBN (``l_own_state``)
is anomalous from :attr:`LogThresholds.anomalous` and severe from :attr:`LogThresholds.severe`. A service
without baseline lines says nothing (-1: unknown, not ok). Logs absent: no evidence at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from baynet.evidence.base import Judged

if TYPE_CHECKING:
    from baynet.dbn import DBNModel
    from baynet.settings import Settings
    from baynet.sources.base import Observations
    from baynet.windows import Windows

LOG_EVIDENCE_COLUMNS = ["service", "window", "lines", "bad_lines", "bad_score", "new_templates", "new_score",
                        "vanished_score", "vanished", "top", "score", "own_state"]
BAD_LEVELS = ("WARN", "ERROR", "FATAL")
_LEVELS = {"TRACE": "TRACE", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARN", "WARNING": "WARN", "ERROR": "ERROR",
           "ERR": "ERROR", "FATAL": "FATAL", "CRITICAL": "FATAL", "SEVERE": "ERROR", "CRIT": "FATAL"}
_LEVEL_FIELD = re.compile(r"""(?:\blevel|"level"|\bseverity|"severity")\s*[=:]\s*"?([A-Za-z]+)""", re.I)
_LEVEL_WORD = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|ERR|FATAL|CRITICAL|SEVERE|CRIT)\b")
_LOCATION = re.compile(r"(?<![\w$])((?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*#\d+)\b"
                       r"|(?<![\w./-])([\w./-]+\.(?:go|py|java|kt|scala|js|ts|rb|cs|cpp|cc|c|rs|php)):(\d+)\b")
_PREFIX = re.compile(r"^\s*(?:\d[\d:.,T/ -]*\d[Z]?\s+)?(?:[A-Z]+\s+)?")


@dataclass(frozen=True)
class LogThresholds:
    """Generic defaults (p-values, in -log10), not fitted to any dataset."""

    anomalous: float = 3.0        # -log10 p of the strongest own test: anomalous (p < 0.001)
    severe: float = 6.0           # ... severe (p < 1e-6)
    min_support: int = 3          # baseline spans that must show a step before its vanishing is judged
    drop: float = 0.5             # a step vanished when the slice's rate fell to at most this share of p0


def level_of(line: str) -> str:
    """The severity a plain line states (``level=error``, ``"level": "warn"``, ``... ERROR ...`` near its start);
    INFO when it states none."""
    found = _LEVEL_FIELD.search(line[:200])
    if found and found.group(1).upper() in _LEVELS:
        return _LEVELS[found.group(1).upper()]
    found = _LEVEL_WORD.search(line[:80])
    return _LEVELS[found.group(1)] if found else "INFO"


def location_of(line: str) -> str | None:
    """The code location a line carries (``Class#line`` of logback/log4j patterns, ``file.go:12``), or None."""
    found = _LOCATION.search(line)
    if not found:
        return None
    return found.group(1) or f"{found.group(2)}:{found.group(3)}"


class Templates:
    """Template mining for lines without a code location (drain3's Drain), seeded with the templates a
    mesh has shown before, so keys are the same from one incident to the next."""

    def __init__(self, known: Iterable[str] = ()):
        from drain3 import TemplateMiner
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig

        config = TemplateMinerConfig()
        config.profiling_enabled = False
        config.masking_instructions = [
            MaskingInstruction(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
            MaskingInstruction(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", "IP"),
            MaskingInstruction(r"\b[0-9a-fA-F]{16,}\b", "HEX"),
            MaskingInstruction(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:ms|s|%)?(?![\w.])", "NUM"),
        ]
        self.miner = TemplateMiner(config=config)
        for template in known:
            self.miner.add_log_message(template)

    def key(self, message: str) -> str:
        """The message's template as it stands after this message (use :meth:`keys` for a batch)."""
        return self.miner.add_log_message(message)["template_mined"]

    def keys(self, messages: list[str]) -> list[str]:
        """Each message's template once the whole batch is mined: a cluster's template generalises as it
        sees more messages, and lines of one cluster must share one key whenever they came."""
        ids = [self.miner.add_log_message(m)["cluster_id"] for m in messages]
        final = {c.cluster_id: c.get_template() for c in self.miner.drain.clusters}
        return [final[i] for i in ids]

    @property
    def known(self) -> list[str]:
        return sorted(c.get_template() for c in self.miner.drain.clusters)


def keyed(logs: pd.DataFrame, templates: Templates | None = None) -> pd.DataFrame:
    """``logs`` with ``level`` filled in from the line where it was blank and a template ``key`` per line.
    Each distinct line is read once (repeated lines are common)."""
    out = logs.copy()
    line = out["line"].astype(str)
    level = out["level"].fillna("").astype(str).str.upper().map(lambda v: _LEVELS.get(v, ""))
    distinct = pd.unique(line.to_numpy())
    missing = level == ""
    if missing.any():
        read = {text: level_of(text) for text in pd.unique(line[missing].to_numpy())}
        level[missing] = line[missing].map(read)
    out["level"] = level
    where = {text: location_of(text) for text in distinct}
    plain = [text for text, loc in where.items() if loc is None]
    if plain:
        templates = templates or Templates()
        messages = [_PREFIX.sub("", text, count=1) for text in plain]
        distinct_messages = list(dict.fromkeys(messages))
        by_message = dict(zip(distinct_messages, templates.keys(distinct_messages)))
        for text, message in zip(plain, messages):
            where[text] = by_message[message]
    out["key"] = out["level"] + " " + line.map(where).astype(str)
    return out


def _window_of(t: np.ndarray, baseline: tuple[float, float], slices: list[tuple[float, float]]) -> np.ndarray:
    out = np.full(len(t), -2, dtype=np.int64)
    out[(t >= baseline[0]) & (t < baseline[1])] = -1
    for i, (lo, hi) in enumerate(slices):
        out[(t >= lo) & (t < hi)] = i
    return out


def _poisson_score(k: float, expected: float) -> float:
    """-log10 P(X >= k) for X ~ Poisson(expected); 0 when k does not exceed it."""
    if k <= expected or k <= 0:
        return 0.0
    return float(-stats.poisson.logsf(k - 1, max(expected, 1e-12)) / math.log(10))


def _binomial_score(k: int, n: int, p0: float) -> float:
    """-log10 P(X >= k) for X ~ Binomial(n, p0); 0 when k does not exceed its expectation."""
    if n <= 0 or k <= n * p0:
        return 0.0
    return float(-stats.binom.logsf(k - 1, n, min(p0, 1.0)) / math.log(10))


def _span_steps(lines: pd.DataFrame, spans: pd.DataFrame | None, baseline: tuple[float, float],
                slices: list[tuple[float, float]]) -> pd.DataFrame:
    """Per span: the steps ``a -> b`` between consecutive distinct template keys of the lines it wrote, from
    ``^<operation>`` before the first (the span's operation where the traces have the span, so a change in
    which endpoints are called is not read as a vanished step; plain ``^`` otherwise) to ``$`` after the last.
    Spans of the traces that wrote no line count too (``^<operation> -> $``): an exception that stops a
    service before it logs leaves exactly that. One row per (span, a, b); ``b`` is None on the rows that say
    a span shows ``a`` at all."""
    with_span = lines.loc[lines["span_id"] != "", ["service", "span_id", "window", "time", "key"]]
    with_span = with_span.sort_values(["span_id", "time"], kind="stable")
    # The head of each span: its operation where the traces have it, else "^"; the window of its start.
    heads = with_span.groupby("span_id", sort=False)[["service", "window"]].first()
    heads["key"] = "^"
    if spans is not None and len(spans):
        t = spans["start_ns"].to_numpy() / 1e9
        window = _window_of(t, baseline, slices)
        traced = pd.DataFrame({"service": spans["service"].astype(str).to_numpy(),
                               "window": window, "key": "^" + spans["name"].astype(str).to_numpy()},
                              index=spans["span_id"].astype(str).to_numpy())
        traced = traced[(window >= -1) & ~traced.index.duplicated()]
        heads = pd.concat([traced, heads[~heads.index.isin(traced.index)]])
    heads.index.name = "span_id"
    heads = heads.reset_index()
    body = with_span[["span_id", "key"]].assign(order=1)
    ends = heads[["span_id"]].assign(key="$", order=2)
    seq = pd.concat([heads[["span_id", "key"]].assign(order=0), body, ends], ignore_index=True)
    seq = seq.sort_values(["span_id", "order"], kind="stable")
    a = seq["key"].to_numpy()[:-1]
    b = seq["key"].to_numpy()[1:]
    same_span = seq["span_id"].to_numpy()[:-1] == seq["span_id"].to_numpy()[1:]
    pairs = pd.DataFrame({"span_id": seq["span_id"].to_numpy()[:-1], "a": a, "b": b})[same_span & (a != b)]
    pairs = pairs.drop_duplicates()
    where = heads.set_index("span_id")[["service", "window"]]
    pairs = pairs.join(where, on="span_id")
    shows = pairs[["service", "window", "span_id", "a"]].drop_duplicates().assign(b=None)
    out = pd.concat([shows, pairs[["service", "window", "span_id", "a", "b"]]], ignore_index=True)
    out["window"] = out["window"].astype(np.int64)
    return out[["service", "window", "span_id", "a", "b"]]


def _vanished(steps: pd.DataFrame, n_slices: int, th: LogThresholds, excluded: set[str] | None = None
              ) -> tuple[dict[tuple[str, int], tuple[float, str]], set[str]]:
    """Per (service, slice) the strongest vanished step (score, "a -> b (k of n, usually p0)"), and the
    span ids that show a significant one (:attr:`LogThresholds.anomalous`: they logged ``a`` without going
    on to ``b``). Spans in ``excluded`` (propagated ones) are not counted in the slices."""
    base = steps[steps["window"] == -1]
    has_a = base[base["b"].isna()].groupby(["service", "a"])["span_id"].nunique()
    # A step to "$" that stops means the span went on to log more, and a warning or an error that stops is a
    # recovery: neither is a step of the normal flow that vanished.
    normal_b = base["b"].notna() & (base["b"] != "$") & ~base["b"].astype(str).str.startswith(BAD_LEVELS)
    has_ab = base[normal_b].groupby(["service", "a", "b"])["span_id"].nunique()
    has_ab = has_ab[has_ab >= th.min_support]
    if has_ab.empty:
        return {}, set()
    tests = has_ab.groupby(level=0).size()
    inc = steps[steps["window"] >= 0]
    if excluded:
        inc = inc[~inc["span_id"].isin(excluded)]
    out: dict[tuple[str, int], tuple[float, str]] = {}
    flagged: set[str] = set()
    for w in range(n_slices):
        here = inc[inc["window"] == w]
        if here.empty:
            continue
        spans_a = here[here["b"].isna()].groupby(["service", "a"])["span_id"].agg(set)
        spans_ab = here[here["b"].notna()].groupby(["service", "a", "b"])["span_id"].agg(set)
        for (service, a, b), k0 in has_ab.items():
            with_a = spans_a.get((service, a))
            if not with_a:
                continue
            n0 = has_a[(service, a)]
            p0 = (k0 + 0.5) / (n0 + 1.0)
            went_on = spans_ab.get((service, a, b), set())
            n1, k1 = len(with_a), len(went_on)
            if k1 > th.drop * p0 * n1:
                continue
            p = float(stats.binom.cdf(k1, n1, p0)) * int(tests[service])
            score = -math.log10(max(min(p, 1.0), 1e-300))
            if score <= 0:
                continue
            if score >= th.anomalous:
                flagged |= with_a - went_on
            if score > out.get((service, w), (0.0, ""))[0]:
                out[(service, w)] = (score, f"step {a} -> {b} vanished ({k1} of {n1} spans, usually {k0}/{n0})")
    return out, flagged


def _with_anomalous_descendant(spans: pd.DataFrame | None, anomalous: set[str]) -> set[str]:
    """Span ids that have an anomalous span (``anomalous``) below them in their trace, in another service."""
    if spans is None or spans.empty or not anomalous:
        return set()
    parent = dict(zip(spans["span_id"].astype(str), spans["parent_span_id"].astype(str)))
    service = dict(zip(spans["span_id"].astype(str), spans["service"].astype(str)))
    out: set[str] = set()
    for span in anomalous:
        own = service.get(span)
        seen, up = {span}, parent.get(span, "")
        while up and up not in seen:
            seen.add(up)
            if service.get(up) != own:
                out.add(up)
            up = parent.get(up, "")
    return out


def _names_another(lines: pd.DataFrame, spans: pd.DataFrame | None) -> np.ndarray:
    """WARN/ERROR lines that name another service of the incident ("No instances available for
    ts-basic-service", "call to payment failed"): about a call to it, not the writer's own work, even where
    no span of the call exists (it failed before it was sent)."""
    names = set(lines["service"].astype(str)) | (set(spans["service"].astype(str)) if spans is not None else set())
    names = sorted((n for n in names if len(n) >= 4), key=len, reverse=True)
    if not names:
        return np.zeros(len(lines), dtype=bool)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w-])")
    out = np.zeros(len(lines), dtype=bool)
    bad = lines["bad"].to_numpy()
    for i, (service, line) in enumerate(zip(lines["service"].astype(str), lines["line"].astype(str))):
        if bad[i]:
            out[i] = any(m != service for m in pattern.findall(line))
    return out


def build_log_evidence(logs: pd.DataFrame, baseline: tuple[float, float], slices: list[tuple[float, float]],
                       spans: pd.DataFrame | None = None, thresholds: LogThresholds = LogThresholds(),
                       templates: Templates | None = None) -> pd.DataFrame:
    """Per-service, per-slice log evidence (:data:`LOG_EVIDENCE_COLUMNS`; see the module docstring).
    ``spans`` (the span frame) ties lines to the trace tree for the own-or-propagated rule. Lines that
    already carry their template ``key`` (from :func:`keyed`) are not keyed again."""
    th, n = thresholds, len(slices)
    lines = logs.copy() if "key" in logs.columns else keyed(logs, templates)
    lines["window"] = _window_of(lines["time"].to_numpy(dtype=float), baseline, slices)
    lines = lines[lines["window"] >= -1]
    if lines.empty:
        return pd.DataFrame(columns=LOG_EVIDENCE_COLUMNS)
    lines["span_id"] = lines["span_id"].fillna("").astype(str)
    lines["bad"] = lines["level"].isin(BAD_LEVELS)
    in_base = lines["window"] == -1
    base_keys = set(zip(lines.loc[in_base, "service"], lines.loc[in_base, "key"]))
    unseen = np.array([(s, k) not in base_keys for s, k in zip(lines["service"], lines["key"])], dtype=bool)
    lines["new"] = lines["bad"].to_numpy() & ~in_base.to_numpy() & unseen
    # Seconds of data behind each window (lines of any service), so a partly covered slice compares fairly.
    by_window = lines.groupby("window")["time"]
    extent = by_window.max() - by_window.min()
    base_s = max(1.0, min(baseline[1] - baseline[0], float(extent.get(-1, 0.0))))
    steps = _span_steps(lines, spans, baseline, slices)
    _, vanishing = _vanished(steps, n, th)
    anomalous = set(lines.loc[lines["new"] & (lines["span_id"] != ""), "span_id"]) | vanishing
    propagated = _with_anomalous_descendant(spans, anomalous)
    vanished, _ = _vanished(steps, n, th, excluded=propagated)
    own = lines[(~lines["span_id"].isin(propagated) | (lines["span_id"] == "")) & ~_names_another(lines, spans)]
    base_bad = own[(own["window"] == -1) & own["bad"]].groupby("service").size()
    base_lines = lines[in_base].groupby("service").size()
    inc_own = own[own["window"] >= 0]
    g_own = inc_own.groupby(["service", "window"])
    n_own, n_bad, n_new = g_own.size(), g_own["bad"].sum(), g_own["new"].sum()
    n_all = lines[lines["window"] >= 0].groupby(["service", "window"]).size()
    new_lines = inc_own[inc_own["new"]]
    new_keys = new_lines.groupby(["service", "window"])["key"].nunique()
    top_new = new_lines.groupby(["service", "window", "key"]).agg(count=("line", "size"), line=("line", "first"))
    top_new = top_new.reset_index().sort_values("count", ascending=False, kind="stable").drop_duplicates(
        ["service", "window"]).set_index(["service", "window"])
    rows = []
    for service in sorted(set(lines["service"])):
        known = service in base_lines.index
        for w in range(n):
            k = (service, w)
            seconds = max(1.0, min(slices[w][1] - slices[w][0], float(extent.get(w, 0.0))))
            bad, here, new = int(n_bad.get(k, 0)), int(n_own.get(k, 0)), int(n_new.get(k, 0))
            bad_score = _binomial_score(bad, here, (base_bad.get(service, 0) + 0.5)
                                        / (base_lines.get(service, 0) + 1.0)) if known else 0.0
            new_score = _poisson_score(new, 0.5 * seconds / base_s) if known else 0.0
            v_score, v_what = vanished.get(k, (0.0, ""))
            top = ""
            if new:
                t = top_new.loc[k]
                top = f"new {t['key']} x{int(t['count'])}: {str(t['line'])[:160]}"
            elif v_what:
                top = v_what
            score = max(bad_score, new_score, v_score)
            level = -1 if not known else 2 if score >= th.severe else 1 if score >= th.anomalous else 0
            rows.append((service, w, int(n_all.get(k, 0)), bad, bad_score, int(new_keys.get(k, 0)), new_score,
                         v_score, v_what, top, score, level))
    ev = pd.DataFrame(rows, columns=LOG_EVIDENCE_COLUMNS)
    base = pd.DataFrame({"service": sorted(set(lines["service"])), "window": -1})
    ev = pd.concat([base, ev], ignore_index=True)
    for col, fill in (("lines", 0), ("bad_lines", 0), ("bad_score", 0.0), ("new_templates", 0), ("new_score", 0.0),
                      ("vanished_score", 0.0), ("vanished", ""), ("top", ""), ("score", 0.0), ("own_state", 0)):
        ev[col] = ev[col].fillna(fill)
    for col in ("lines", "bad_lines", "new_templates", "own_state"):
        ev[col] = ev[col].astype(np.int64)
    return ev[LOG_EVIDENCE_COLUMNS].sort_values(["service", "window"]).reset_index(drop=True)


def judge(observations: "Observations", windows: "Windows", settings: "Settings", model: "DBNModel | None" = None
          ) -> Judged | None:
    """The log evidence of an incident (None without log lines), on the slices the trace evidence keeps; lines
    without a code location keyed by a miner seeded with ``model``'s vocabulary, which the templates
    mined here extend."""
    logs = observations.table("logs")
    if logs is None:
        return None
    spans = observations.table("spans")
    slices = windows.slices
    if spans is not None and len(spans):  # the trace evidence drops slices without any span: so do we
        starts = spans["start_ns"].to_numpy() / 1e9
        slices = [(lo, hi) for lo, hi in slices if ((starts >= lo) & (starts < hi)).any()] or slices
    templates = Templates(known=model.log_templates if model is not None else ())
    lines = keyed(logs, templates)
    evidence = build_log_evidence(lines, windows.baseline, slices, spans)
    return Judged("logs", evidence if not evidence.empty else None, templates=templates.known, lines=lines)
