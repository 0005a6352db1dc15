"""The report as Markdown (`--format markdown`): the same sections, findings and tables, no charts.

Text cells go through :func:`egresslens.escape.markdown`, commands through
:func:`egresslens.escape.markdown_code`; snippets are left to the HTML report and `recommend`.
"""

from __future__ import annotations

from egresslens.escape import markdown, markdown_code
from egresslens.report.model import CODE, COMMAND, SEVERITIES, Report, Section, Table, cell_text, urgency


def _table(t: Table) -> list[str]:
    cols = [c for c in t.columns if t.fmt(c) != CODE]
    out = [f"### {markdown(t.title)}", ""]
    if not t.frame.height:
        return out + ["none", ""]
    out.append("| " + " | ".join(markdown(c.replace("_", " ")) for c in cols) + " |")
    out.append("|" + "---|" * len(cols))
    for r in t.rows():
        cells = [markdown_code(r[c], in_table=True) if t.fmt(c) == COMMAND and r[c] is not None
                 else markdown(cell_text(r[c], t.fmt(c))) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    if t.rows_total > min(t.limit, t.frame.height):
        out.append(f"\nshowing {min(t.limit, t.frame.height)} of {t.rows_total:,} rows")
    if len(cols) < len(t.columns):
        out.append("\naz and Terraform snippets: in the HTML report, or `egresslens recommend --format az|terraform`.")
    return out + [""]


def _findings(findings) -> list[str]:  # noqa: ANN001
    if not findings:
        return ["Nothing to act on.", ""]
    return [f"- **{f.severity}** ({f.section}): {markdown(f.message)}"
            for f in sorted(findings, key=urgency)] + [""]


def _section(s: Section) -> list[str]:
    out = [f"## {markdown(s.title)}", "", markdown(s.intro), ""]
    out += [f"- {markdown(f)}" for f in s.facts] + ([""] if s.facts else [])
    if s.findings:
        out += _findings(s.findings)
    for t in s.tables:
        out += _table(t)
    return out


def render(report: Report, exit_code: int | None = None) -> str:
    out = ["# EgressLens report", "", f"Window: {report.window.describe()}"]
    if report.baseline:
        out.append(f"Compared with: {report.baseline.describe()}")
    out.append(f"Written {report.generated_at:%Y-%m-%d %H:%M} UTC"
               + (f"; exit code {int(exit_code)}" if exit_code is not None else ""))
    out += [""] + [f"> **{markdown(b)}**" for b in report.banner] + ([""] if report.banner else [])
    out.append(", ".join(f"{report.count(s)} {s}" for s in SEVERITIES))
    out += ["", "## Findings", ""] + _findings(report.findings)
    for s in report.sections:
        out += _section(s)
    return "\n".join(out).rstrip("\n") + "\n"
