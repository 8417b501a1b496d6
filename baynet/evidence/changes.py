"""Deployments and config changes as evidence: a prior that decays, and the canary comparison.

Most incidents follow a change, and several services often change at once. So a change alone is not
blame:

* **Prior.** A service changed (a bundle's ``changes.csv`` row, or a ``destination_version`` that first
  serves calls after the baseline) has its root-cause prior odds multiplied by
  ``1 + (boost - 1) x 0.5 ** (age / half_life)``: x4 at the change, x2.5 after one half-life (30 min by
  default), back to x1 after a few hours. A change that did not hurt leaves the service's own
  observations fine, and those outweigh the prior.
* **Learnt.** Once operators confirm root causes, the boost and half-life are estimated from the
  confirmed incidents of the mesh (:func:`learn_change_params`, kept in the model's
  ``change_history``), today's values being the starting point.
* **Canary.** Where two versions of a service serve calls in the same slice, the newer version's failed
  calls are tested against the older's error ratio (binomial, the older ratio estimated as
  ``(errors + 0.5) / (requests + 1)``): a newer version that fails significantly more is strong own-fault
  evidence (``canary_z`` in baseline spreads; the metrics' own-work state becomes severe at
  :attr:`ChangeParams.canary_z`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd

from baynet.evidence.base import Judged
from baynet.evidence.steps import data_step

if TYPE_CHECKING:
    from baynet.dbn import DBNModel
    from baynet.settings import Settings
    from baynet.sources.base import Observations
    from baynet.windows import Windows

CHANGE_COLUMNS = ["time", "service", "kind", "detail", "source"]


@dataclass(frozen=True)
class ChangeParams:
    boost: float = 4.0            # prior odds multiplier at the change time
    half_life_s: float = 1800.0   # ... whose excess halves every half-life
    canary_z: float = 3.0         # a newer version failing this many spreads more than the older: anomalous
    ratio_floor: float = 0.005    # spread floor of error ratios compared without counts (half a point)
    least_of: int = 3             # a slice's latency comparison spans at least this many of the data's steps


def change_events(changes: pd.DataFrame | None, signals: pd.DataFrame | None,
                  baseline: tuple[float, float]) -> pd.DataFrame:
    """Changes from ``changes.csv`` rows (or a live change source's, :mod:`baynet.sources.kube_state`, which
    name their ``source``) and from versions that first serve calls after the baseline began (on a
    service that served another version before)."""
    rows = []
    if changes is not None and not changes.empty:
        sources = changes["source"] if "source" in changes else pd.Series("changes.csv", index=changes.index)
        for r, source in zip(changes.itertuples(), sources):
            rows.append((float(r.time), str(r.service), str(r.kind or "change"), str(r.detail or ""),
                         str(source or "changes.csv")))
    if signals is not None and not signals.empty and "destination_version" in signals:
        s = signals[(signals["destination_version"] != "") & _serving(signals)]
        for svc, g in s.groupby("destination"):
            first = g.groupby("destination_version")["time"].min()
            if len(first) < 2:
                continue
            for version, t in first.items():
                if t > baseline[0] and t > first.min():
                    rows.append((float(t), str(svc), "deploy", f"version {version} first serves calls",
                                 "signals.csv destination_version"))
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS).sort_values("time", kind="stable").reset_index(drop=True)


def _serving(signals: pd.DataFrame) -> pd.Series:
    """Rows that show a version serving calls: counted requests, or -- where calls are not counted -- any
    latency or error ratio measured for it."""
    measured = [c for c in ("error_ratio", "latency_ms_avg", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99")
                if c in signals]
    uncounted = signals["requests"].isna() & signals[measured].notna().any(axis=1) if measured else False
    return (signals["requests"].fillna(0) > 0) | uncounted


def first_served(rows: pd.DataFrame) -> pd.Series:
    """When each (service, version) first served calls: the key :func:`newest_version` orders by."""
    return rows.groupby(["destination", "destination_version"])["time"].min()


def newest_version(service: str, versions: "Iterable[str]", first_seen: pd.Series) -> str:
    """The version of ``service`` that came last (first served calls latest; the name breaks a tie)."""
    return max(versions, key=lambda v: (first_seen[(service, v)], v))


COMPARED_WINDOWS = 3  # windows a new version is compared in before a warm-up can be told from a slowdown


def young_version_wait(versions: pd.DataFrame | None, service: str, until: float) -> tuple[float, str, int]:
    """Seconds of data still to come (and why, and in how many windows the version has served so far)
    before ``service``'s newest version has served in :data:`COMPARED_WINDOWS` of the data's own windows by
    ``until``: a version compared in fewer cannot yet be told from a fresh pod's warm-up
    (:func:`version_latency`). ``(0, "", 0)`` where it has, where the service runs one version, or where the
    step cannot be read."""
    if versions is None or versions.empty or "destination_version" not in versions:
        return 0.0, "", 0
    rows = versions[(versions["destination"] == service) & (versions["destination_version"] != "")
                    & (versions["reporter"] != "source") & (versions["time"] <= until)]
    rows = rows[_serving(rows)]
    if rows["destination_version"].nunique() < 2:
        return 0.0, "", 0
    step = data_step(rows, None) or 0.0
    newest = newest_version(service, rows["destination_version"].unique(), first_served(rows))
    seen = rows.loc[rows["destination_version"] == newest, "time"].nunique()
    if step <= 0 or seen >= COMPARED_WINDOWS:
        return 0.0, "", 0
    return (COMPARED_WINDOWS - seen) * step, (f"{service}'s {newest} had served in {seen} of the data's "
                                              f"{step:.0f} s windows"), seen


def change_ages(events: pd.DataFrame, at: float) -> dict[str, float]:
    """Seconds from each changed service's latest change at or before ``at`` to ``at``."""
    return {str(svc): at - float(g["time"].max()) for svc, g in events[events["time"] <= at].groupby("service")}


