"""Log evidence (baynet.evidence.logs): template keys, new WARN/ERROR templates, vanished steps within spans,
own-or-propagated through the trace tree, and the DBN's third own-work observation (Sl)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from baynet.dbn import DBNModel
from baynet.evidence.fuse import TRACE_DEFAULTS, fuse, states_from_evidence
from baynet.evidence.logs import Templates, build_log_evidence, keyed, level_of, location_of
from baynet.evidence.traces import EVIDENCE_COLUMNS

BASE = (0.0, 600.0)
SLICES = [(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]


def frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (time, service, span_id, line)"""
    return pd.DataFrame([(t, svc, "", "", span, "", line) for t, svc, span, line in rows],
                        columns=["time", "service", "pod", "trace_id", "span_id", "level", "line"])


def spans_of(rows: list[tuple]) -> pd.DataFrame:
    """rows: (span_id, parent, service, name, start_s)"""
    return pd.DataFrame({"trace_id": "t", "span_id": [r[0] for r in rows], "parent_span_id": [r[1] for r in rows],
                         "service": [r[2] for r in rows], "name": [r[3] for r in rows],
                         "start_ns": [int(r[4] * 1e9) for r in rows], "end_ns": [int(r[4] * 1e9) + 10 for r in rows],
                         "failed": False})


def row(ev, svc, w):
    return ev[(ev["service"] == svc) & (ev["window"] == w)].iloc[0]


def test_levels_and_locations_are_read_from_plain_lines():
    assert level_of("16:43:17.120 ERROR  c.s.ContactsServiceImpl#37 TraceID: x [find][fail]") == "ERROR"
    assert level_of('{"level":"warning","msg":"slow"}') == "WARN"
    assert level_of("ts=1 level=error msg=boom") == "ERROR"
    assert level_of("GET /cart 200 12ms") == "INFO"
    assert location_of("16:43:17 INFO t.s.TravelServiceImpl#451 TraceID: a") == "t.s.TravelServiceImpl#451"
    assert location_of("E1204 12:00:00.1 orders/handler.go:88] failed") == "orders/handler.go:88"
    assert location_of("user 7 logged in") is None


def test_lines_without_a_location_get_a_mined_template_and_a_seeded_vocabulary_keeps_keys():
    logs = frame([(1.0, "a", "", "2024-01-01 12:00:00 ERROR payment 1234 declined for card 9f8e7d6c5b4a39281716"),
                  (2.0, "a", "", "2024-01-01 12:00:01 ERROR payment 9876 declined for card 0a1b2c3d4e5f60718293")])
    keys = keyed(logs, Templates())["key"]
    assert keys.nunique() == 1 and keys.iloc[0].startswith("ERROR payment")
    learnt = Templates()
    keyed(logs, learnt)
    again = keyed(logs.iloc[:1], Templates(known=learnt.known))["key"].iloc[0]
    assert again == keys.iloc[0]


def _traffic(rng, t0, t1, per_s, service, lines, span_prefix):
    rows = []
    for i, t in enumerate(np.sort(rng.uniform(t0, t1, int((t1 - t0) * per_s)))):
        span = f"{span_prefix}{i}"
        rows += [(t + 0.001 * k, service, span, line) for k, line in enumerate(lines)]
    return rows


def test_a_warning_of_a_kind_the_baseline_never_had_is_severe_and_a_few_are_not():
    rng = np.random.default_rng(0)
    normal = ["INFO c.Orders#10 get order", "INFO c.Orders#20 order found"]
    rows = _traffic(rng, 0, 780, 1.0, "orders", normal, "o")
    rows += [(660 + i, "orders", f"w{i}", "WARN c.Orders#31 order has no price") for i in range(40)]
    rows += [(700.5, "cart", "c1", "WARN c.Cart#5 cart empty")] + _traffic(rng, 0, 780, 0.5, "cart",
                                                                        ["INFO c.Cart#1 get"], "c")
    ev = build_log_evidence(frame(rows), BASE, SLICES)
    assert row(ev, "orders", 0)["own_state"] == 0
    hit = row(ev, "orders", 1)
    assert hit["own_state"] == 2 and hit["new_templates"] == 1 and "Orders#31" in hit["top"]
    assert row(ev, "cart", 1)["own_state"] == 0  # one new warning in a minute: not enough to tell


