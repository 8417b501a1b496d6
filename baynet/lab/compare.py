"""Two evaluation runs side by side, case by case: what a rule change moved, per mesh and per fault type.

Both runs are the JSON that ``baynet eval bundles --json`` or ``baynet eval nezha --json`` prints. Cases are
matched on their directory (bundles) and name; only the cases in both runs are scored, so a run that
skipped a bundle the other analysed does not bias the comparison (those cases are listed apart). Scores are
recomputed from each case's rank of the true service: AC@1 and Avg@5 (the mean of AC@1..AC@5).

A group *lost* when its AC@1 fell: the project's rule is that a change which helps one mesh and costs
another is not kept, and ``baynet eval compare --fail-on-loss`` turns that into an exit code.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from baynet.lab.scoring import KS, metrics


class CompareError(ValueError):
    """Input that is not an evaluation run's JSON."""


def _cases(run: Any, label: str) -> dict[tuple[str, str], dict[str, Any]]:
    if not isinstance(run, dict) or not isinstance(run.get("cases"), list):
        raise CompareError(f"{label}: not the JSON of `baynet eval bundles --json` or `baynet eval nezha --json` "
                           f"(no 'cases' list; keys: {sorted(run) if isinstance(run, dict) else type(run).__name__})")
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for i, c in enumerate(run["cases"]):
        if not isinstance(c, dict) or "case" not in c or "rank" not in c:
            raise CompareError(f"{label}: case {i} has no 'case' and 'rank': {str(c)[:120]}")
        key = (str(c.get("directory", "")), str(c["case"]))
        if key in out:
            raise CompareError(f"{label}: case {key[1]!r} appears twice in {key[0] or 'the run'}")
        out[key] = c
    return out


def _score(ranks: list[int | None]) -> dict[str, float]:
    """AC@1, Avg@5 and n of the true services' ranks, as the scorer computes them."""
    m = metrics([{k: 1.0 if r is not None and r <= k else 0.0 for k in KS} for r in ranks])
    return {"AC@1": m["AC@1"], "Avg@5": m["Avg@5"], "n": m["n"]}


def compare_runs(before: Any, after: Any) -> dict[str, Any]:
    """``overall``, ``by_directory``, ``by_type`` (keyed ``directory | fault type`` when the runs hold several
    directories) -- each ``{"before": {AC@1, Avg@5, n}, "after": {...}, "lost": bool}`` -- the ``moved``
    cases (rank before and after, top 1 before and after), ``only_before`` / ``only_after``, and ``lost``:
    the groups whose AC@1 fell."""
    a, b = _cases(before, "before"), _cases(after, "after")
    common = [k for k in a if k in b]
    if not common:
        raise CompareError("the two runs share no case (matched on directory and case name)")
    several = len({k[0] for k in common}) > 1
    groups: dict[str, dict[str, list]] = defaultdict(lambda: {"before": [], "after": []})
    moved = []
    for key in common:
        ca, cb = a[key], b[key]
        fault = str(ca.get("fault_type", ""))
        names = ["overall", f"directory {key[0] or '.'}", f"{key[0]} | {fault}" if several else fault]
        for name in names:
            groups[name]["before"].append(ca["rank"])
            groups[name]["after"].append(cb["rank"])
        if ca["rank"] != cb["rank"]:
            moved.append({"directory": key[0], "case": key[1], "fault_type": fault, "truth": ca.get("truth"),
                          "rank_before": ca["rank"], "rank_after": cb["rank"],
                          "top1_before": (ca.get("top5") or [None])[0], "top1_after": (cb.get("top5") or [None])[0]})
    scored = {}
    for name, g in groups.items():
        sb, sa = _score(g["before"]), _score(g["after"])
        scored[name] = {"before": sb, "after": sa, "lost": sa["AC@1"] < sb["AC@1"] - 1e-12}
    lost = sorted(k for k, v in scored.items() if v["lost"])
    return {
        "overall": scored.pop("overall"),
        "by_directory": {k[len("directory "):]: v for k, v in scored.items() if k.startswith("directory ")},
        "by_type": {k: v for k, v in sorted(scored.items()) if not k.startswith("directory ")},
        "moved": sorted(moved, key=lambda m: (m["directory"], m["case"])),
        "only_before": sorted(k[1] for k in a if k not in b),
        "only_after": sorted(k[1] for k in b if k not in a),
        "lost": lost,
    }
