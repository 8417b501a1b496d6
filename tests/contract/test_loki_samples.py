"""The Loki client and the Loki-compatible stand-in against the genuine samples in ../shared/contracts/loki.

Client side: every streams body (Loki's Go fixtures, Grafana's test data, recorded answers of real
servers) parses, with structured metadata and parsed labels where the body carries them; every other
body is refused clearly; Loki's text error bodies become the client's errors with their message.
Stand-in side: it accepts the genuine push bodies and refuses the invalid one, answers in the same shapes
the client reads (compact JSON and a newline, string timestamps, categorize-labels), and errs in Loki's
words for the cases the error samples record.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from baynet.loki import LokiClient, LokiError, LokiRejected, LokiUnavailable, parse_streams
from baynet.local.loki import LokiServer, parse_logql
from tests.conftest import CONTRACTS

LOKI = CONTRACTS / "loki"
SAMPLES = sorted(LOKI.rglob("*.json"))
# The contracts' README: five docs samples are not valid JSON (elided "...", comments, a fragment).
INVALID = {"push_values_structured_metadata_fragment__docs.json", "query_range_matrix__docs.json",
           "query_range_stats_all_fields_commented__docs.json", "query_range_streams__docs.json",
           "query_vector__docs.json"}


def _body(path):
    return json.loads(path.read_text())


def _kind(body):
    data = body.get("data") if isinstance(body, dict) else None
    return data.get("resultType") if isinstance(data, dict) else None


STREAMS = [p for p in SAMPLES if p.name not in INVALID and _kind(_body(p)) == "streams"]
OTHER_QUERIES = [p for p in SAMPLES if p.name not in INVALID and _kind(_body(p)) in ("matrix", "vector")]
PUSH = [p for p in SAMPLES if p.name.startswith("push_body") and p.name not in INVALID]


def test_the_samples_are_there(contracts):
    assert len(STREAMS) >= 10 and len(OTHER_QUERIES) >= 8 and len(PUSH) >= 5
    assert INVALID <= {p.name for p in SAMPLES}


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_every_streams_body_parses(path):
    body = _body(path)
    page = parse_streams(body)
    expected = sum(len(s["values"]) for s in body["data"]["result"])
    assert len(page.entries) == expected
    assert [e.ts_ns for e in page.entries] == sorted(e.ts_ns for e in page.entries)
    assert page.warnings == body.get("warnings", [])
    for stream in body["data"]["result"]:
        for value in stream["values"]:
            entry = next(e for e in page.entries if e.ts_ns == int(value[0]) and e.line == value[1])
            assert entry.labels == stream["stream"]
            if len(value) > 2 and value[2]:
                third = value[2]
                want = {**third.get("parsed", {}), **third.get("structuredMetadata", {})} \
                    if {"parsed", "structuredMetadata"} & set(third) else third
                assert entry.metadata == want


def test_a_warnings_only_body_is_an_empty_page_with_its_warning():
    page = parse_streams(_body(LOKI / "warnings_only__grafana_testdata.json"))
    assert page.entries == [] and page.warnings == ["Some logs may have been dropped by Adaptive Logs sampling"]


@pytest.mark.parametrize("path", OTHER_QUERIES, ids=lambda p: p.name)
def test_a_metric_answer_is_refused_as_not_log_lines(path):
    with pytest.raises(LokiError, match="expected log streams"):
        parse_streams(_body(path))


@pytest.mark.parametrize("path", sorted(LOKI.glob("error_*.txt")), ids=lambda p: p.name)
def test_error_bodies_become_errors_with_loki_s_message(path):
    text = path.read_text()
    status = 429 if "_429_" in path.name else 504 if "_504_" in path.name else 401 if "org_id" in path.name else 400

    def answer(request):
        return httpx.Response(status, text=text, headers={"Content-Type": "text/plain; charset=utf-8"})

    client = LokiClient("http://loki.test", max_retries=1, backoff_s=0.0)
    client.http = httpx.Client(base_url="http://loki.test", transport=httpx.MockTransport(answer))
    with client:
        if status in (429, 504):
            with pytest.raises(LokiUnavailable, match=str(status)):
                client.query_range('{app="x"}', 0, 10)
            assert client.requests == 2  # retried once, then given up
        else:
            with pytest.raises(LokiRejected) as err:
                client.query_range('{app="x"}', 0, 10)
            assert err.value.status == status and err.value.body == text and text.strip() in str(err.value)
            assert client.requests == 1  # a rejected request is not retried


@pytest.mark.parametrize("name", ["labels__docs.json", "label_values__docs.json", "labels__loki_codec_test.json",
                                  "recorded/labels__platys_jq.json", "recorded/label_values__platys_jq.json"])
def test_label_lists_are_read(name):
    body = _body(LOKI / name)

    def answer(request):
        return httpx.Response(200, json=body)

    client = LokiClient("http://loki.test")
    client.http = httpx.Client(base_url="http://loki.test", transport=httpx.MockTransport(answer))
    with client:
        assert client.labels() == body["data"]


# --- the stand-in ----------------------------------------------------------------------------------

@pytest.fixture
def loki():
    with LokiServer() as server:
        yield server


@pytest.mark.parametrize("path", PUSH, ids=lambda p: p.name)
def test_the_stand_in_takes_the_genuine_push_bodies_and_refuses_the_invalid_one(loki, path):
    raw = path.read_bytes()
    if "<unix epoch" in raw.decode():
        raw = raw.replace(b"<unix epoch in nanoseconds>", b"1570818238000000000")
    resp = httpx.post(f"{loki.url}/loki/api/v1/push", content=gzip.compress(raw),
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    if "invalid" in path.name:
        assert resp.status_code == 400 and "not a string" in resp.text
        return
    assert resp.status_code == 204 and resp.content == b""
    body = json.loads(raw)
    labels = body["streams"][0]["stream"]
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    got = httpx.get(f"{loki.url}/loki/api/v1/query_range", params={"query": selector, "start": "1",
                                                                     "end": "1999999999"},
                    headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"})
    assert got.status_code == 200 and got.text.endswith("\n") and "\n" not in got.text[:-1]
    assert got.headers["content-type"] == "application/json; charset=utf-8"
    page = parse_streams(got.json())
    assert [e.line for e in page.entries] == [v[1] for v in body["streams"][0]["values"]]
    for entry, value in zip(page.entries, body["streams"][0]["values"]):
        assert entry.labels == labels and entry.metadata == (value[2] if len(value) > 2 else {})


def test_the_stand_in_errs_in_loki_s_words(loki):
    def get(params, headers=None):
        return httpx.get(f"{loki.url}/loki/api/v1/query_range", params=params, headers=headers or {})

    bad = get({"query": '{foo="bar"', "start": "1", "end": "2"})
    assert bad.status_code == 400 and bad.text == (LOKI / "error_parse__loki_parser_test.txt").read_text()
    limit = get({"query": '{foo="bar"}', "start": "1", "end": "2", "limit": "10000"})
    assert limit.status_code == 400 and limit.text == (LOKI / "error_max_entries_limit__loki_roundtrip_test.txt"
                                                       ).read_text()
    assert get({"query": '{foo="bar"}', "start": "5", "end": "5"}).text == \
        "end timestamp must not be before or equal to start time"
    assert get({"query": '{foo="bar"}', "direction": "sideways"}).text == "invalid direction 'sideways'"
    assert get({"query": '{foo=~".*"}'}).status_code == 400  # a selector that matches the empty value
    assert httpx.get(f"{loki.url}/ready").text == (LOKI / "ready__loki_source.txt").read_text()
    with LokiServer(require_org_id=True) as tenanted:
        resp = httpx.get(f"{tenanted.url}/loki/api/v1/labels")
        assert resp.status_code == 401 and resp.text == (LOKI / "error_no_org_id__dskit.txt").read_text()
        with LokiClient(tenanted.url, org_id="team-a") as client:
            assert client.labels() == []  # with the header: an empty tenant, "data" left out


def test_logql_selectors_and_pipelines():
    q = parse_logql('{namespace="shop", service_name=~"cart.*"} |= "ERROR" != "health" | trace_id="ab"')
    assert q.matchers == [("namespace", "=", "shop"), ("service_name", "=~", "cart.*")]
    keep = [stage({"trace_id": "ab"}, "12:00 ERROR boom") for stage in q.stages]
    assert keep == [True, True, True]
    assert not all(stage({"trace_id": "ab"}, "12:00 ERROR health check") for stage in q.stages)


def test_paging_forward_loses_and_doubles_nothing_at_the_boundaries(loki):
    """Lines that share a timestamp straddle every page boundary; one timestamp holds more lines than a page."""
    with LokiClient(loki.url) as client:
        t0 = 1_700_000_000 * 10**9  # ns timestamps have 19 digits (Loki reads 10 digits or fewer as seconds)
        values = [(t0 + (i // 7) * 1000, f"line {i}", {}) for i in range(500)]
        values += [(t0 + 10**9, f"burst {i}", {}) for i in range(120)]
        client.push([({"app": "a"}, values[:250]), ({"app": "b"}, values[250:])])
        got, cut = client.lines('{app=~"a|b"}', t0, t0 + 2 * 10**9, page_size=50)
        assert not cut and sorted(e.line for e in got) == sorted(v[1] for v in values)
        first, cut = client.lines('{app=~"a|b"}', t0, t0 + 2 * 10**9, page_size=50, budget=100)
        assert cut and len(first) == 100 and len({(e.ts_ns, e.line) for e in first}) == 100
