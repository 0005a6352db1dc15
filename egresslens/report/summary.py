"""The report as data: the JSON summary written beside the HTML, and the `--format json` output."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from egresslens.analyse import json_rows
from egresslens.report.model import CODE, SEVERITIES, Report

SCHEMA = "egresslens-report/1"


def _window(w) -> dict[str, str] | None:  # noqa: ANN001
    return {"start": w.start.isoformat(), "end": w.end.isoformat()} if w else None


def document(report: Report, exit_code: int | None = None, rows: int = 50) -> dict[str, Any]:
    sections = {}
    for s in report.sections:
        sections[s.id] = {
            "title": s.title, "summary": s.summary, "facts": s.facts,
            "findings": [f.to_dict() for f in s.findings],
            "charts": [c.id for c in s.charts],
            "tables": {t.title: {"rows": t.rows_total,
                                 "head": json_rows(t.frame.drop([c for c in t.columns if t.fmt(c) == CODE]), rows)}
                       for t in s.tables},
        }
    return {
        "schema": SCHEMA, "window": _window(report.window), "baseline": _window(report.baseline),
        "generated_at": report.generated_at.isoformat(), "store": report.store, "exit_code": exit_code,
        "counts": {sev: report.count(sev) for sev in SEVERITIES}, "banner": report.banner,
        "findings": [f.to_dict() for f in report.findings], "sections": sections, "timings": report.timings,
    }


def _default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def render(report: Report, exit_code: int | None = None) -> str:
    return json.dumps(document(report, exit_code), indent=2, ensure_ascii=True, default=_default) + "\n"
