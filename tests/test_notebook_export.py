"""The notebooks as a reader shares them: run with papermill (as the docs do), exported to HTML with nbconvert
(`--to egresslens-html`), and opened in headless Chromium with no network: every chart draws (plotly's
SVG), nothing is fetched and nothing is logged as an error."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import available, chromium
from reportdata import simulated_store

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = pytest.mark.skipif(available() is not None, reason=available() or "")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("nbexport"), hours=24, events_per_hour=800)[0]


def run_and_export(notebook: Path, tmp_path: Path, **parameters) -> Path:
    import papermill
    from nbconvert.exporters import get_exporter

    ran = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(ran), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    import nbformat

    outputs = [o for c in nbformat.read(str(ran), as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"], "no error, no warning"
    body, _ = get_exporter("egresslens-html")().from_filename(str(ran))
    page = tmp_path / f"{notebook.stem}.html"
    page.write_text(body, encoding="utf-8")
    return page


class _Links(HTMLParser):
    """Every src and href of the page's elements (a script's text is not markup to this parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def charts_drawn(page: Path, expected: int) -> None:
    text = page.read_text(encoding="utf-8")
    links = _Links()
    links.feed(text)
    assert not [u for u in links.urls if re.match(r"(https?:)?//", u)], "nothing from a CDN or any other host"
    assert "Content-Security-Policy" in text and "connect-src 'none'" in text
    with chromium(1366, 900) as driver:
        driver.get(page.resolve().as_uri())
        deadline = time.monotonic() + 60
        count = "return document.querySelectorAll('.js-plotly-plot svg.main-svg').length"
        while driver.execute_script("return document.querySelectorAll('.js-plotly-plot').length") < expected:
            assert time.monotonic() < deadline, "the charts never drew"
            time.sleep(0.3)
        drawn = driver.execute_script("return document.querySelectorAll('.js-plotly-plot').length")
        assert drawn == expected and driver.execute_script(count) >= expected
        buttons = driver.execute_script("return Array.from(document.querySelectorAll('.modebar-btn'))"
                                        ".map(b => b.getAttribute('data-title'))")
        assert buttons and not [b for b in buttons if re.search(r"cloud|share|edit|studio", b, re.I)]
        assert driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)") == []
        assert [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []


def test_the_subject_notebook_exported_draws_its_six_charts_offline(db, tmp_path):
    page = run_and_export(NOTEBOOKS / "drilldown-subject.ipynb", tmp_path, db=str(db), since="24h",
                          subject="10.244.3.17", kind="source")
    charts_drawn(page, 6)


def test_the_overview_notebook_exported_draws_its_charts_offline(db, tmp_path, monkeypatch):
    monkeypatch.setenv("EGRESSLENS_DB", str(db))
    charts_drawn(run_and_export(NOTEBOOKS / "drilldown.ipynb", tmp_path), 2)