def factor(age: float, params: ChangeParams) -> float:
    return 1.0 + (params.boost - 1.0) * 0.5 ** (age / params.half_life_s)


def prior_factors(events: pd.DataFrame, at: float, params: ChangeParams = ChangeParams()) -> dict[str, float]:
    """Prior odds multiplier per changed service, from its latest change at or before ``at``."""
    return {svc: factor(age, params) for svc, age in change_ages(events, at).items()}


# The learnt prior's own prior: log-normal around the starting values (boost x4, half-life 30 min), wide
# enough that a few dozen confirmed incidents move it, narrow enough that one or two do not.
LOG_BOOST_SD = 0.75
LOG_HALF_LIFE_SD = 1.5
_BOOSTS = np.exp(np.linspace(0.0, math.log(200.0), 61))
_HALF_LIVES = np.exp(np.linspace(math.log(30.0), math.log(7 * 86400.0), 61))


def learn_change_params(history: list[dict], start: ChangeParams = ChangeParams()) -> ChangeParams:
    """The change prior estimated from confirmed incidents (``history``: per incident the confirmed
    ``root``, the ``members`` analysed and the ``changed`` members' ages in seconds at the alert): the
    boost and half-life that make the confirmed root causes most probable *under the prior alone* -- a
    member's share of the incident's prior weight, weight ``1 + (boost - 1) x 0.5 ** (age / half-life)``
    for a changed member and 1 for the others -- times a log-normal prior centred on ``start`` (a
    maximum a posteriori estimate on a grid). No history: ``start``. Incidents where nothing changed
    say nothing about changes and are skipped. A mesh where the latest change is nearly always the cause
    learns a short half-life and a large boost; one where changes are rarely the cause, a boost near 1."""
    useful = [h for h in history if h.get("changed") and h.get("members")]
    if not useful:
        return start
    b = _BOOSTS[:, None]
    h = _HALF_LIVES[None, :]
    loglik = -((np.log(b) - math.log(start.boost)) ** 2) / (2 * LOG_BOOST_SD ** 2) \
        - ((np.log(h) - math.log(start.half_life_s)) ** 2) / (2 * LOG_HALF_LIFE_SD ** 2)
    for inc in useful:
        changed = {str(k): float(v) for k, v in inc["changed"].items()}
        unchanged = max(0, len(set(inc["members"]) - set(changed)))
        total = unchanged + sum(1.0 + (b - 1.0) * 0.5 ** (a / h) for a in changed.values())
        root = str(inc.get("root"))
        mine = 1.0 + (b - 1.0) * 0.5 ** (changed[root] / h) if root in changed else 1.0
        loglik = loglik + np.log(mine) - np.log(total)
    i, j = np.unravel_index(int(np.argmax(loglik)), loglik.shape)
    return dataclasses.replace(start, boost=float(_BOOSTS[i]), half_life_s=float(_HALF_LIVES[j]))


