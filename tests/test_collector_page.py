"""The search page at `/` in a real browser: Debian's Chromium, headless,
driven by Selenium through Debian's chromium-driver, against the real
`sie-dns-collector serve` on a loopback port, its store filled from
resolutions built in code (several zones, types and times) and entries
with hostile names and data.

An analyst gives the key, searches a name, pivots on an address, goes
back, filters by type and time, sorts, reads the timeline; every row on
the page is compared with what the store holds for that lookup. A
screenshot is kept in the test's folder and in bench/out/search-page.png.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from collector import present
from collector.api import lookup as lookups
from collector.sqlite_store import SqliteStore
from collector.store import Fences
from tests import apikit
from tests.apikit import REPO, wire

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                   reason="needs Debian's chromium and chromium-driver (tests/setup.sh)")
SCREENSHOT = os.path.join(REPO, "bench", "out", "search-page.png")


def _name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def _txt(text: bytes) -> bytes:
    return bytes([len(text)]) + text


# an owner with markup, control bytes, an escape sequence, a dot and a backslash inside labels, a bidi override
HOSTILE_OWNER = _name(b"<script>alert(1)</script>", b"\x07\x1b[31m\n", b"a.b\\c\xe2\x80\xae", b"hostile", b"test")
HOSTILE_TARGET = _name(b"<img src=x onerror=alert(3)>", b"hostile", b"test")
HOSTILE = [
    ((HOSTILE_OWNER, 16, wire("hostile.test"), (_txt(b'<img src=x onerror=alert(2)>\x00"\\'),)), 7000, 7100, 3),
    ((wire("cname.hostile.test"), 5, wire("hostile.test"), (HOSTILE_TARGET,)), 7200, 7300, 1),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("page"))
    apikit.fill(os.path.join(folder, "pdns.sqlite"), extra=HOSTILE)
    index = SqliteStore(os.path.join(folder, "pdns.sqlite"))  # the CNAME's target, for the rdata/name pivot
    index.merge([], [((HOSTILE_TARGET, 5, wire("cname.hostile.test")), 7200, 7300, 1)])
    index.commit([])
    index.close()
    config = apikit.write_config(folder)
    key = apikit.add_key(config, "analyst")
    server = apikit.Server(config)
    store = SqliteStore(os.path.join(folder, "pdns.sqlite"))
    yield server, key, store
    store.close()
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: the tests run as root, where Chromium's sandbox will not start; the page is ours.
    # The rest keep the browser to the test's loopback server: no updates, no sync, no first-run calls.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path given: Selenium Manager (which would download one) is never asked
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, served):
    """The page opened afresh (no key in the tab), the key given as an analyst does."""
    from selenium.webdriver.common.by import By

    server, key, _ = served
    browser.get(server.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    assert browser.find_element(By.ID, "key-form").is_displayed()
    browser.find_element(By.ID, "api-key").send_keys(key + "\n")
    _until(browser, lambda: not browser.find_element(By.ID, "key-form").is_displayed(), "the key form to close")
    browser.get_log("browser")  # what came before this test is not its own
    return browser


# ----------------------------------------------------------------- helpers
def _until(browser, condition, what: str, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(lambda _: condition(),
                                                                      message=f"waited for {what}")


def search(browser, text: str, kind: str = "auto") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys(text)
    Select(browser.find_element(By.ID, "kind")).select_by_value(kind)
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()


def answered(browser, lookup: str, state: str = "done") -> str:
    """Wait until the page has read the whole answer of `lookup` (rrset/name/...); its status line."""
    from selenium.webdriver.common.by import By

    status = browser.find_element(By.ID, "status")
    _until(browser, lambda: status.get_attribute("data-lookup") == lookup
           and status.get_attribute("data-state") in ("done", "error"), f"the answer of {lookup}")
    assert status.get_attribute("data-state") == state, status.text
    return status.text


READ_ROWS = """
return [...document.querySelectorAll('#results tbody tr')].map(tr => {
  const cell = (column) => tr.querySelector(`td[data-column="${column}"]`);
  const row = {};
  for (const column of ['rrname', 'rrtype', 'bailiwick', 'time_first', 'time_last', 'count'])
    row[column] = cell(column).textContent;
  row.rdata = [...cell('rdata').querySelectorAll('.rdata')].map(line =>
    [...line.childNodes].filter(node => !(node.classList && node.classList.contains('pivot-rdata')))
      .map(node => node.textContent).join(''));
  return row;
});
"""


def shown(browser) -> list[dict]:
    """The table's rows as the analyst reads them."""
    return browser.execute_script(READ_ROWS)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def as_shown(obj: dict) -> dict:
    """An API object as the page shows it: times in UTC, no bailiwick for rdata rows."""
    return {"rrname": obj["rrname"], "rrtype": obj["rrtype"], "bailiwick": obj.get("bailiwick", ""),
            "rdata": obj["rdata"], "time_first": _when(obj["time_first"]), "time_last": _when(obj["time_last"]),
            "count": str(obj["count"])}


