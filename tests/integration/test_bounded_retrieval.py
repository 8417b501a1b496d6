"""Bounded retrieval against the Tempo-compatible server (real HTTP): a busy incident read as an even,
weighted sample gives the evidence and ranking of reading every trace, at a fraction of the traces."""

import time

import numpy as np
import pytest

from baynet.analysis import analyse
from baynet.dbn import DBNModel
from baynet.events import parse_object
from baynet.evidence.traces import build_evidence
from baynet.lab.generator import generate
from baynet.settings import Settings
from baynet.local.tempo import TempoServer, TraceStore
from baynet.sources import gather
from baynet.sources.tempo import TempoTraces
from baynet.windows import Windows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def busy():
    """Gray failure in carts at 6x traffic (12 requests a second through the front end)."""
    inc = generate("sock-shop", "carts", "gray", fault_start=1_750_000_000.1, before_s=900, rate_per_s=2.0,
                   traffic=6, seed=3)  # a fixed time: the sub-windows (and so the sample) are the same each run
    store = TraceStore()
    store.add_spans(inc.spans)
    with TempoServer(store) as server:
        yield inc, server


def _analyse(inc, server, budget):
    settings = Settings(tempo_url=server.url, traces_per_slice=budget, _env_file=None)
    (event,) = parse_object(inc.event)
    observations = gather(event, Windows.around(event.unix, settings), [TempoTraces(settings)])
    result = analyse(event, observations, DBNModel(), settings)
    return observations.table("spans"), observations.parts[0].stats, result.judged["traces"].evidence, result.ranking


@pytest.mark.slow  # ~1 min: three reads of a busy incident, one of them whole
def test_a_sample_per_slice_gives_the_full_reads_evidence_and_ranking(busy):
    inc, server = busy
    _, full_stats, full_ev, full_rank = _analyse(inc, server, 0)
    spans, stats, ev, rank = _analyse(inc, server, 100)
    slices = 3 + 10  # three incident slices, ten one-minute pieces of the baseline
    # the budget per slice, plus the top-ups (30 per thinly sampled service and slice), and far below all
    assert stats["traces_fetched"] <= (100 + 30 * 12) * slices
    assert stats["traces_fetched"] < full_stats["traces_fetched"] / 3
    assert stats["sampled_fraction"] < 0.35 and "read" in stats["retrieval"]
    # how many traces there were, as far as Tempo's searches tell, within 15 % of the truth
    assert stats["traces_estimated"] == pytest.approx(full_stats["traces_found"], rel=0.15)
    assert rank[0]["service"] == full_rank[0]["service"] == "carts"
    inc_rows = lambda e: e[e["window"] >= 0].set_index(["service", "window"]).sort_index()  # noqa: E731
    a, b = inc_rows(ev), inc_rows(full_ev)
    common = a.index.intersection(b.index)
    busy_rows = b.loc[common, "requests"] >= 50
    # rates are estimated for all traffic, not read as drops: the sampled rate ratio follows the full one
    rate_dev = np.abs(a.loc[common, "rate_ratio"][busy_rows] - b.loc[common, "rate_ratio"][busy_rows])
    # ~100 of ~700 traces a minute: each slice's count is estimated from ~100 arrivals (~10 % noise, shared by
    # the services of a slice); measured over five alignments of the sub-windows: median 0.03-0.17, max <= 0.38
    assert rate_dev.median() < 0.2 and rate_dev.max() < 0.45
    assert (a.loc[common, "state"] == b.loc[common, "state"]).mean() >= 0.9
    assert np.abs(a.loc[common, "error_ratio"][busy_rows] - b.loc[common, "error_ratio"][busy_rows]).max() < 0.1
    # the weights matter: read unweighted, error traces first would overstate the error ratio
    windows = Windows.around(parse_object(inc.event)[0].unix, Settings(_env_file=None))
    raw_ev, _ = build_evidence(spans.drop(columns="w"), windows.baseline, windows.slices)
    raw = inc_rows(raw_ev)
    assert (raw.loc[common, "error_ratio"][busy_rows] - b.loc[common, "error_ratio"][busy_rows]).max() > \
        (a.loc[common, "error_ratio"][busy_rows] - b.loc[common, "error_ratio"][busy_rows]).max()


