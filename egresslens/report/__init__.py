"""The morning report: one self-contained HTML page (or Markdown / JSON) over a window of the store.

    from egresslens.report import build_report, windows, render
    window, baseline = windows(con, "24h", "7d")
    report = build_report(con, window, baseline=baseline, policy=rules)
    html_text = render(report, "html", report.exit_code())

Sections are computed by :mod:`~egresslens.report.sections` and :mod:`~egresslens.report.health`
from the same analyses the commands run, drawn by :mod:`~egresslens.report.charts`, rendered by
:mod:`~egresslens.report.html`, :mod:`~egresslens.report.markdown` and :mod:`~egresslens.report.summary`.
"""

from __future__ import annotations

from pathlib import Path

from egresslens.report.build import build_report, windows
from egresslens.report.model import FAIL_ON, Report

FORMATS = ("html", "markdown", "json")
SUFFIX = {"html": ".html", "markdown": ".md", "json": ".json"}


def render(report: Report, fmt: str, exit_code: int | None = None, plotly_js: str | None = None) -> str:
    from egresslens.report import html, markdown, summary

    if fmt == "html":
        return html.render(report, exit_code, plotly_js=plotly_js)
    return {"markdown": markdown.render, "json": summary.render}[fmt](report, exit_code)


def write(report: Report, out: Path, fmt: str = "html", exit_code: int | None = None,
          plotly_js: str | None = None) -> list[Path]:
    """Write the report to `out`, replacing it whole (:mod:`egresslens.atomic`: a kill or a full disk
    leaves the previous file as it was); an HTML report gets its JSON summary beside it (same name, .json).
    `plotly_js`: the page loads plotly.js from this file name beside it (written there when missing)
    instead of carrying its own copy; default: one self-contained file."""
    from egresslens import atomic

    out = Path(out)
    if fmt == "html" and plotly_js:
        from egresslens.report.html import write_plotly_js

        write_plotly_js(out.parent, plotly_js)
    written = [atomic.write_text(out, render(report, fmt, exit_code, plotly_js=plotly_js))]
    if fmt == "html":
        written.append(atomic.write_text(out.with_suffix(".json"), render(report, "json", exit_code)))
    return written


__all__ = ["FAIL_ON", "FORMATS", "SUFFIX", "Report", "build_report", "render", "windows", "write"]