def stored(store, *segments: str) -> list[dict]:
    """What the store holds for a lookup, as the page should show it."""
    found = lookups.parse_lookup(list(segments))
    to_obj = present.entry_json if found.kind == "rrset" else present.rdata_entry_json
    return [as_shown(to_obj(entry)) for entry in found.rows(store, Fences(), None, 0)]


READ_TIMELINE = """
const chart = document.getElementById('timeline');
return {axis: {...chart.dataset}, bars: [...chart.querySelectorAll('rect.bar')].map(bar => ({
  x: +bar.getAttribute('x'), width: +bar.getAttribute('width'),
  first: +bar.dataset.first, last: +bar.dataset.last, title: bar.querySelector('title').textContent}))};
"""


def check_timeline(browser, rows: list[dict], everything: list[dict]) -> None:
    """One bar a row shown, in the table's order, from first to last seen on the whole answer's axis."""
    drawn = browser.execute_script(READ_TIMELINE)
    bars, axis = drawn["bars"], {name: float(value) for name, value in drawn["axis"].items()}
    assert [(_when(bar["first"]), _when(bar["last"])) for bar in bars] == [(r["time_first"], r["time_last"])
                                                                          for r in rows]
    assert _when(int(axis["start"])) == min(row["time_first"] for row in everything)
    assert _when(int(axis["end"])) == max(row["time_last"] for row in everything)
    scale = axis["plot"] / (axis["end"] - axis["start"])
    for bar, row in zip(bars, rows, strict=True):
        assert bar["x"] == pytest.approx(axis["left"] + (bar["first"] - axis["start"]) * scale, abs=0.01)
        assert bar["width"] == pytest.approx(max(2.0, (bar["last"] - bar["first"]) * scale), abs=0.01)
        assert bar["title"].startswith(f"{row['rrname']} {row['rrtype']} ")


