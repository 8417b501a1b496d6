"""A bundle read as the live sources would have answered: nothing after the incident window's end."""

import dataclasses

import numpy as np
import pandas as pd

from baynet.bundles.analyse import analyse_bundle
from baynet.bundles.read import load_bundle
from baynet.lab.datasets.rollouts import hard_rollout_bundle
from baynet.lab.degrade import degrade
from baynet.settings import Settings
from baynet.sources.bundle import bundle_observations
from baynet.windows import Windows


def _spans(rows):
    return pd.DataFrame(rows, columns=["trace_id", "span_id", "start_ns"])


def test_rows_after_the_windows_end_are_not_read_a_trace_that_began_before_it_stays_whole(tmp_path):
    bundle = load_bundle(hard_rollout_bundle(tmp_path / "b", "sock-shop", 3))
    until = bundle.event.unix
    spans = _spans([("a", "1", int((until - 1) * 1e9)), ("a", "2", int((until + 2) * 1e9)),
                    ("b", "3", int((until + 1) * 1e9))])
    later = bundle.changes.iloc[:1].assign(time=until + 60.0)  # a rollout that began after the alert
    bundle = dataclasses.replace(bundle, spans=spans, changes=pd.concat([bundle.changes, later], ignore_index=True))
    whole = bundle_observations(bundle)
    seen = bundle_observations(bundle, until=until)
    for table in ("signals", "resources", "logs", "changes", "versions"):
        all_rows, read = whole.table(table), seen.table(table)
        assert read is not None and len(read) and read["time"].max() <= until, table
        assert (all_rows["time"] > until).any(), table  # there was something later to leave out
        assert len(read) == (all_rows["time"] <= until).sum(), table
    assert sorted(seen.table("spans")["span_id"]) == ["1", "2"]  # trace a began before: both its spans


def test_what_a_bundle_holds_after_the_window_does_not_move_the_analysis(tmp_path):
    # One-minute data where the bad version's first point is the window's last: what came after the alert
    # (the version settling) once decided whether that point was a fresh pod's warm-up.
    bundle = degrade(load_bundle(hard_rollout_bundle(tmp_path / "b", "sock-shop", 18)), "resample_1m")
    until = Windows.around(bundle.event.unix, Settings()).incident[1]
    cut = dataclasses.replace(bundle, **{name: getattr(bundle, name)[getattr(bundle, name)["time"] <= until]
                                         for name in ("signals", "resources", "logs", "changes")})
    assert len(cut.signals) < len(bundle.signals)
    once = Settings(look_again_max_s=0)  # one look: a second would read on, as it should (test_rollouts_hard)
    full, short = analyse_bundle(bundle, once), analyse_bundle(cut, once)
    assert [r["service"] for r in full.ranking] == [r["service"] for r in short.ranking]
    assert np.allclose([r["posterior"] for r in full.ranking], [r["posterior"] for r in short.ranking])
