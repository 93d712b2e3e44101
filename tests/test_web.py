"""The web view of ``prefleak serve``, in a real headless Chromium against a real service.

The service is fed a simulated stream with known leakage (a leak that grows halfway, so a change
alarm fires) and samples of two datasets (so diversity has a coverage gap). Screenshots of every
page visited land in ``test-artifacts/web/``.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from diversity_data import topic_texts
from prefleak.cli import main
from prefleak.web.assets import PLOTLY_JS
from prefleak.web.pages import script_json
from services import require_binary, wait_for
from test_daemon import Daemon, leaking_stream

ARTIFACTS = Path(__file__).parents[1] / "test-artifacts" / "web"
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1300,2400",
)  # fmt: skip
CHARTS = ("chart-pls", "chart-leakage", "chart-lineage", "chart-winrates")
DIVERSITY_ENV = {
    "PREFLEAK_DIVERSITY__EMBEDDINGS": "off", "PREFLEAK_DIVERSITY__INTERVAL_S": "0.5",
    "PREFLEAK_DIVERSITY__RESAMPLES": "20", "PREFLEAK_DIVERSITY__PERMUTATIONS": "50",
    "PREFLEAK_DIVERSITY__REFERENCE_SIZE": "30",
}  # fmt: skip
HOSTILE = {
    "gen-a": "<img src=x onerror=alert(1)>",
    "gen-b": "</script><script>alert(2)</script>",
    "stu-a": "\"'><svg onload=alert(3)>",
    "stu-b": "<!-- ünïcödé 模型 \u2028 <b>bold</b> &amp; -->",
    "data-gen-a": "<iframe src=javascript:alert(4)>",
    "bench": "<script>alert(5)</script>",
}
"""Ids of the leaking stream of test_daemon, each replaced by markup that must stay text."""


INFERRED = {
    "type": "relation",
    "judge": "claude-3.5-sonnet",
    "candidate": "student-llama",
    "kind": "same_family",
    "source": "fingerprint",
    "confidence": 0.71,
    "share": 0.8,
}
"""A relation no provenance of the simulated stream declares (claude judges unrelated)."""


def extra_events() -> bytes:
    """An eval set about cooking and production traffic about cooking and tax (a coverage gap),
    and an inferred relation."""
    events: list[dict[str, Any]] = [
        {"type": "dataset", "dataset": "evalset", "generator": "gpt-4o", "role": "eval"},
        {"type": "dataset", "dataset": "traffic", "generator": None, "role": "production"},
        INFERRED,
    ]
    for dataset, topics in (("evalset", ("cooking",)), ("traffic", ("cooking", "tax"))):
        for topic in topics:
            for i, text in enumerate(topic_texts(topic, 30, seed=len(dataset))):
                events.append({"type": "sample", "dataset": dataset, "text": text,
                               "ts": f"2026-11-01T00:{i // 60:02d}:{i % 60:02d}Z"})  # fmt: skip
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


def start_leaking_service(root: Path) -> Daemon:
    """``prefleak serve`` on a store holding a simulated leaking stream (150 prompts, the leak
    growing at half time), dataset samples and an inferred relation; returns once the first
    diversity report is out."""
    stream, db = root / "leak.jsonl", root / "leak.db"
    argv = ["--prompts", "150", "--benchmarks", "alpacaeval", "--change-at", "0.5",
            "--leakage-after", "3"]  # fmt: skip
    assert main(["simulate", *argv, "--out", str(stream)]) == 0
    assert main(["ingest", "--db", str(db), str(stream)]) == 0
    daemon = Daemon(root, "--db", str(db), **DIVERSITY_ENV)
    status, answer = daemon.post(extra_events(), "application/x-ndjson")
    assert (status, answer["rejected"]) == (200, 0)
    wait_for(lambda: daemon.get_json("/v1/diversity")[0] == 200, 60, "a diversity report")
    return daemon


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the served store (``leak.db``)."""
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def served(served_root: Path) -> Iterator[Daemon]:
    daemon = start_leaking_service(served_root)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium, with the browser console log readable; nothing is downloaded."""
    chromium = require_binary("chromium", "apt-get install chromium")
    chromedriver = require_binary("chromedriver", "apt-get install chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # selenium-manager must not fetch a browser or driver
        driver = webdriver.Chrome(service=ChromeService(chromedriver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def url(daemon: Daemon, path: str) -> str:
    return f"http://{daemon.host}:{daemon.port}{path}"


def get(daemon: Daemon, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(daemon.host, daemon.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def settle(browser: WebDriver, screenshot: str) -> None:
    """Wait until every chart of the page is drawn or says why it is empty, then screenshot."""
    wait_for(
        lambda: browser.execute_script(
            "return Array.from(document.querySelectorAll('.chart')).every("
            "c => c.querySelector('.main-svg') || c.querySelector('.empty'))"
        ),
        what="the charts",
    )
    browser.save_screenshot(str(ARTIFACTS / f"{screenshot}.png"))


def charts(browser: WebDriver) -> dict[str, dict[str, Any]]:
    """Per chart: plotly's SVG roots, its traces and its layout shapes."""
    found: dict[str, dict[str, Any]] = browser.execute_script("""
        const found = {};
        for (const chart of document.querySelectorAll('.chart')) {
          found[chart.id] = {svg: chart.querySelectorAll('.main-svg').length,
                             traces: (chart.data || []).map(t => ({name: t.name, x: t.x, y: t.y,
                                                                  dash: (t.line || {}).dash})),
                             shapes: ((chart.layout || {}).shapes || []).length,
                             texts: Array.from(chart.querySelectorAll('text'),
                                               t => t.textContent)};
        }
        return found;""")
    return found