# ------------------------------------------------------- without a browser
def test_the_page_and_its_files_come_from_this_server_under_a_strict_policy(served):
    server = served[0]
    status, headers, html = server.get("/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    # every file the page loads is this server's, relative; no inline script or style to allow
    text = html.decode()
    loaded = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sorted(loaded) == ["search.css", "search.js"], loaded
    assert "<style" not in text and " style=" not in text and "<script>" not in text
    for asset, kind in (("/search.js", "text/javascript"), ("/search.css", "text/css")):
        status, headers, body = server.get(asset)
        assert status == 200 and headers["content-type"].startswith(kind) and body
        assert "content-security-policy" in headers
    assert b"innerHTML" not in server.get("/search.js")[2]  # data goes in as text, never as markup
    assert server.get("/favicon.ico")[0] == 204
    # the API is as it was: the page's routes take nothing from it
    assert server.get("/dnsdb/v2/ping")[2] == b'{"ping":"ok"}\n'
    assert server.get("/dnsdb/v2/lookup/rrset/name/www.example.test")[0] == 403


# ------------------------------------------------------------ in a browser
@needs_browser
def test_search_a_name_pivot_on_an_address_filter_sort_and_see_the_timeline(page, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, _, store = served
    search(page, "www.example.test")
    said = answered(page, "rrset/name/www.example.test")
    expected = stored(store, "rrset", "name", "www.example.test")
    assert len(expected) == 2 and shown(page) == expected and said == "2 results."
    check_timeline(page, expected, expected)
    assert page.current_url.endswith("#rrset/name/www.example.test")

    # pivot: the address in the A record is a link to the records that hold it
    page.find_element(By.XPATH, "//a[@class='pivot-ip' and text()='203.0.113.80']").click()
    answered(page, "rdata/ip/203.0.113.80")
    pivoted = stored(store, "rdata", "ip", "203.0.113.80")
    assert pivoted and shown(page) == pivoted and page.find_element(By.ID, "query").get_attribute("value") == (
        "203.0.113.80")
    check_timeline(page, pivoted, pivoted)
    page.back()  # the lookup is in the address: Back is the previous lookup
    answered(page, "rrset/name/www.example.test")
    assert shown(page) == expected

    # a wildcard over several types; the type filter offers the types present, and the rows shrink to one
    search(page, "*.example.test")
    answered(page, "rrset/name/*.example.test")
    everything = stored(store, "rrset", "name", "*.example.test")
    assert shown(page) == everything
    types = Select(page.find_element(By.ID, "type-filter"))
    assert [option.get_attribute("value") for option in types.options] == ["", *sorted({r["rrtype"] for r in
                                                                                       everything})]
    types.select_by_value("A")
    only_a = [row for row in everything if row["rrtype"] == "A"]
    assert 1 < len(only_a) < len(everything) and shown(page) == only_a
    check_timeline(page, only_a, everything)  # the axis stays the whole answer's
    assert page.find_element(By.ID, "shown").text == f"{len(only_a)} of {len(everything)} shown"

    # and by time: first seen from 00:25 (1500 s), last seen until 00:30 (1800 s) ...
    types.select_by_value("")
    page.find_element(By.ID, "first-from").send_keys("1970-01-01 00:25")
    within = [row for row in everything if row["time_first"] >= "1970-01-01 00:25:00"]
    assert 0 < len(within) < len(everything) and shown(page) == within
    page.find_element(By.ID, "last-until").send_keys("1970-01-01 00:30")
    assert shown(page) == [row for row in within if row["time_last"] <= "1970-01-01 00:30:59"]
    page.find_element(By.ID, "last-until").send_keys(" tomorrow")  # not a time: said, and ignored
    assert page.find_element(By.ID, "last-until").get_attribute("aria-invalid") == "true"
    assert shown(page) == within
    for box in ("first-from", "last-until"):
        page.find_element(By.ID, box).clear()
        page.execute_script("arguments[0].dispatchEvent(new Event('input'))", page.find_element(By.ID, box))
    assert shown(page) == everything

    # sorting: a header sorts ascending, again descending (ties keep the answer's order)
    header = page.find_element(By.CSS_SELECTOR, "th[data-column='time_last'] button")
    header.click()
    assert shown(page) == sorted(everything, key=lambda row: row["time_last"])
    header.click()
    assert shown(page) == sorted(everything, key=lambda row: row["time_last"], reverse=True)
    assert page.find_element(By.CSS_SELECTOR, "th[data-column='time_last']").get_attribute("aria-sort") == (
        "descending")
    check_timeline(page, shown(page), everything)  # the bars follow the table's order

    page.save_screenshot(str(tmp_path / "search-page.png"))
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    shutil.copyfile(tmp_path / "search-page.png", SCREENSHOT)
    # the page ran under its own policy: no violation, no script error in the console
    assert [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"] == []


@needs_browser
def test_hostile_names_and_data_show_as_text_and_pivot_back_to_themselves(page, served):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _, _, store = served
    search(page, "*.hostile.test")
    answered(page, "rrset/name/*.hostile.test")
    expected = stored(store, "rrset", "name", "*.hostile.test")
    assert shown(page) == expected
    (txt,) = [row for row in expected if row["rrtype"] == "TXT"]
    (cname,) = [row for row in expected if row["rrtype"] == "CNAME"]
    assert txt["rrname"].startswith("<script>alert(1)</script>.\\007\\027[31m\\010.a\\.b\\\\c\\226")
    assert txt["rdata"] == ['"<img src=x onerror=alert(2)>\\000\\"\\\\"']
    # the markup stayed text: no element the data could have made, no alert
    made = page.execute_script("return document.querySelectorAll('main script, main img, main iframe').length")
    assert made == 0
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text  # noqa: B018 (reading it is the check)
    labels = page.execute_script("return [...document.querySelectorAll('#timeline .label')].map(t => t.textContent)")
    assert any(label.startswith("<script>alert(1)</script>") for label in labels)

    # the owner's link runs its own lookup: the escapes survive the URL both ways
    page.find_element(By.XPATH, "//tr[td[@data-column='rrtype' and text()='TXT']]//a[@class='pivot-owner']").click()
    answered(page, "rrset/name/" + txt["rrname"])
    assert shown(page) == [txt]
    # the CNAME's hostile target: the records that point to it
    page.back()
    answered(page, "rrset/name/*.hostile.test")
    page.find_element(By.CSS_SELECTOR, "a.pivot-rdata").click()
    answered(page, "rdata/name/" + cname["rdata"][0])
    pointing = stored(store, "rdata", "name", cname["rdata"][0])
    assert [row["rrname"] for row in pointing] == ["cname.hostile.test."] and shown(page) == pointing
    assert [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"] == []


@needs_browser
def test_a_refused_key_is_asked_again_and_the_search_then_runs(page, served):
    from selenium.webdriver.common.by import By

    _, key, store = served
    page.execute_script("sessionStorage.setItem('sie-dns-collector.api-key', 'not-a-key')")
    search(page, "mail.example.test")
    _until(page, lambda: page.find_element(By.ID, "key-form").is_displayed(), "the key asked again")
    assert "refused" in page.find_element(By.ID, "key-note").text
    assert page.execute_script("return sessionStorage.getItem('sie-dns-collector.api-key')") is None
    page.find_element(By.ID, "api-key").send_keys(key + "\n")
    answered(page, "rrset/name/mail.example.test")
    assert shown(page) == stored(store, "rrset", "name", "mail.example.test")
    page.find_element(By.ID, "forget-key").click()
    assert page.find_element(By.ID, "key-form").is_displayed()
    assert page.execute_script("return sessionStorage.getItem('sie-dns-collector.api-key')") is None


@needs_browser
def test_a_limited_answer_and_a_refused_lookup_are_said(page, served):
    from selenium.webdriver.common.by import By

    _, _, store = served
    page.find_element(By.ID, "limit").clear()
    page.find_element(By.ID, "limit").send_keys("3")
    search(page, "*.example.test")
    said = answered(page, "rrset/name/*.example.test")
    assert shown(page) == stored(store, "rrset", "name", "*.example.test")[:3]
    assert said.startswith("3 results: the limit was reached (Result limit reached)"), said
    search(page, "a..b")
    said = answered(page, "rrset/name/a..b", state="error")
    assert said.startswith("400: Error: 'a..b' is not a domain name"), said
    assert shown(page) == []
    for broken in ("#rrset/name/%E0%A4%A", "#nothing/here"):  # a link no lookup: said, nothing asked
        page.get(page.current_url.split("#")[0] + broken)
        status = page.find_element(By.ID, "status")
        _until(page, lambda: "is no lookup" in status.text, f"{broken} refused")  # noqa: B023
        assert status.get_attribute("data-state") == "error" and shown(page) == []
        page.get(page.current_url.split("#")[0] + "#rrset/name/mail.example.test")
        answered(page, "rrset/name/mail.example.test")
