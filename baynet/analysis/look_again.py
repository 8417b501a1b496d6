"""Look again a little later, where the first look cannot yet tell, and read the incident again when the data
hold more (the flow waits for it; ``eval bundles`` reads the bundle that much further). Two reasons:

* **a version too young to judge**: the top-ranked service's evidence is a new version compared in too few
  windows to tell a fresh pod's warm-up from a lasting slowdown. Read again when it has three windows, and
  again while the new top-ranked service's version is that young. The wait is the data's own: the windows
  still missing, at the data's step. Measured on the hard rollouts (2026-12-06): 14 of 100 looked again, 7
  moved to the true cause, none away (0.81 -> 0.88).
* **nothing of its own yet**: no service's own work (traces, metrics or logs) looked anomalous in any slice,
  so the ranking rests on symptoms and priors alone -- an alert that came before the fault showed, or data
  that had not landed. Read again one slice later, once. The second look replaces the first only where it
  saw some service's own fault, and only where every regular source (metrics, spans) delivered the wait
  (reached into its second half; metrics within their own step of its end); otherwise the first look
  stands and a note says why. Measured 2026-12-06 (README, "Nothing of its own yet"): Online Boutique with the alert
  a step earlier 0.75 -> 0.80, hard rollouts 0.88 -> 0.90; no development mesh's as-is case down.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from baynet.evidence.changes import young_version_wait
from baynet.evidence.steps import data_step
from baynet.settings import Settings
from baynet.windows import Windows

if TYPE_CHECKING:
    from baynet.analysis import AnalysisResult
    from baynet.sources.base import Observations


def look_again_s(result: "AnalysisResult", observations: "Observations", settings: Settings, quiet: bool = True
                 ) -> tuple[float, str, tuple[str, int]]:
    """Seconds to wait before reading again (0: the ranking stands), why, and what it waits on (for a young
    version the service and the windows its version has served in so far; ``("", 0)`` for nothing of its own
    yet, asked about only where ``quiet``). Only the top-ranked service's own version is asked about: a young
    version further down cannot change who comes first by settling."""
    if not result.ranking or settings.look_again_max_s <= 0:
        return 0.0, "", ("", 0)
    top = result.ranking[0]["service"]
    until = _end(result, settings)
    wait, why, seen = young_version_wait(observations.table("versions"), top, until)
    if wait:
        return wait, why + YOUNG, (top, seen)
    if quiet and nothing_of_its_own(result):
        return float(settings.window_s), QUIET, ("", 0)
    return 0.0, "", ("", 0)


YOUNG = ": too soon to tell a fresh pod's warm-up from a lasting slowdown"
QUIET = "no service's own work looked anomalous in any slice: the fault may not have shown yet"
OWN_STATES = ("own_state", "m_own_state", "l_own_state")


def nothing_of_its_own(result: "AnalysisResult") -> bool:
    """Whether no service's own work (:data:`OWN_STATES`) was above ok in any incident slice, where any was judged."""
    ev = result.evidence
    if ev is None or ev.empty or "window" not in ev:
        return False
    inc = ev[ev["window"] >= 0]
    cols = [c for c in OWN_STATES if c in inc]
    return bool(cols) and not (inc[cols].fillna(0) > 0).to_numpy().any()


REGULAR = (("signals", "time", 1.0), ("resources", "time", 1.0), ("spans", "start_ns", 1e-9))


def newest(observations: "Observations", until: float) -> dict[str, float]:
    """Per table that comes regularly (metrics, spans; not logs, which a quiet service may not write), its
    newest time at or before ``until``."""
    out = {}
    for name, col, scale in REGULAR:
        t = observations.table(name)
        if t is not None and col in t and len(t):
            v = t[col].to_numpy(dtype=float) * scale
            v = v[v <= until]
            if len(v):
                out[name] = float(v.max())
    return out


def uncovered(before: dict[str, float], after: dict[str, float], until: float, wait: float,
              step: float | None) -> list[str]:
    """The tables that had data at the first look (``before``: :func:`newest`) but do not reach into the
    second half of the wait (metrics: nor within their own ``step`` of its end): the second look would judge
    a slice they have not delivered (data still to land, or a recording that ended)."""
    return [name for name in before
            if after.get(name, 0.0) < until - (wait / 2 if name == "spans" else max(wait / 2, step or 0.0))]