def severe(browser: WebDriver) -> list[dict[str, Any]]:
    """Console entries of level SEVERE since the last call (errors, CSP violations, 404s)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def injected(browser: WebDriver) -> list[str]:
    """Elements no page of prefleak has: event handler attributes, markup from the test's ids."""
    found: list[str] = browser.execute_script("""
        const bad = [];
        for (const el of document.querySelectorAll('*')) {
          for (const attr of el.attributes) {
            if (attr.name.startsWith('on')) bad.push(el.tagName + '[' + attr.name + ']');
          }
        }
        for (const el of document.querySelectorAll('img, iframe, b, svg:not(#js-plotly-tester)')) {
          if (!el.closest('.js-plotly-plot')) bad.push(el.outerHTML.slice(0, 80));
        }
        const scripts = Array.from(document.scripts, s => s.src || s.type);
        if (scripts.some(s => !s.startsWith(location.origin + '/static/')
                              && s !== 'application/json')) bad.push('script: ' + scripts);
        return bad;""")
    return found


SUBJECT_LINKS = {
    "judges": "#pls a[href^='/explain?judges=']",
    "judge": "#biases a[href^='/explain?judge=']",
    "candidate": "#pls a[href^='/explain?candidate=']",
}
"""Where the overview links to each kind of explain page."""


# -- pages, charts, links -------------------------------------------------------------------------


@pytest.mark.slow
def test_overview_shows_the_alert_worthy_findings_of_the_last_recompute(
    served: Daemon, browser: WebDriver
) -> None:
    _, report = served.get_json("/v1/report")
    _, biases = served.get_json("/v1/biases")
    browser.get(url(served, "/"))
    settle(browser, "overview")

    def alert_rows(section: str) -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, f"#{section} tr.alert"))

    significant = [row for row in report["pls"] if row["significant"]]
    alarms = [change for change in report["changes"] if change["alarm"]]
    assert significant and alarms, "the simulated stream leaks, and more so after half time"
    assert alert_rows("pls") == len(significant)
    assert alert_rows("changes") == len(alarms)
    assert alert_rows("leakage") == sum(row["significant"] for row in report["leakage"])
    table = browser.find_element(By.CSS_SELECTOR, "#biases").text
    assert all(judge["judge"] in table for judge in biases["judges"])
    coverage = browser.find_element(By.CSS_SELECTOR, "#diversity").text
    assert "Coverage gaps" in coverage and "evalset" in coverage and "traffic" in coverage
    pairs = {
        tuple(parse_qs(urlsplit(anchor.get_attribute("href") or "").query)["judges"][0].split(","))
        for anchor in browser.find_elements(By.CSS_SELECTOR, SUBJECT_LINKS["judges"])
    }
    assert {(row["judge_i"], row["judge_j"]) for row in significant} <= pairs
    assert severe(browser) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["judges", "judge", "candidate"])