def test_a_step_that_stops_following_another_inside_spans_is_a_vanished_step():
    rng = np.random.default_rng(1)
    ok = ["INFO t.Travel#451 query", "INFO t.Travel#457 result"]
    rows = _traffic(rng, 0, 660, 1.0, "travel", ok, "a") + _traffic(rng, 660, 780, 1.0, "travel", ok[:1], "b")
    ev = build_log_evidence(frame(rows), BASE, SLICES)
    assert row(ev, "travel", 0)["own_state"] == 0
    assert row(ev, "travel", 1)["own_state"] == 2
    assert "Travel#451" in row(ev, "travel", 1)["vanished"] and "Travel#457" in row(ev, "travel", 1)["vanished"]


def test_a_shift_in_which_endpoints_are_called_is_not_a_vanished_step_when_spans_name_them():
    """Two endpoints, each logging its own line; in the incident only one is called. Per operation nothing
    vanished; without the operation (plain ^) the other endpoint's first line would read as vanished."""
    rng = np.random.default_rng(2)
    rows, spans = [], []
    for i, t in enumerate(np.sort(rng.uniform(0, 780, 780))):
        op = "getA" if t > 660 or i % 2 else "getB"
        span = f"s{i}"
        spans.append((span, "", "route", op, t))
        rows.append((t, "route", span, f"INFO r.Route#{53 if op == 'getB' else 47} {op}"))
    ev = build_log_evidence(frame(rows), BASE, SLICES, spans_of(spans))
    assert (ev.loc[ev["window"] >= 0, "own_state"] == 0).all()
    blind = build_log_evidence(frame(rows), BASE, SLICES)
    assert blind.loc[blind["window"] >= 0, "own_state"].max() > 0


def test_an_error_logged_above_a_failing_callee_is_the_callee_s_not_the_caller_s():
    rng = np.random.default_rng(3)
    rows, spans = [], []
    for i, t in enumerate(np.sort(rng.uniform(0, 780, 900))):
        caller, callee = f"p{i}", f"c{i}"
        spans += [(caller, "", "front", "checkout", t), (callee, caller, "pay", "charge", t + 0.01)]
        rows.append((t, "front", caller, "INFO f.Front#1 checkout"))
        rows.append((t + 0.01, "pay", callee, "INFO p.Pay#1 charge"))
        if t > 660:
            rows.append((t + 0.02, "pay", callee, "ERROR p.Pay#9 card rejected"))
            rows.append((t + 0.03, "front", caller, "ERROR f.Front#7 checkout failed"))
    ev = build_log_evidence(frame(rows), BASE, SLICES, spans_of(spans))
    assert row(ev, "pay", 1)["own_state"] == 2
    assert row(ev, "front", 1)["own_state"] == 0  # its errors sit above pay's: propagated
    without_traces = build_log_evidence(frame(rows), BASE, SLICES)
    assert row(without_traces, "front", 1)["own_state"] == 2


def test_a_service_without_baseline_lines_is_unknown_not_ok():
    rows = [(700.0 + i, "new", f"n{i}", "INFO n.New#1 hello") for i in range(30)]
    rows += [(float(t), "old", f"o{t}", "INFO o.Old#1 hi") for t in range(0, 780, 3)]
    ev = build_log_evidence(frame(rows), BASE, SLICES)
    assert (ev.loc[(ev["service"] == "new") & (ev["window"] >= 0), "own_state"] == -1).all()


def test_logs_are_a_third_own_work_observation_that_matches_pgmpy():
    m = DBNModel()
    m.update_structure({"front", "a", "b"}, {("front", "a"), ("front", "b")})
    traces = pd.DataFrame({"service": ["front", "a", "b"] * 2, "window": [0] * 3 + [1] * 3,
                           **TRACE_DEFAULTS}).assign(state=[1, 0, 0, 1, 0, 0])[EVIDENCE_COLUMNS]
    logs = pd.DataFrame({"service": ["a", "b"] * 2, "window": [0, 0, 1, 1], "own_state": [0, 0, 2, 0],
                         "score": [0.0, 0.0, 9.0, 0.0]})
    for col in ("lines", "bad_lines", "new_templates"):
        logs[col] = 0
    for col in ("bad_score", "new_score", "vanished_score"):
        logs[col] = 0.0
    logs["vanished"], logs["top"] = "", ""
    ev = fuse(traces, None, logs)
    levels = states_from_evidence(ev, ["front", "a", "b"])
    assert levels.logs == {"front": [-1, -1], "a": [0, 2], "b": [0, 0]}
    fast = m.infer(levels.states, levels.own, ["front", "a", "b"], own_logs=levels.logs)
    exact = m.infer_pgmpy(levels.states, levels.own, ["front", "a", "b"], own_logs=levels.logs)
    assert fast == pytest.approx(exact, abs=1e-9)
    assert fast["a"] > 5 * fast["b"]


