import json

import pandas as pd
import pytest

from baynet.artifacts import LocalStore, structure_html
from baynet.validation import SUITES, ValidationFailed, load_suite_json, validate


def test_every_suite_is_reviewed_json_with_expectations():
    for name in SUITES:
        suite = load_suite_json(name)
        assert suite["name"] == name and len(suite["expectations"]) >= 3


def test_good_posteriors_pass_and_bad_ones_fail_readably():
    good = pd.DataFrame([{"rank": 1, "service": "a", "posterior": 0.9, "prior": 0.05, "evidence": ""},
                         {"rank": 2, "service": "b", "posterior": 0.1, "prior": 0.05, "evidence": ""}])
    assert validate("posteriors", good)["success"]
    bad = good.assign(posterior=[1.7, 0.1])
    with pytest.raises(ValidationFailed) as info:
        validate("posteriors", bad)
    assert "expect_column_values_to_be_between" in str(info.value) and "1.7" in str(info.value)


def test_spans_suite_rejects_bad_ids():
    frame = pd.DataFrame([{"trace_id": "XYZ", "span_id": "a" * 16, "parent_span_id": "", "service": "s",
                           "name": "n", "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_000_000_001,
                           "failed": False}])
    with pytest.raises(ValidationFailed, match="trace_id"):
        validate("spans", frame)


def test_local_store_is_atomic_and_confined(tmp_path):
    store = LocalStore(tmp_path)
    store.put_json("incidents/x/ranking.json", {"a": 1})
    assert store.get_json("incidents/x/ranking.json") == {"a": 1}
    assert not list(tmp_path.rglob(".ranking.json.*"))  # no temp files left behind
    assert not store.incident_complete("x")
    with pytest.raises(ValueError, match="escapes"):
        store.put("../outside", "x")


def test_structure_html_escapes_names_and_needs_no_network():
    ranking = [{"rank": 1, "service": "<script>alert(1)</script>", "posterior": 0.9, "evidence": "x<y"},
               {"rank": 2, "service": "db", "posterior": 0.1, "evidence": ""}]
    page = structure_html("t", ranking, {"<script>alert(1)</script>": ["db"]}, "<script>alert(1)</script>",
                          ["db", "<script>alert(1)</script>"])
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert page.count('class="node"') == 2
    json.loads(page.split("const EVIDENCE = ")[1].split(";\n")[0])


def test_event_archive_is_listed_by_day_range(tmp_path):
    from datetime import UTC, datetime

    from baynet.artifacts import LocalStore
    from baynet.events import parse_object

    store = LocalStore(tmp_path)
    for day in (1, 2, 5):
        (event,) = parse_object({"service": "carts", "event_type": "latency", "id": f"e{day}",
                                 "timestamp": f"2026-11-0{day}T10:00:00Z"})
        store.archive_event(event)
    keys = store.list_events(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))
    assert keys == ["events/2026-11-02/e2.json", "events/2026-11-05/e5.json"]
    again = parse_object(store.get_json(keys[0]))  # an archived event reads back as the same event
    assert again[0].id == "e2" and again[0].service == "carts"
    assert len(store.list_events()) == 3


def test_report_index_lists_only_complete_incidents_escaped(tmp_path):
    from baynet.artifacts import COMPLETE, LocalStore
    from baynet.report import ReportServer

    store = LocalStore(tmp_path)
    store.put_json("incidents/a/ranking.json", {"event": {"service": "<i>x</i>", "timestamp": "2026-11-01T00:00:00Z"},
                                                "ranking": [{"service": "<script>", "posterior": 0.5}]})
    store.put("incidents/a/" + COMPLETE, "t")
    store.put_json("incidents/b/ranking.json", {"event": {}, "ranking": []})  # interrupted: no marker
    server = ReportServer(store, port=0)
    try:
        status, _, body = server.route("/baynet")
        page = body.decode()
        assert status == 200 and page.count('class="incident"') == 1
        # the page's own filter script is the only one; the hostile name is text
        assert "&lt;script&gt;" in page and page.count("<script>") == 1 and "&lt;i&gt;x&lt;/i&gt;" in page
        assert server.route("/baynet/incidents/b")[0] == 404
        assert server.route("/baynet/incidents/a/model.json")[0] == 404  # not written: not served
        assert server.route("/baynet/incidents/a/../../x")[0] == 404
    finally:
        server.httpd.server_close()


def test_warm_registers_every_suite_and_one_that_would_check_less_than_it_says_fails_at_the_start(tmp_path, monkeypatch):
    import shutil

    import baynet.validation as validation

    for name in SUITES:
        shutil.copy(validation.SUITES_DIR / f"{name}.json", tmp_path / f"{name}.json")
    monkeypatch.setattr(validation, "SUITES_DIR", tmp_path)
    monkeypatch.setattr(validation, "_state", {})  # a fresh process's: nothing started yet
    validation.warm()
    assert set(validation._state["suites"]) == set(SUITES)
    assert validate("event", pd.DataFrame([{"id": "e1", "service": "front-end", "namespace": "default",
                                            "event_type": "latency", "severity": "critical",
                                            "status": "firing", "timestamp": 1_700_000_000.0}]))["success"]

    broken = load_suite_json("posteriors")
    broken["expectations"][0]["type"] = "expect_column_values_to_be_purple"
    (tmp_path / "posteriors.json").write_text(json.dumps(broken))
    monkeypatch.setattr(validation, "_state", {})
    with pytest.raises(ValueError, match="'posteriors'.*expect_column_values_to_be_purple could not be loaded"):
        validation.warm()
