"""``baynet serve`` in headless Chromium (Debian's package, driven by Playwright): the index lists the
analysed incidents, an incident page draws one node per service, clicking a node shows its evidence,
and hostile service names are shown as text, never run. Screenshots go to test-output/."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-output"
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, prefect_harness):
    """One incident analysed by the real flow, and one whose names are hostile."""
    from baynet.artifacts import COMPLETE, LocalStore, structure_html
    from baynet.lab.generator import generate, write_incident
    from baynet.local.stack import LocalStack
    from flows.incident import incident_rca

    work = tmp_path_factory.mktemp("report")
    incident = generate("sock-shop", "carts", "latency", fault_start=time.time() - 600, before_s=900, after_s=300)
    paths = write_incident(incident, work / "incident")
    with LocalStack(work, traces=paths["traces"], openmetrics=paths["openmetrics"], logs=paths["logs"]) as st:
        require(st.prometheus is not None, "Debian's prometheus (the first view of the mesh comes from it)")
        settings = st.settings(trace_url_template="https://grafana.example/explore?trace={trace_id}")
        result = incident_rca(paths["event"].read_text(), settings=settings)
    store = LocalStore(work / "artifacts")
    hostile_id = "hostile-1"
    ranking = [{"rank": 1, "service": HOSTILE, "posterior": 0.9, "evidence": '<img src=x onerror="alert(1)">'},
               {"rank": 2, "service": "front-end", "posterior": 0.1, "evidence": "ok"}]
    store.put_json(f"incidents/{hostile_id}/ranking.json", {
        "event": {"id": hostile_id, "service": "front-end", "event_type": "<b>latency</b>",
                  "timestamp": "2026-11-01T10:00:00+00:00"}, "ranking": ranking, "propagation_path": [HOSTILE],
        "fetch": {"evidence_complete": True}})
    store.put(f"incidents/{hostile_id}/structure.html", structure_html(
        f"incident on {HOSTILE}", ranking, {"front-end": [HOSTILE]}, "front-end", [HOSTILE, "front-end"],
        {"edges_added": [["front-end", HOSTILE]]}, 'javascript:alert("run")'))
    store.put(f"incidents/{hostile_id}/{COMPLETE}", "now")
    store.put_json("incidents/interrupted/ranking.json", {"event": {"id": "interrupted"}, "ranking": []})
    return store, result


@pytest.fixture(scope="module")
def report(artifacts):
    from baynet.report import ReportServer

    store, result = artifacts
    server = ReportServer(store, port=0).start()
    yield server, result
    server.stop()


@pytest.fixture(scope="module")
def browser():
    require(Path(CHROMIUM).exists(), "Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_index_lists_complete_incidents_at_root_and_at_baynet(report, browser):
    server, result = report
    page = browser.new_page()
    for path in ("/", "/baynet"):
        page.goto(server.url + path)
        rows = page.locator("tr.incident")
        assert rows.count() == 2  # the interrupted write is not listed
        assert result["event_id"] in page.inner_text("#incidents")
    assert page.locator(f'tr.incident:has-text("{result["event_id"]}") td.short').inner_text().startswith(
        result["ranking"][0]["service"])
    page.goto(server.url + "/baynet?service=carts")
    assert page.locator("tr.incident").count() == 1  # the hostile incident has no carts
    page.fill("#service-filter", "nothing-of-that-name")
    assert page.locator("tr.incident:visible").count() == 0
    page.goto(server.url + "/baynet")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "report-index.png"), full_page=True)


def test_incident_page_graph_click_and_screenshot(report, browser):
    server, result = report
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server.url}/baynet")
    page.click(f"text={result['event_id']}")
    page.wait_for_selector("svg#graph")
    services = [r["service"] for r in result["ranking"]]
    nodes = page.locator("g.node")
    assert nodes.count() == len(services)
    assert sorted(nodes.nth(i).get_attribute("data-service") for i in range(nodes.count())) == sorted(services)
    assert page.locator("line.edge.path").count() == len(result["path"]) - 1  # the path is highlighted
    top = result["ranking"][0]
    page.locator(f'g.node[data-service="{top["service"]}"]').click()
    details = page.inner_text("#details")
    assert details.startswith(top["service"] + ":") and top["evidence"][:40] in details
    assert all(u.startswith(server.url) for u in requests)  # offline: nothing from elsewhere
    page.screenshot(path=str(SHOTS / "report-incident.png"), full_page=True)
    headline = page.inner_text("#headline")
    assert headline == result["headline"] and headline.startswith(f"{top['service']} is the likely cause (P=")
    assert re.search(r"\d+ ms", headline) and "from " in headline  # numbers and a time
    first = page.inner_text("#changes")
    assert first.startswith("First view of this mesh:") and page.locator("li.change").count() == 0
    words = page.locator("#ranking span.words").first
    assert words.is_visible() and not page.locator("#ranking span.shorthand").first.is_visible()
    page.check("#shorthand-toggle")
    assert page.locator("#ranking span.shorthand").first.is_visible()
    raw = page.request.get(f"{server.url}/baynet/incidents/{result['event_id']}/ranking.json")
    assert raw.ok and json.loads(raw.text())["ranking"][0]["service"] == top["service"]


def test_incident_page_charts_follow_evidence_csv_and_exemplars_link_out(report, browser):
    import io

    import pandas as pd

    server, result = report
    page = browser.new_page()
    page.goto(f"{server.url}/baynet/incidents/{result['event_id']}")
    evidence = pd.read_csv(io.StringIO(page.request.get(
        f"{server.url}/baynet/incidents/{result['event_id']}/evidence.csv").text()))
    top = result["ranking"][0]["service"]
    charts = page.locator(f'svg.chart[data-service="{top}"]')
    assert charts.count() >= 3  # latency, self time, request rate at least
    checked = banded = 0
    for i in range(charts.count()):
        signal = charts.nth(i).get_attribute("data-signal")
        bars = charts.nth(i).locator("rect.bar")
        drawn = {int(bars.nth(j).get_attribute("data-window")): float(bars.nth(j).get_attribute("data-value"))
                 for j in range(bars.count())}
        rows = evidence[evidence["service"] == top].set_index("window")[signal].fillna(0.0)
        assert drawn == pytest.approx({int(w): float(v) for w, v in rows.items()})
        flagged = {int(bars.nth(j).get_attribute("data-window")) for j in range(bars.count())
                   if "flagged" in bars.nth(j).get_attribute("class")}
        states = evidence[(evidence["service"] == top) & (evidence["window"] >= 0)]
        assert flagged == {int(r.window) for r in states.itertuples() if r.state > 0 or r.own_state > 0}
        band = charts.nth(i).locator("rect.band")
        if f"{signal}_lo" in evidence and evidence.loc[evidence["service"] == top, f"{signal}_lo"].notna().any():
            lo, hi = evidence.loc[evidence["service"] == top, [f"{signal}_lo", f"{signal}_hi"]].iloc[0]
            assert band.count() == 1 and lo <= hi
            assert float(band.get_attribute("data-lo")) == pytest.approx(lo)
            assert float(band.get_attribute("data-hi")) == pytest.approx(hi)
            banded += 1
        else:
            assert band.count() == 0
        checked += 1
    assert checked == charts.count() and page.locator("rect.bar.flagged").count() > 0
    assert banded >= 2  # latency and request rate have a baseline band at least
    axis = charts.first.locator("text.tick.y")
    assert axis.count() == 2 and any(axis.nth(i).text_content().endswith(" ms") for i in range(2))
    assert re.fullmatch(r"alert \d\d:\d\d", charts.first.locator("text.alert-label").text_content())
    assert re.fullmatch(r"\d\d:\d\d", charts.first.locator("text.tick.x").nth(1).text_content())
    assert page.locator("text.band-label").first.text_content() == "baseline range"
    links = page.locator("a.exemplar")
    assert links.count() > 0 and links.first.get_attribute("href").startswith("https://grafana.example/explore")
    page.screenshot(path=str(SHOTS / "report-incident-charts.png"), full_page=True)


def test_hostile_names_are_shown_not_run(report, browser):
    server, _ = report
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{server.url}/baynet")
    assert "<b>latency</b>" in page.inner_text("#incidents")  # as text, not bold
    page.goto(f"{server.url}/baynet/incidents/hostile-1")
    page.locator("g.node").first.click()
    page.wait_for_timeout(200)
    assert dialogs == []
    assert HOSTILE in page.inner_text("h1") and HOSTILE in page.inner_text("#details")
    assert page.locator("script").count() == 1  # only the page's own
    assert page.locator("#changes").inner_text().count(HOSTILE) == 1
    assert page.locator('a[href^="javascript:"]').count() == 0
    assert page.request.get(f"{server.url}/baynet/incidents/..%2F..%2Fetc").status == 404
    assert page.request.get(f"{server.url}/baynet/incidents/interrupted").status == 404


def test_confirm_from_the_page_with_a_token_and_cross_site_posts_refused(artifacts, browser):
    from baynet.report import ReportServer
    from baynet.state import Confirmations, ModelLog

    store, result = artifacts
    event_id = result["event_id"]
    page = browser.new_page()
    # without a token (or a trusted proxy) there is no form, and a POST is refused
    plain = ReportServer(store, port=0).start()
    try:
        page.goto(f"{plain.url}/baynet/incidents/{event_id}")
        assert page.locator("form#confirm").count() == 0 and "Not confirmed yet" in page.inner_text("#confirmation")
        refused = page.request.post(f"{plain.url}/baynet/incidents/{event_id}/confirm",
                                    form={"root_cause": "carts"}, headers={"Origin": plain.url})
        assert refused.status == 403 and "off" in refused.text()
    finally:
        plain.stop()
    server = ReportServer(store, port=0, token="s3cret").start()
    try:
        before = ModelLog(store, "default").current().prior("carts")
        page.goto(f"{server.url}/baynet/incidents/{event_id}")
        page.select_option("select[name=root_cause]", "carts")
        page.fill("input[name=by]", "sre-alice")
        page.fill("input[name=token]", "s3cret")
        page.fill("input[name=note]", "carts pods throttled")
        page.click("button[value=confirm]")
        page.wait_for_selector("#confirmation >> text=Confirmed root cause")
        assert "carts" in page.inner_text("#confirmation") and "sre-alice" in page.inner_text("#confirmation")
        page.screenshot(path=str(SHOTS / "report-incident-confirmed.png"), full_page=True)
        record = Confirmations(store).of(event_id)
        assert record["root_cause"] == "carts" and record["by"] == "sre-alice" and record["at"]
        assert ModelLog(store, "default").current().prior("carts") > before
        csrf = page.locator("input[name=csrf]").get_attribute("value")
        url = f"{server.url}/baynet/incidents/{event_id}/confirm"
        form = {"root_cause": "front-end", "token": "s3cret", "csrf": csrf, "action": "confirm"}
        # another site's page posting the same form (with the token even): refused
        evil = page.request.post(url, form=form, headers={"Origin": "http://evil.example"})
        assert evil.status == 403 and "cross-site" in evil.text()
        assert page.request.post(url, form={**form, "csrf": "0" * 64}, headers={"Origin": server.url}).status == 403
        assert page.request.post(url, form={**form, "token": "guess"}, headers={"Origin": server.url}).status == 403
        assert Confirmations(store).of(event_id)["root_cause"] == "carts"  # nothing refused was stored
        page.fill("input[name=token]", "s3cret")  # withdrawing needs the token too
        page.click("button[value=withdraw]")
        page.wait_for_selector("#confirmation >> text=withdrawn")
        assert Confirmations(store).of(event_id)["withdrawn"] is True
    finally:
        server.stop()