def test_the_report_lists_templates_that_appeared_or_rose_with_lines_linked_to_their_traces():
    from baynet.analysis.exemplars import log_templates
    from baynet.artifacts import log_templates_html
    from baynet.windows import Windows

    windows = Windows(BASE, SLICES)
    rows = [(float(t), "pay", f"s{t}", "INFO p.Pay#1 charge") for t in range(0, 780, 2)]
    rows += [(700.0 + i, "pay", f"e{i}", "ERROR p.Pay#9 card <rejected>") for i in range(10)]
    logs = frame(rows).assign(trace_id=lambda f: "ab" + f["span_id"].str.replace("s", "0").str.replace("e", "1"))
    ranking = [{"service": "pay", "rank": 1, "posterior": 0.9}, {"service": "cart", "rank": 2, "posterior": 0.1}]
    log_templates(logs, ranking, windows, "https://grafana.example/explore?trace={trace_id}")
    (found,) = ranking[0]["log_templates"]
    assert found["template"] == "p.Pay#9" and found["level"] == "ERROR" and found["change"] == "new"
    assert found["samples"][0]["url"].startswith("https://grafana.example/explore?trace=ab1")
    assert "log_templates" not in ranking[1]
    page = log_templates_html(ranking)
    assert 'class="log-trace" href="https://grafana.example' in page and "&lt;rejected&gt;" in page


def test_the_log_vocabulary_is_kept_with_the_model_and_seeds_the_next_incident():
    from baynet.analysis import analyse
    from baynet.events import parse_object
    from baynet.settings import Settings
    from baynet.sources.base import Observations, Observed
    from baynet.state import apply_update, update_record
    from baynet.topology import Topology

    (event,) = parse_object({"id": "v1", "service": "pay", "event_type": "errors", "timestamp": 780.0 + 1e9,
                             "severity": "critical"})
    rows = [(1e9 + t, "pay", f"s{t}", f"2024-01-01 12:00:00 INFO charged card {t} for order {t * 7}")
            for t in range(0, 780, 3)]
    model = DBNModel()
    result = analyse(event, Observations([Observed("logs", {"logs": frame(rows)})]), model,
                     Settings(_env_file=None))
    assert result.log_templates and model.log_templates == result.log_templates
    assert any("charged card" in t for t in model.log_templates)
    assert DBNModel.from_json(model.to_json()).log_templates == model.log_templates
    # folding records in either order gives the same vocabulary
    a, b = DBNModel(), DBNModel()
    r1 = update_record(Topology("ns", "x"), pd.DataFrame(), ["t1 <*>", "t2"])
    r2 = update_record(Topology("ns", "x"), pd.DataFrame(), ["t3"])
    apply_update(a, r1), apply_update(a, r2), apply_update(b, r2), apply_update(b, r1)
    assert a.log_templates == b.log_templates == ["t1 <*>", "t2", "t3"]


def test_an_error_that_names_another_service_is_about_that_call_not_the_writer_s_own_work():
    rng = np.random.default_rng(5)
    rows = _traffic(rng, 0, 780, 1.0, "travel", ["INFO t.Travel#1 query"], "t")
    rows += _traffic(rng, 0, 780, 0.2, "basic-service", ["INFO b.Basic#1 price"], "b")
    rows += [(660 + i, "travel", f"x{i}", "ERROR t.Travel#9 No instances available for basic-service")
             for i in range(40)]
    ev = build_log_evidence(frame(rows), BASE, SLICES)
    assert row(ev, "travel", 1)["own_state"] == 0 and row(ev, "travel", 1)["bad_lines"] == 0
    rows = [r if "basic-service" not in r[3] else (r[0], r[1], r[2], "ERROR t.Travel#9 No instances available")
            for r in rows]
    assert row(build_log_evidence(frame(rows), BASE, SLICES), "travel", 1)["own_state"] == 2