def test_overview_links_reach_explain_pages_that_chart_the_explain_json(
    served: Daemon, browser: WebDriver, kind: str
) -> None:
    _, report = served.get_json("/v1/report")
    top = min((row for row in report["pls"] if row["significant"]), key=lambda r: r["q_value"])
    browser.get(url(served, "/"))
    settle(browser, "overview")
    anchors = browser.find_elements(By.CSS_SELECTOR, SUBJECT_LINKS[kind])
    anchor = anchors[0] if kind != "judge" else next(a for a in anchors if a.text == top["judge_i"])
    href = anchor.get_attribute("href") or ""
    anchor.click()
    wait_for(lambda: browser.current_url == href, what=f"the {kind} page")
    settle(browser, f"explain-{kind}")
    status, doc = served.get_json("/v1/explain?" + urlsplit(href).query)
    assert status == 200 and doc["subject"]["kind"] == kind

    drawn = charts(browser)
    assert set(drawn) == set(CHARTS)
    for chart in CHARTS:
        assert drawn[chart]["svg"] > 0 and drawn[chart]["traces"], chart
    # since when: a line and its band per series, the change alarms as marks
    assert len(drawn["chart-pls"]["traces"]) == 3 * len(doc["timeline"]["pls"])
    assert len(drawn["chart-leakage"]["traces"]) == 3 * len(doc["timeline"]["leakage"])
    marks = sum(
        bool(change[at])
        for change in doc["changes"] if change["alarm"] and change["subject"] == "leakage"
        for at in ("started_at", "detected_at")
    )  # fmt: skip
    assert drawn["chart-leakage"]["shapes"] == marks
    # why related: every judge and candidate of the relations is a node of the graph
    nodes = " ".join(drawn["chart-lineage"]["texts"])
    for relation in doc["relations"]:
        assert relation["judge"] in nodes and relation["candidate"] in nodes
    # win rates: the related judge's bar and the other judge's, as the PLS rows have them
    related, other = drawn["chart-winrates"]["traces"]
    rates = [row["win_rates"] for row in doc["rows"] if row["win_rates"]]
    assert related["y"] == pytest.approx([100 * r[k] for r in rates for k in ("ii", "jj")])
    assert other["y"] == pytest.approx([100 * r[k] for r in rates for k in ("ij", "ji")])
    # which prompts: one table per evidence row, a line per prompt, in the JSON's order
    tables = browser.find_elements(By.CSS_SELECTOR, "#evidence table")
    assert len(tables) == len(doc["evidence"]["rows"]) > 0
    for table, row in zip(tables, doc["evidence"]["rows"], strict=True):
        shown = [cell.text for cell in table.find_elements(By.CSS_SELECTOR, "tbody td:first-child")]
        assert shown == [prompt["prompt"] for prompt in row["prompts"]]
    assert severe(browser) == []


@pytest.mark.slow
def test_inferred_relations_are_marked_as_such(served: Daemon, browser: WebDriver) -> None:
    browser.get(url(served, f"/explain?judge={INFERRED['judge']}"))
    settle(browser, "explain-inferred")
    _, doc = served.get_json(f"/v1/explain?judge={INFERRED['judge']}")
    (inferred,) = [r for r in doc["relations"] if r["source"] == "inferred"]
    assert (inferred["candidate"], inferred["kind"]) == (INFERRED["candidate"], "same_family")
    edges = [t["dash"] for t in charts(browser)["chart-lineage"]["traces"] if t["dash"]]
    assert edges.count("dot") == 1 and len(edges) == len(doc["relations"])
    row = browser.find_element(By.XPATH, "//td[contains(., '(inferred, confidence 0.71)')]/..")
    assert INFERRED["candidate"] in row.text
    assert severe(browser) == []


# -- hostile input --------------------------------------------------------------------------------