def test_a_quiet_incident_is_read_whole(busy):
    inc = generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900, rate_per_s=1.0)
    store = TraceStore()
    store.add_spans(inc.spans)
    with TempoServer(store) as server:
        spans, stats, ev, rank = _analyse(inc, server, 300)
        _, full_stats, full_ev, full_rank = _analyse(inc, server, 0)
    # every trace read (the full path's searches also take in a second past each window's end)
    assert stats["sampled_fraction"] == 1.0
    assert abs(stats["traces_fetched"] - full_stats["traces_fetched"]) <= 0.01 * full_stats["traces_fetched"]
    assert np.allclose(spans["w"], 1.0)
    cols = ["service", "window", "requests", "errors", "slow_frac", "self_slow_frac", "state", "own_state"]
    assert ev[cols].equals(full_ev[cols])
    assert [r["service"] for r in rank] == [r["service"] for r in full_rank]


def test_a_sample_of_data_that_cover_part_of_the_baseline_keeps_its_rates():
    """Data that begin inside the baseline window (a replay, a gap, a fresh deployment): a sample's rates
    are per second of the sub-windows its searches found data in, not of the whole window, so a busy
    service's rate ratio is read as the full read reads it, not as a rise."""
    inc = generate("sock-shop", "carts", "gray", fault_start=1_750_000_000.1, before_s=420, rate_per_s=2.0,
                   traffic=4, seed=3)
    store = TraceStore()
    store.add_spans(inc.spans)
    with TempoServer(store) as server:
        _, stats, ev, _ = _analyse(inc, server, 40)
        _, _, full_ev, _ = _analyse(inc, server, 0)
    assert stats["sampled_fraction"] < 0.5
    inc_rows = lambda e: e[e["window"] >= 0].set_index(["service", "window"]).sort_index()  # noqa: E731
    a, b = inc_rows(ev), inc_rows(full_ev)
    common = a.index.intersection(b.index)
    busy_rows = b.loc[common, "requests"] >= 50
    assert busy_rows.sum() >= 5
    ratio = a.loc[common, "rate_ratio"][busy_rows] / b.loc[common, "rate_ratio"][busy_rows]
    assert ratio.median() == pytest.approx(1.0, abs=0.2), ratio.describe()


@pytest.mark.parametrize("budget", [0, 1000, 40])  # every trace; the default (read whole); a sample
def test_traces_that_begin_late_are_read_on_into_the_gap(budget):
    """Traces that begin five seconds before the baseline's end (the gap: the two minutes before the first
    slice): both readers see the baseline's few traces cover less than a slice and read the gap too, and
    the evidence's baseline runs on to the first slice."""
    inc = generate("sock-shop", "carts", "latency", fault_start=1_750_000_000.1, before_s=125, rate_per_s=2.0,
                   seed=3)
    store = TraceStore()
    store.add_spans(inc.spans)
    (event,) = parse_object(inc.event)
    windows = Windows.around(event.unix, Settings(_env_file=None))
    with TempoServer(store) as server:
        spans, stats, ev, rank = _analyse(inc, server, budget)
    starts = spans["start_ns"].to_numpy() / 1e9
    in_gap = (starts >= windows.gap[0]) & (starts < windows.gap[1])
    assert in_gap.sum() > 200, stats  # ~240 requests through the front end in the gap, each several spans
    assert ev.attrs["baseline"] == (windows.baseline[0], windows.slices[0][0])
    front = ev[(ev["service"] == "front-end") & (ev["window"] == -1)]
    assert front["requests"].iloc[0] > 150
    assert rank[0]["service"] == "carts"
