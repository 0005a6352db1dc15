"""The report as a reader sees it: headless Chromium finds every section and chart, logs no console
error, makes no network request, and runs no script a hostile name carries."""

from __future__ import annotations

import time

import pytest
from browser import available, chromium
from test_report import CHARTS, EMPTY, MARKER, SECTIONS, hostile_store
from typer.testing import CliRunner
from reportdata import simulated_store

from egresslens.cli import app

pytestmark = pytest.mark.skipif(available() is not None, reason=available() or "")
runner = CliRunner()


def _open(driver, path):
    driver.get(path.resolve().as_uri())
    deadline = time.monotonic() + 60
    while not driver.execute_script("return window.egresslensReportReady === true"):
        assert time.monotonic() < deadline, "the report's script never finished"
        time.sleep(0.2)


def _problems(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _requests(driver) -> list[str]:
    """Every resource the page fetched (the page itself is a navigation, not a resource)."""
    return driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    db, logs = simulated_store(d)
    out = d / "report.html"
    runner.invoke(app, ["report", "--db", str(db), "--since", "24h", "--compare-to", "24h",
                        "--policy", str(logs / "policy.json"), "--out", str(out)])
    return out


def test_chromium_shows_every_section_and_chart_with_no_console_error_and_no_request(report):
    with chromium() as driver:
        _open(driver, report)
        shown = driver.execute_script(
            "return Array.from(document.querySelectorAll('section[data-section]')).map(s => s.id)")
        with_policy = SECTIONS[:5] + ["policy"] + SECTIONS[5:]  # a policy given: its snapshot and changes
        assert shown == ["findings", *with_policy]
        drawn = driver.execute_script(
            "return Array.from(document.querySelectorAll('div.chart')).filter("
            "d => d.querySelector('svg.main-svg') !== null && d.getBoundingClientRect().height > 100).map(d => d.id)")
        assert set(CHARTS) - set(EMPTY) <= set(drawn)
        links = driver.execute_script("return Array.from(document.querySelectorAll('nav.toc a')).map(a => a.hash)")
        assert links == ["#findings", *[f"#{s}" for s in with_policy]]
        assert _problems(driver) == []
        assert _requests(driver) == []


def test_chromium_runs_no_script_from_a_hostile_name(tmp_path):
    db = hostile_store(tmp_path / "s.duckdb")
    out = tmp_path / "hostile.html"
    runner.invoke(app, ["report", "--db", str(db), "--since", "24h", "--compare-to", "24h", "--out", str(out)])
    with chromium() as driver:
        _open(driver, out)  # an alert() from the corpus would fail here (unexpected alert open)
        assert driver.execute_script("return window.__egresslensPwned === undefined")
        assert driver.execute_script("return document.querySelectorAll('main img, main script:not([type])').length") == 0
        texts = driver.execute_script("return document.body.innerText")
        assert MARKER in texts  # shown as text, exactly
        labels = driver.execute_script(
            "return Array.from(document.querySelectorAll('div.chart svg text')).map(t => t.textContent).join('\\n')")
        assert "&quot;" not in labels and "&#x27;" not in labels and "&amp;" not in labels  # escaped once, not twice
        assert '"' in labels and "<img" in labels  # quotes and markup drawn as the text they are
        drawn = driver.execute_script("return document.querySelectorAll('div.chart svg.main-svg').length")
        assert drawn > 0
        assert _problems(driver) == []
        assert _requests(driver) == []


@pytest.fixture(scope="module")
def drill(report):
    out = report.parent / "drilldown.html"
    result = runner.invoke(app, ["drilldown", "10.244.3.17", "--db", str(report.parent / "s.duckdb"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("width,height,dark", [(1366, 900, False), (390, 844, True)])
def test_every_toolbar_button_sends_nothing_png_download_works_and_the_page_fits_the_screen(report, drill, tmp_path,
                                                                                            width, height, dark):
    import base64
    import os

    for page in (report, drill):
        downloads = tmp_path / f"{page.stem}-{width}"
        downloads.mkdir()
        with chromium(width, height, dark=dark) as driver:
            driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
            _open(driver, page)
            assert driver.execute_script("return window.innerWidth") == width
            # no horizontal overflow of the page: wide tables scroll inside their own box
            assert driver.execute_script("return document.documentElement.scrollWidth") <= width
            bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
            assert (bg == "rgb(13, 17, 23)") == dark, bg  # the dark theme when the reader asks for it
            titles = driver.execute_script(
                "return Array.from(new Set(Array.from(document.querySelectorAll('.modebar-btn'))"
                ".map(b => b.getAttribute('data-title'))))")
            assert titles and not [t for t in titles if "cloud" in t.lower() or "share" in t.lower()
                                   or "edit" in t.lower() or "chart studio" in t.lower()], titles
            n = driver.execute_script("""
                const charts = Array.from(document.querySelectorAll('div.chart'));
                charts.forEach(c => {
                  const bs = Array.from(c.querySelectorAll('.modebar-btn'));
                  const png = bs.filter(b => /png/i.test(b.getAttribute('data-title')));
                  bs.filter(b => !png.includes(b)).forEach(b => b.click());
                  png.forEach(b => b.click());
                });
                return charts.length;""")
            deadline = time.monotonic() + 30
            while len([p for p in os.listdir(downloads) if p.endswith(".png")]) < n and time.monotonic() < deadline:
                time.sleep(0.3)
            pngs = sorted(p for p in os.listdir(downloads) if p.endswith(".png"))
            assert len(pngs) == n, (pngs, n)
            assert (downloads / pngs[0]).read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")
            # the toolbar sits above the plot, never over it
            overlap = driver.execute_script("""
                return Array.from(document.querySelectorAll('div.chart')).filter(c => {
                  const bar = c.querySelector('.modebar'), plot = c.querySelector('.draglayer .nsewdrag');
                  if (!bar || !plot) { return false; }
                  const a = bar.getBoundingClientRect(), b = plot.getBoundingClientRect();
                  return a.bottom > b.top + 1 && a.left < b.right && a.right > b.left;
                }).map(c => c.id);""")
            assert overlap == []
            assert _requests(driver) == []
            assert _problems(driver) == []