def canary(signals: pd.DataFrame | None, slices: list[tuple[float, float]],
           params: ChangeParams = ChangeParams()) -> pd.DataFrame:
    """Per service and slice where two versions serve calls: ``canary_z``, how much worse the newest version
    does than the others -- its errors against their ratio, or its latency against theirs in the same
    windows (:func:`version_latency`), whichever is worse (0 when it is no worse) --, ``canary``, that
    comparison in words, and ``slower_z``, the latency comparison alone (0 where there is none)."""
    cols = ["service", "window", "canary_z", "new_version", "canary", "slower_z"]
    if signals is None or signals.empty or "destination_version" not in signals:
        return pd.DataFrame(columns=cols)
    s = signals[(signals["destination_version"] != "") & (signals["reporter"] != "source") & _serving(signals)].copy()
    if s.empty:
        return pd.DataFrame(columns=cols)
    counted = s["requests"].notna()
    s["errors"] = s["requests"] * s["error_ratio"].fillna(0.0)
    first_seen = first_served(s)
    rows = []
    for i, (lo, hi) in enumerate(slices):
        here = s[(s["time"] > lo) & (s["time"] <= hi)]
        for svc, g in here.groupby("destination"):
            if g["destination_version"].nunique() < 2:
                continue
            newest = newest_version(svc, g["destination_version"].unique(), first_seen)
            if counted[g.index].all():
                per = g.groupby("destination_version")[["requests", "errors"]].sum()
                n_new, e_new = per.loc[newest]
                old = per.drop(index=newest).sum()
                p_old = (old["errors"] + 0.5) / (old["requests"] + 1.0)
                # The normal approximation, not the exact tail the service's errors are read in
                # (metrics.binomial_z): measured, the exact tail lost a bad version whose first canary
                # step served one or two calls a slice (README, "one failed call")
                z = (e_new - n_new * p_old) / math.sqrt(max(n_new * p_old * (1 - p_old), 1e-9))
                r_new, r_old = e_new / max(n_new, 1e-9), old["errors"] / max(old["requests"], 1e-9)
            else:  # no counts: the versions' error ratios against their spread (Welch's t, a floor of half a point)
                new = g.loc[g["destination_version"] == newest, "error_ratio"].dropna().to_numpy(dtype=float)
                old = g.loc[g["destination_version"] != newest, "error_ratio"].dropna().to_numpy(dtype=float)
                if not len(new) or not len(old):
                    continue
                var = max(float(np.var(np.r_[new - new.mean(), old - old.mean()], ddof=1)) if len(new) + len(old) > 2
                          else 0.0, params.ratio_floor ** 2)
                z = (new.mean() - old.mean()) / math.sqrt(var * (1 / len(new) + 1 / len(old)))
                r_new, r_old = float(new.mean()), float(old.mean())
            olds = "/".join(sorted(str(v) for v in g["destination_version"].unique() if v != newest))
            rows.append((str(svc), i, max(0.0, float(z)), str(newest),
                         f"{newest} error ratio {r_new:.2f} against {olds} {r_old:.2f} in the same {hi - lo:.0f} s"))
    errors = pd.DataFrame(rows, columns=cols[:-1]).assign(slower_z=0.0)
    slower = version_latency(s, slices, first_seen, least_of=params.least_of)
    if slower.empty:
        return errors
    both = pd.concat([errors, slower.assign(slower_z=slower["canary_z"])], ignore_index=True)
    worst = both.loc[both.groupby(["service", "window"])["canary_z"].idxmax()].drop(columns="slower_z")
    return worst.merge(both.groupby(["service", "window"], as_index=False)["slower_z"].max(),
                       on=["service", "window"]).reset_index(drop=True)


