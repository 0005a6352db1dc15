"""The report (and a drilldown page) as one self-contained HTML file.

plotly.js, the stylesheet and the script are inlined: the page opens with no network, and its
Content-Security-Policy forbids any request and any script but the page's own (a nonce), so even
markup that slipped through could not run. Every log-derived string goes through
:func:`egresslens.escape.html`; chart figures are JSON in ``<script type="application/json">``
elements through :func:`egresslens.escape.script_json`.

A directory of reports (the nightly job's) may share one plotly.js instead (`plotly_js`: a file name
beside the page, :func:`write_plotly_js`); it is loaded under the same nonce and the page still sends
nothing anywhere. The charts' toolbar has no button that could: no link to or export into Plotly's
cloud, only PNG download (drawn in the page, saved by the browser), zoom and reset.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from egresslens.escape import html, script_json
from egresslens.report.model import (CODE, COMMAND, FLOAT, INT, LINK, MS, PCT, SEVERITIES, Chart, Report, Section, Table,
                                     cell_text, urgency)

_NUMERIC = (INT, FLOAT, PCT, MS)
_LONG = 40  # a cell of prose (a fix, a reason): kept wide enough to read, the table scrolls in its box instead


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files("egresslens").joinpath("data", "report", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_js_name() -> str:
    """The shared plotly.js's file name: its version in it, so reports of an older version keep theirs."""
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


def write_plotly_js(directory, name: str | None = None):  # noqa: ANN001, ANN201
    """plotly.js written (whole) into `directory` as `name` unless it is there already; its path."""
    from pathlib import Path

    from egresslens import atomic

    path = Path(directory) / (name or plotly_js_name())
    if not path.exists() or path.stat().st_size != len(_plotly_js().encode("utf-8")):
        atomic.write_text(path, _plotly_js())
    return path


def _lines(text: str) -> str:
    """Multi-line text (a snippet) escaped line by line, its line breaks kept."""
    return "\n".join(html(line) for line in str(text).split("\n"))


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


_TOKEN = re.compile(r"\S+")
_SHORT = 24  # a flag, a date, a time: short enough to keep whole on a phone


def keep_tokens(text: str, flags_only: bool = False) -> str:
    """`text` as HTML whose short words are never broken (not at the hyphen of `--since` or of a date,
    not between `24` and `h`); a longer one (a path, an id) may still break to fit a phone.
    `flags_only`: in a command in a table's cell, only its flags are kept whole."""
    def one(word: str) -> str:
        whole = word.startswith("-") if flags_only else "-" in word
        return f'<span class="nobr">{html(word)}</span>' if whole and len(word) <= _SHORT else html(word)

    text = re.sub(r"(\d) (h|min|d)\b", "\\1\u00a0\\2", str(text))
    return _TOKEN.sub(lambda m: one(m.group(0)), text)


def _cell(value: Any, fmt: str, column: str, ids: _Ids) -> str:
    if value is None:
        return "<td>-</td>"
    if fmt == CODE:
        pid = ids.next("snippet")
        return (f'<td><details><summary>{html(column)}</summary><pre id="{pid}">{_lines(value)}</pre>'
                f'<button type="button" class="copy" data-copy="{pid}">copy</button></details></td>')
    if fmt == LINK and str(value).startswith("#"):
        return f'<td><a href="{html(value)}">open</a></td>'
    if fmt == COMMAND:
        cid = ids.next("cmd")
        return (f'<td><code id="{cid}">{keep_tokens(value, flags_only=True)}</code>'
                f'<button type="button" class="copy" data-copy="{cid}" title="copy the command">copy</button></td>')
    text = cell_text(value, fmt)
    if isinstance(value, datetime):  # 2026-12-05 03:10: broken at the space if at all, never at a hyphen
        return f"<td>{keep_tokens(text)}</td>"
    cls = (' class="num"' if fmt in _NUMERIC or (isinstance(value, (int, float)) and not isinstance(value, bool))
           else ' class="long"' if len(text) > _LONG else "")
    return f"<td{cls}>{html(text)}</td>"


def _header(column: str, fmt: str) -> str:
    """`p95_latency_s` shown in ms is `p95 latency`: the unit is in each cell."""
    if fmt == MS and column.endswith("_s"):
        column = column[:-2]
    return column.replace("_", " ")


