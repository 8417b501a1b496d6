"""Look again a little later: where the top-ranked service's evidence is a new version compared in too few
windows to tell a fresh pod's warm-up from a lasting slowdown, the incident is read and ranked once more
when the data hold enough (the flow waits for it; ``eval bundles`` reads the bundle that much further).

Measured on the hard rollouts (2026-12-06, the top candidate's newest version compared in fewer than three
windows, read again when it has three, and again while the new top candidate's is that young): 14 of 100
looked again, 7 moved to the true cause, none away (0.81 -> 0.88). The wait is the data's own: the windows
still missing, at the data's step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from baynet.evidence.changes import young_version_wait
from baynet.settings import Settings
from baynet.windows import Windows

if TYPE_CHECKING:
    from baynet.analysis import AnalysisResult
    from baynet.sources.base import Observations


def look_again_s(result: "AnalysisResult", observations: "Observations", settings: Settings
                 ) -> tuple[float, str, tuple[str, int]]:
    """Seconds to wait before reading again (0: the ranking stands), why, and what it waits on (the service
    and the windows its version has served in so far). Only the top-ranked service's own version is asked
    about: a young version further down cannot change who comes first by settling."""
    if not result.ranking or settings.look_again_max_s <= 0:
        return 0.0, "", ("", 0)
    top = result.ranking[0]["service"]
    until = Windows.around(result.event.unix, settings).incident[1]
    wait, why, seen = young_version_wait(observations.table("versions"), top, until)
    return wait, why, (top, seen)


def _note(result: "AnalysisResult", note: str) -> None:
    result.notes.append(note)
    result.fetch["notes"] = result.notes  # ranking.json's notes are the analysis' (one list, as analyse() sets it)


def later(settings: Settings, wait_s: float) -> Settings:
    """The settings of the second look: the incident window runs ``wait_s`` further past the alert."""
    return settings.model_copy(update={"settle_s": settings.settle_s + int(math.ceil(wait_s))})


def too_far(result: "AnalysisResult", wait_s: float, why: str, settings: Settings) -> None:
    """Note on ``result`` that another look was called for but lies beyond ``look_again_max_s``."""
    note = (f"too soon to tell a warm-up from a slowdown ({why}); another look would need {wait_s:.0f} s more "
            f"data in all, over BAYNET_LOOK_AGAIN_MAX_S={settings.look_again_max_s}")
    _note(result, note)


def until_settled(first: "AnalysisResult", observations: "Observations", settings: Settings,
                  again: Callable[[Settings, str], tuple["AnalysisResult", "Observations"]]) -> "AnalysisResult":
    """``first`` where it stands; else the ranking once the top-ranked service's version can be judged:
    ``again(later settings, why)`` reads and ranks anew (waiting for the data first, in the flow), as long as the
    new top-ranked service in turn runs a version too young to judge and the whole wait stays within
    ``look_again_max_s``. The flow and the bundle analysis both rank this way."""
    result, total, reasons, waited_on = first, 0.0, [], None
    while True:
        wait, why, on = look_again_s(result, observations, later(settings, total))
        if not wait:
            break
        if on == waited_on:  # the last wait brought that version no window: it serves too rarely to wait on
            _note(result, f"{why} after waiting: it serves too rarely to wait for")
            break
        if total + wait > settings.look_again_max_s:
            too_far(result, total + wait, why, settings)
            break
        total += wait
        reasons.append(why)
        waited_on = on
        result, observations = again(later(settings, total), why)
    if total:
        record_first_look(result, first, total, "; ".join(reasons))
    return result


def record_first_look(result: "AnalysisResult", first: "AnalysisResult", wait_s: float, why: str) -> None:
    """Note on the second look's ``result`` what the first look ranked and why it looked again."""
    top = [{"service": r["service"], "posterior": round(float(r["posterior"]), 4)} for r in first.ranking[:3]]
    looked: dict[str, Any] = {"after_s": round(wait_s, 1), "because": f"{why}: too soon to tell a fresh pod's "
                              "warm-up from a lasting slowdown", "first_look": top}
    result.fetch["looked_again"] = looked
    note = (f"looked again {wait_s:.0f} s later ({why}); the first look ranked "
            + ", ".join(f"{t['service']} ({t['posterior']:.2f})" for t in top))
    _note(result, note)
    if first.ranking and first.ranking[0]["service"] != (result.ranking[0]["service"] if result.ranking else None):
        result.headline += (f" Looked again {wait_s:.0f} s later ({why}): the first look had ranked "
                            f"{first.ranking[0]['service']} first.")