def version_latency(s: pd.DataFrame, slices: list[tuple[float, float]], first_seen: pd.Series,
                    least_of: int = ChangeParams.least_of) -> pd.DataFrame:
    """Per service and slice where two versions serve calls: how much slower the newest version answers
    than the older ones *in the same windows*, in spreads. Each window gives the log ratio of the two
    versions' latency (requests-weighted over callers where counted); a slice's figure is the least of its
    windows' ratios, so the new version must be slower in every window of the slice. The spread is the
    window-to-window spread of the service's own log latency before the newest version came (floored at
    5 %), doubled in variance for a difference. A fresh pod's warm-up is measured, not assumed: the
    ratio's leading windows after the version first served, while each lies more than three spreads above
    the median of the windows after it, are left out (a lasting slowdown never settles, so none of it is);
    the cold start of later canary steps' pods reaches only some windows of a slice, which the least
    leaves out. A version compared in fewer than three windows so far says so in its words (too soon to
    tell a warm-up from a lasting slowdown), as a fresh pod's resources are. Where a slice holds fewer than
    ``least_of`` of the data's steps (one-minute data in
    one-minute slices), the least is taken over the ``least_of`` steps ending at the slice's end: a cold
    start fills one window there, a lasting slowdown all of them."""
    cols = ["service", "window", "canary_z", "new_version", "canary"]
    col = next((c for c in ("latency_ms_p50", "latency_ms_avg", "latency_ms_p90", "latency_ms_p99")
                if c in s and s[c].notna().any()), None)
    if col is None:
        return pd.DataFrame(columns=cols)
    d = s[s[col].notna() & (s[col] > 0)].copy()
    d["w"] = d["requests"].fillna(1.0).clip(lower=1e-9)
    d["wl"] = np.log(d[col].astype(float)) * d["w"]
    per = d.groupby(["destination", "destination_version", "time"])[["wl", "w"]].sum()
    per = (per["wl"] / per["w"]).rename("log_ms").reset_index()
    rows = []
    lo_all = slices[0][0] if slices else 0.0
    step = data_step(d, None) or 0.0
    for svc, g in per.groupby("destination"):
        versions = g["destination_version"].unique()
        if len(versions) < 2:
            continue
        newest = newest_version(svc, versions, first_seen)
        born = float(first_seen[(svc, newest)])
        old = g[g["destination_version"] != newest].groupby("time")["log_ms"].mean()
        before = old[old.index < born].to_numpy()
        if len(before) < 4:
            continue
        spread = max(float(np.std(before, ddof=1)), math.log(1.05))
        new = g[g["destination_version"] == newest].set_index("time")["log_ms"]
        ratio = (new - old.reindex(new.index)).dropna().sort_index()
        if ratio.empty or ratio.index.max() <= lo_all:
            continue
        windows_at = ratio.index.to_numpy(dtype=float)  # every window compared, warm-up or not
        r = ratio.to_numpy()
        j = 0
        while j < len(r) - 1 and r[j] > float(np.median(r[j + 1:])) + 3 * spread * math.sqrt(2):
            j += 1
        ratio = ratio.iloc[j:]
        t = ratio.index.to_numpy(dtype=float)
        olds = "/".join(sorted(str(v) for v in versions if v != newest))
        end = slices[-1][1] if slices else math.inf
        caveat = ""
        if (windows_at <= end).sum() < COMPARED_WINDOWS:  # as a fresh pod's resources: too few to tell
            caveat = (f"; {newest} {max(0.0, end - born):.0f} s old at the window's end, too soon to tell a "
                      f"fresh pod's warm-up from a lasting slowdown")
        for i, (lo, hi) in enumerate(slices):
            inside = (t > lo) & (t <= hi)
            if not inside.any():  # no window of its own: the earlier slices' comparison is theirs, not new
                continue
            if step > 0 and inside.sum() < least_of:  # at least least_of steps, ending at the slice's end
                inside = (t > min(lo, hi - least_of * step)) & (t <= hi)
            here = ratio.to_numpy()[inside]
            if not len(here):
                continue
            # the least of the slice's windows: a lasting slowdown is in every window, a fresh pod's
            # cold start after a canary step only in some (measured on the hard rollouts: the median
            # there cost 0.72 -> 0.60, the second-least 0.68; at one minute, least of 1 / 2 / 3 / 4
            # steps: 0.59 / 0.67 / 0.69 / 0.69)
            z = float(np.min(here)) / (spread * math.sqrt(2.0))
            ms_new = float(np.exp(np.median(new.reindex(ratio.index[inside]))))
            ms_old = float(np.exp(np.median(old.reindex(ratio.index[inside]))))
            rows.append((str(svc), i, max(0.0, z), str(newest), f"{newest} answers in {ms_new:.0f} ms against "
                         f"{olds} {ms_old:.0f} ms in the same windows (x{ms_new / ms_old:.1f} at the least{caveat})"))
    return pd.DataFrame(rows, columns=cols)


def judge(observations: "Observations", windows: "Windows", settings: "Settings", model: "DBNModel | None" = None
          ) -> Judged | None:
    """Recent changes as root-cause prior multipliers at the anomaly time (None when nothing changed)."""
    listed, versions = observations.table("changes"), observations.table("versions")
    if listed is None and versions is None:
        return None
    events = change_events(listed, versions, windows.baseline)
    at = windows.slices[-1][1]
    ages = change_ages(events, at)
    if not ages:
        return None
    learnt = [h for h in (model.change_history if model is not None else []) if h.get("changed")]
    params = learn_change_params(learnt)
    factors = {svc: factor(age, params) for svc, age in ages.items()}
    notes = ["recent changes: " + ", ".join(f"{s} (prior odds x{f:.1f})" for s, f in sorted(factors.items()))]
    if learnt:
        notes.append(f"change prior learnt from {len(learnt)} confirmed incident(s) with changes: "
                     f"x{params.boost:.1f} at the change, half-life {params.half_life_s / 60:.0f} min")
    found = [f"{r.service}: {r.detail} at {r.time:.0f}" for r in events.itertuples()]
    return Judged("changes", None, notes, prior_factor=factors, found=found, change_ages=ages)