def table(t: Table, ids: _Ids) -> str:
    total = t.rows_total
    head = "".join(f"<th>{html(_header(c, t.fmt(c)))}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_cell(r[c], t.fmt(c), c, ids) for c in t.columns) + "</tr>" for r in t.rows())
    shown = min(t.limit, t.frame.height)
    more = f'<p class="note">showing {shown} of {total:,} rows</p>' if total > shown else ""
    note = f'<p class="note">{html(t.note)}</p>' if t.note else ""
    if not total:
        return f'<h3>{html(t.title)}</h3><p class="note">none</p>{note}'
    return (f'<h3>{html(t.title)}</h3><div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{more}{note}")


def chart(c: Chart) -> str:
    if c.is_empty:
        return f'<h3>{html(c.title)}</h3><p class="note empty" data-empty-chart="{html(c.id)}">{html(c.empty)}</p>'
    return (f'<h3>{html(c.title)}</h3><div class="chart" id="{html(c.id)}" data-figure="fig-{html(c.id)}"></div>'
            f'<script type="application/json" id="fig-{html(c.id)}">{script_json(c.figure)}</script>')


def findings_list(findings) -> str:  # noqa: ANN001
    if not findings:
        return '<p class="sev-ok">Nothing to act on.</p>'
    items = "".join(f'<li><span class="sev sev-{html(f.severity)}">{html(f.severity)}</span>'
                    f'<a href="#{html(f.section)}">{html(f.section)}</a>: {html(f.message)}</li>'
                    for f in sorted(findings, key=urgency))
    return f'<ul class="findings">{items}</ul>'


def section(s: Section, ids: _Ids) -> str:
    facts = "".join(f"<li>{html(f)}</li>" for f in s.facts)
    parts = [f'<section id="{html(s.id)}" data-section="{html(s.id)}"><h2>{html(s.title)}</h2>',
             f"<p>{html(s.intro)}</p>"]
    if facts:
        parts.append(f'<ul class="facts">{facts}</ul>')
    if s.findings:
        parts.append(findings_list(s.findings))
    parts += [chart(c) for c in s.charts]
    parts += [table(t, ids) for t in s.tables]
    parts.append("</section>")
    return "".join(parts)


def page(title: str, header: str, body: str, footer: str = "", plotly_js: str | None = None) -> str:
    """A complete page: inlined style, plotly.js (or the shared file `plotly_js` beside it) and script under a
    nonce-only Content-Security-Policy. Images only from the page itself (data: and blob: URLs: the PNG
    download draws the chart into one); no request of any kind (connect-src, form-action, base-uri)."""
    nonce = secrets.token_urlsafe(18)
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src data: blob:; "
           "font-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'; "
           "object-src 'none'")
    plotly = (f'<script nonce="{nonce}" src="{html(plotly_js)}"></script>' if plotly_js
              else f'<script nonce="{nonce}">{_plotly_js()}</script>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{html(title)}</title><style>{_asset('report.css')}</style></head><body>"
        f"<header>{header}</header><main>{body}</main><footer>{footer}</footer>"
        f"{plotly}"
        f'<script nonce="{nonce}">{_asset("report.js")}</script></body></html>\n'
    )


def render(report: Report, exit_code: int | None = None, plotly_js: str | None = None) -> str:
    ids = _Ids()
    w = report.window
    counts = "".join(f'<div class="count sev-{s}"><b>{report.count(s)}</b>{s}</div>' for s in SEVERITIES)
    banner = "".join(f'<div class="banner" role="alert">{html(b)}</div>' for b in report.banner)
    header = (f"<h1>EgressLens report</h1><p class=\"meta\">{keep_tokens(w.describe())}"
              + (f"; compared with {keep_tokens(report.baseline.describe())}" if report.baseline else "")
              + f"<br>written {report.generated_at:%Y-%m-%d %H:%M} UTC from {html(report.store or 'the store')}"
              + (f"; exit code {int(exit_code)}" if exit_code is not None else "") + "</p>"
              + banner + f'<div class="verdict">{counts}</div>')
    toc = "".join(f'<li><a href="#{html(s.id)}">{html(s.title)}</a>'
                  + (f' <span class="sev sev-{html(_worst(s))}">{len(s.findings)}</span>' if s.findings else "")
                  + "</li>" for s in report.sections)
    body = (f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>'
            f'<li><a href="#findings">Findings</a></li>{toc}</ol></nav>'
            f'<section id="findings" data-section="findings"><h2>Findings</h2>{findings_list(report.findings)}</section>'
            + "".join(section(s, ids) for s in report.sections))
    foot = ("timings (s): " + ", ".join(f"{html(k)} {v:g}" for k, v in report.timings.items())) if report.timings else ""
    return page(f"EgressLens report {w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC", header,
                body, foot, plotly_js=plotly_js)


def _worst(s: Section) -> str:
    return next(sev for sev in SEVERITIES if any(f.severity == sev for f in s.findings))


_EVIDENCE_SHOWN = 8  # evidence rows in the banner; the rest are counted


def verdict_banner(v) -> str:  # noqa: ANN001 - egresslens.report.verdict.Verdict
    """The suspicion model's verdict at the top of a drilldown: a banner with the evidence and the action
    when the subject is compromised or never proposed, one quiet line otherwise."""
    from egresslens.report.verdict import COMPROMISED

    if not v.alarming:
        return (f'<p class="verdict-quiet" data-verdict="{html(v.verdict)}"><b>Suspicion model: {html(v.verdict)}</b>'
                f" ({html(v.detail)})</p>")
    rows = []
    if v.verdict == COMPROMISED:
        head = f"Compromised since {v.since:%Y-%m-%d %H:%M:%S} UTC" if v.since else "Compromised"
        lead = (f"The suspicion model marks {html(v.subject)} compromised: it is cut out of every proposed rule, and "
                "nothing only compromised sources asked for is proposed.")
        if v.since:
            rows.append(("first contact", f"{v.since:%Y-%m-%d %H:%M:%S} UTC"
                                          + (f", last {v.last_seen:%Y-%m-%d %H:%M:%S} UTC" if v.last_seen else "")
                                          + (f" ({v.caveat})" if v.caveat else "")))
        if v.reached:
            rows.append(("reached", ", ".join(v.reached[:20]) + (f" and {len(v.reached) - 20} more" if len(v.reached) > 20 else "")))
        for e in v.evidence[:_EVIDENCE_SHOWN]:
            when = f" (first {e['first_seen']:%Y-%m-%d %H:%M:%S})" if e.get("first_seen") else ""
            rows.append(("why", f"{str(e['kind']).replace('_', ' ')}: {e['detail']}{when}"))
        if len(v.evidence) > _EVIDENCE_SHOWN:
            rows.append(("why", f"and {len(v.evidence) - _EVIDENCE_SHOWN} more pieces of evidence (drilldown --json, dns --json)"))
        cls, verb = "verdict-banner", "Isolate it"
    else:
        head = "Never proposed"
        lead = f"The suspicion model withholds {html(v.subject)} from every proposed rule."
        rows.append(("why", v.detail))
        if v.sources:
            rows.append(("reached by", "compromised source(s) " + ", ".join(v.sources[:20])
                         + (f" and {len(v.sources) - 20} more" if len(v.sources) > 20 else "")))
        cls, verb = "verdict-banner verdict-withheld", "What to do"
    items = "".join(f"<li><b>{html(k)}</b> {html(val)}</li>" for k, val in rows)
    return (f'<div class="{cls}" role="alert" data-verdict="{html(v.verdict)}"><h2>{html(head)}</h2><p>{lead}</p>'
            f'<ul class="evidence">{items}</ul><p class="action">{verb}: {html(v.action or "")}</p></div>')


def render_drilldown(d, generated_at, command: str = "", plotly_js: str | None = None) -> str:  # noqa: ANN001
    """The drilldown page of one subject (`egresslens drilldown`): the suspicion model's verdict first."""
    ids = _Ids()
    header = (f"<h1>EgressLens drilldown: {html(d.kind)} <code>{html(d.subject)}</code></h1>"
              f'<p class="meta">{keep_tokens(d.window.describe())}; written {generated_at:%Y-%m-%d %H:%M} UTC'
              + (f"<br>{keep_tokens(command)}" if command else "") + "</p>")
    banner = verdict_banner(d.verdict) if d.verdict is not None else ""
    # the verdict's own fact line says what the banner says
    facts = "".join(f"<li>{html(f)}</li>" for f in d.facts if not (banner and f.startswith("verdict: ")))
    charts_html = "".join(chart(c) for c in d.charts())
    tables = "".join(table(t, ids) for t in d.tables())
    body = (f'{banner}<section id="drilldown" data-section="drilldown"><ul class="facts">{facts}</ul>{charts_html}'
            f"{tables}</section>")
    return page(f"EgressLens drilldown {d.kind} {d.subject}", header, body, plotly_js=plotly_js)
