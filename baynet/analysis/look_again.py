"""Look again a little later: where the top-ranked service's evidence is a new version compared in too few
windows to tell a fresh pod's warm-up from a lasting slowdown, the incident is read and ranked once more
when the data hold enough (the flow waits for it; ``eval bundles`` reads the bundle that much further).

Measured on the hard rollouts (2026-12-06, the top candidate's newest version compared in fewer than three
windows, then read again when it has three): 14 of 100 looked again, 6 moved to the true cause, none away.
The wait is the data's own: the windows still missing, at the data's step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from baynet.evidence.changes import young_version_wait
from baynet.settings import Settings
from baynet.windows import Windows

if TYPE_CHECKING:
    from baynet.analysis import AnalysisResult
    from baynet.sources.base import Observations


def look_again_s(result: "AnalysisResult", observations: "Observations", settings: Settings) -> tuple[float, str]:
    """Seconds to wait before reading again (0: the ranking stands), and why. Only the top-ranked service's
    own version is asked about: a young version further down cannot change who comes first by settling."""
    if not result.ranking or settings.look_again_max_s <= 0:
        return 0.0, ""
    until = Windows.around(result.event.unix, settings).incident[1]
    return young_version_wait(observations.table("versions"), result.ranking[0]["service"], until)


def _note(result: "AnalysisResult", note: str) -> None:
    result.notes.append(note)
    result.fetch["notes"] = result.notes  # ranking.json's notes are the analysis' (one list, as analyse() sets it)


def later(settings: Settings, wait_s: float) -> Settings:
    """The settings of the second look: the incident window runs ``wait_s`` further past the alert."""
    return settings.model_copy(update={"settle_s": settings.settle_s + int(math.ceil(wait_s))})


def too_far(result: "AnalysisResult", wait_s: float, why: str, settings: Settings) -> None:
    """Note on ``result`` that a second look was called for but lies beyond ``look_again_max_s``."""
    note = (f"too soon to tell a warm-up from a slowdown ({why}); a second look would need {wait_s:.0f} s more "
            f"data, over BAYNET_LOOK_AGAIN_MAX_S={settings.look_again_max_s}")
    _note(result, note)


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
