"""The report's shape: sections of tables and charts, findings with a severity, and the exit code
they add up to. Renderers (HTML, Markdown, JSON) only read these objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from egresslens import exitcodes
from egresslens.analyse import Window

# Severity of a finding, most severe first.
CRITICAL = "critical"  # SNAT over the critical level, threat-intel/IDPS hits, a compromised source,
#                        a dependency newly denied that was allowed before
FINDING = "finding"  # something to act on: a SNAT warning, denied traffic with a fix, rules to narrow or remove
WARNING = "warning"  # worth a look: stale or gappy data, quarantined records, newly seen domains
SEVERITIES = (CRITICAL, FINDING, WARNING)
FAIL_ON = ("finding", "warning", "critical")
# Within a severity, the findings about a compromised workload or threat intelligence come first: they are
# acted on (isolate, deny) before a capacity or a policy change; the other sections keep report order.
URGENT_SECTIONS = ("dns", "threats")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and its noun, singular for one: "1 zone", "2 zones", "1,204 sources"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def urgency(f: Finding) -> tuple[int, int]:
    """The sort key of findings: most severe first, then :data:`URGENT_SECTIONS`."""
    return SEVERITIES.index(f.severity), (URGENT_SECTIONS.index(f.section) if f.section in URGENT_SECTIONS
                                          else len(URGENT_SECTIONS))


@dataclass
class Finding:
    severity: str
    section: str  # section id
    message: str  # may hold log-derived text: renderers escape it

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "section": self.section, "message": self.message}


# Column formats understood by every renderer.
TEXT, INT, FLOAT, PCT, MS, TIME, CODE, COMMAND = "text", "int", "float", "pct", "ms", "time", "code", "command"
LINK = "link"  # "#anchor" of another section of the same report


@dataclass
class Table:
    """A table of raw values; `formats` gives each column's format (TEXT when absent)."""

    title: str
    frame: pl.DataFrame
    formats: dict[str, str] = field(default_factory=dict)
    note: str = ""
    limit: int = 25
    total: int | None = None  # rows in all, when `frame` holds only the first of them (the busiest)

    @property
    def rows_total(self) -> int:
        return self.frame.height if self.total is None else max(self.total, self.frame.height)

    @property
    def columns(self) -> list[str]:
        return self.frame.columns

    def rows(self) -> list[dict[str, Any]]:
        return self.frame.head(self.limit).to_dicts()

    def fmt(self, column: str) -> str:
        return self.formats.get(column, TEXT)


@dataclass
class Chart:
    """A plotly figure (as its JSON dict) with the title shown above it; `empty` is the sentence shown
    instead of a chart with nothing to draw."""

    id: str
    title: str
    figure: dict[str, Any]
    empty: str = "No data to draw in this window."

    @property
    def is_empty(self) -> bool:
        """True when no trace has a value other than zero or null to draw."""
        for trace in self.figure.get("data") or []:
            values = trace.get("x" if trace.get("orientation") == "h" else "y")
            if isinstance(values, dict):  # plotly's typed-array encoding: drawn, whatever its values
                return False
            if any(v not in (None, 0) and v == v for v in values or []):
                return False
        return True


@dataclass
class Section:
    id: str
    title: str
    intro: str
    facts: list[str] = field(default_factory=list)  # one-line statements (may hold log-derived text)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    data: dict[str, pl.DataFrame] = field(default_factory=dict)  # what the charts are drawn from
    summary: dict[str, Any] = field(default_factory=dict)  # numbers for the JSON summary

    def add(self, severity: str, message: str) -> None:
        self.findings.append(Finding(severity, self.id, message))


@dataclass
class Report:
    window: Window
    baseline: Window | None
    generated_at: datetime
    store: str
    sections: list[Section]
    banner: list[str] = field(default_factory=list)  # shown above everything (e.g. a failed ingest)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        """Every finding, most urgent first (:func:`urgency`; sections in report order after that)."""
        return sorted((f for s in self.sections for f in s.findings), key=urgency)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def exit_code(self, fail_on: str = "finding") -> int:
        """CRITICAL when any critical finding; FINDINGS when a finding (or, with fail_on='warning',
        a warning) is present; OK otherwise. fail_on='critical' only fails on critical findings."""
        if fail_on not in FAIL_ON:
            raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
        if self.count(CRITICAL):
            return exitcodes.CRITICAL
        counted = {"critical": (), "finding": (FINDING,), "warning": (FINDING, WARNING)}[fail_on]
        return exitcodes.FINDINGS if any(self.count(s) for s in counted) else exitcodes.OK

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)


def cell_text(value: Any, fmt: str = TEXT) -> str:
    """A value as the text a person reads (escaping is the renderer's job)."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(cell_text(v) for v in value[:5]) + (f" (+{len(value) - 5})" if len(value) > 5 else "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if fmt == PCT and isinstance(value, (int, float)):
        return f"{value:.1%}"
    if fmt == MS and isinstance(value, (int, float)):
        return f"{value * 1000:.1f} ms"
    if fmt == INT and isinstance(value, (int, float)):
        return f"{value:,.0f}"
    if fmt == FLOAT and isinstance(value, (int, float)):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a port, an id or a code: as logged (counts are INT columns)
    return str(value)