def _end(result: "AnalysisResult", settings: Settings) -> float:
    """The end of the incident window ``settings`` give ``result``'s alert: what a look reads up to."""
    return Windows.around(result.event.unix, settings).incident[1]


def _note(result: "AnalysisResult", note: str) -> None:
    result.notes.append(note)
    result.fetch["notes"] = result.notes  # ranking.json's notes are the analysis' (one list, as analyse() sets it)


def later(settings: Settings, wait_s: float) -> Settings:
    """The settings of the second look: the incident window runs ``wait_s`` further past the alert."""
    return settings.model_copy(update={"settle_s": settings.settle_s + int(math.ceil(wait_s))})


def too_far(result: "AnalysisResult", wait_s: float, why: str, settings: Settings) -> None:
    """Note on ``result`` that another look was called for but lies beyond ``look_again_max_s``."""
    note = (f"another look was called for ({why}); it would need {wait_s:.0f} s more data in all, over "
            f"BAYNET_LOOK_AGAIN_MAX_S={settings.look_again_max_s}")
    _note(result, note)


def until_settled(first: "AnalysisResult", observations: "Observations", settings: Settings,
                  again: Callable[[Settings, str], tuple["AnalysisResult", "Observations"]]) -> "AnalysisResult":
    """``first`` where it stands; else the ranking of a later look (module docstring): ``again(later
    settings, why)`` reads and ranks anew (waiting for the data first, in the flow), as long as a reason to
    look again holds and the whole wait stays within ``look_again_max_s``. A look for nothing of its own
    yet is taken once, first, and set aside where it saw no more. The flow and the bundle analysis both
    rank this way."""
    result, total, reasons, waited_on = first, 0.0, [], None
    while True:
        wait, why, on = look_again_s(result, observations, later(settings, total), quiet=not total)
        if not wait:
            break
        if on[0] and on == waited_on:  # the last wait brought that version no window: it serves too rarely
            _note(result, f"{why.removesuffix(YOUNG)} after waiting: it serves too rarely to wait for")
            break
        if total + wait > settings.look_again_max_s:
            too_far(result, total + wait, why, settings)
            break
        quiet = not on[0]  # nothing of its own yet: the second look stands only where it saw more
        if quiet:
            had = newest(observations, _end(result, later(settings, total)))
            kept = result, observations
        total += wait
        waited_on = on
        result, observations = again(later(settings, total), why)
        if quiet:
            end = _end(result, later(settings, total))
            short = uncovered(had, newest(observations, end), end, wait,
                              data_step(observations.table("signals"), observations.table("resources")))
            if short or nothing_of_its_own(result):
                result, observations = kept
                total -= wait
                saw = (f"{' and '.join(short)} did not reach its end" if short
                       else "still no service's own work looked anomalous")
                _note(result, f"looked again {wait:.0f} s later ({why}); {saw}: the first look stands")
                break
        reasons.append(why)
    if total:
        record_first_look(result, first, total, "; ".join(reasons))
    return result


def record_first_look(result: "AnalysisResult", first: "AnalysisResult", wait_s: float, why: str) -> None:
    """Note on the second look's ``result`` what the first look ranked and why it looked again."""
    top = [{"service": r["service"], "posterior": round(float(r["posterior"]), 4)} for r in first.ranking[:3]]
    looked: dict[str, Any] = {"after_s": round(wait_s, 1), "because": why, "first_look": top}
    result.fetch["looked_again"] = looked
    note = (f"looked again {wait_s:.0f} s later ({why}); the first look ranked "
            + ", ".join(f"{t['service']} ({t['posterior']:.2f})" for t in top))
    _note(result, note)
    if first.ranking and first.ranking[0]["service"] != (result.ranking[0]["service"] if result.ranking else None):
        result.headline += (f" Looked again {wait_s:.0f} s later ({why}): the first look had ranked "
                            f"{first.ranking[0]['service']} first.")