def _rename(value: Any) -> Any:
    if isinstance(value, str):
        return HOSTILE.get(value, value)
    if isinstance(value, dict):
        return {key: _rename(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rename(item) for item in value]
    return value


@pytest.mark.slow
def test_hostile_ids_are_shown_as_text_and_run_nothing(tmp_path: Path, browser: WebDriver) -> None:
    daemon = Daemon(tmp_path, "--db", str(tmp_path / "hostile.db"))
    try:
        events = _rename(leaking_stream())
        body = b"".join(json.dumps(event).encode() + b"\n" for event in events)
        status, answer = daemon.post(body, "application/x-ndjson")
        assert (status, answer["accepted"]) == (200, len(events)), answer
        wait_for(lambda: daemon.get_json("/v1/pls")[1].get("pls"), what="a PLS row")

        browser.get(url(daemon, "/"))
        settle(browser, "hostile-overview")
        text = browser.find_element(By.TAG_NAME, "body").text
        shown = ("gen-a", "gen-b", "stu-a", "bench")  # stu-b: U+2028 is a line break
        assert [HOSTILE[name] for name in shown if HOSTILE[name] not in text] == []
        assert injected(browser) == []

        browser.find_element(By.CSS_SELECTOR, '#pls a[href*="judges="]').click()
        wait_for(lambda: "/explain?" in browser.current_url, what="the judge pair page")
        settle(browser, "hostile-explain")
        assert injected(browser) == []
        assert HOSTILE["gen-a"] in browser.find_element(By.TAG_NAME, "h1").text
        lineage = " ".join(charts(browser)["chart-lineage"]["texts"])
        nodes = ("gen-a", "gen-b", "stu-a", "data-gen-a")
        assert [HOSTILE[name] for name in nodes if HOSTILE[name] not in lineage] == []
        embedded = browser.execute_script(
            "return JSON.parse(document.getElementById('page-data').textContent).relations"
        )
        assert (
            embedded
            == daemon.get_json("/v1/explain?" + urlsplit(browser.current_url).query)[1]["relations"]
        )
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
        assert severe(browser) == []
    finally:
        daemon.stop()


@pytest.mark.parametrize("text", [*HOSTILE.values(), "]]>", "\u2029", "a\\u003cb"])
def test_script_json_cannot_end_or_comment_out_its_script_block(text: str) -> None:
    encoded = script_json({"name": text, "names": [text, text.upper()]})
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded
    assert all(ord(char) < 128 for char in encoded)
    assert json.loads(encoded) == {"name": text, "names": [text, text.upper()]}


# -- headers, static files, auth ------------------------------------------------------------------


def test_pages_forbid_inline_and_remote_scripts_and_static_files_are_cached(
    served: Daemon,
) -> None:
    for path in ("/", "/explain?judge=gpt-4o", "/explain?judge=a&candidate=b"):
        status, headers, body = get(served, path)
        assert status in (200, 400), path
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"
        policy = dict(
            part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";")
        )
        assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
        assert b"<script>" not in body and not re.search(rb"<[^>]+\son[a-z]+=", body)
        assert b'src="http' not in body and b'href="http' not in body
    status, headers, body = get(served, "/static/plotly.min.js")
    assert status == 200 and body == PLOTLY_JS.read_bytes()
    assert headers["Content-Type"].startswith("text/javascript")
    assert "max-age=" in headers["Cache-Control"] and headers["ETag"].startswith('"')
    status, again, body = get(served, "/static/plotly.min.js", **{"If-None-Match": headers["ETag"]})
    assert (status, body, again["ETag"]) == (304, b"", headers["ETag"])


@pytest.mark.slow
def test_protect_reads_guards_the_pages_but_not_the_static_files(tmp_path: Path) -> None:
    token = "s3cret-token-for-the-web-view"
    daemon = Daemon(
        tmp_path, "--db", str(tmp_path / "e.db"),
        PREFLEAK_HTTP__AUTH_TOKEN=token, PREFLEAK_HTTP__PROTECT_READS="true",
    )  # fmt: skip
    try:
        for path in ("/", "/explain?judge=j", "/v1/report", "/v1/diversity"):
            assert get(daemon, path)[0] == 401, path
            assert get(daemon, path, Authorization=f"Bearer {token}")[0] in (200, 503), path
        for path in ("/static/web.js", "/static/plotly.min.js", "/openapi.json", "/healthz"):
            assert get(daemon, path)[0] == 200, path
    finally:
        daemon.stop()
