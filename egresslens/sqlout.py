"""`egresslens sql` results in every format: a table that fits the terminal, one field per line, CSV,
JSON lines and Markdown. Every value comes from the store and may hold log text: each goes through
the escaping helper of its medium (:mod:`egresslens.escape`)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from egresslens.escape import csv_cell, markdown, plain, terminal


def _text(value: Any) -> str:  # noqa: ANN401
    """A value as a person reads it: numbers without thousands separators (ports and ids stay as logged)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def _kind(values: list[Any]) -> str:
    from egresslens.cliout import KEEP, NUM, TEXT

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in present):
        return NUM
    if present and all(isinstance(v, (datetime, date, time, bool)) for v in present):
        return KEEP
    return TEXT


TEXT_MIN = 24  # a text column narrower than this on screen is harder to read than one field per line


def table(console, names: list[str], rows: list[tuple]) -> None:  # noqa: ANN001 - rich Console
    """A table when every column fits the console (numbers and times whole, text folded to no less than
    TEXT_MIN), else one field per line, as psql's expanded mode does, saying so."""
    from egresslens.cliout import Col, fit_table

    columns = list(zip(*rows)) if rows else [[] for _ in names]
    cols = [Col(n, _kind(list(vals)), priority=len(names) - i, min_width=TEXT_MIN)
            for i, (n, vals) in enumerate(zip(names, columns))]
    body = [[terminal(_text(v)) for v in row] for row in rows]
    t, dropped = fit_table(None, cols, body, console.width)
    count = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    if dropped:
        console.print(line(names, rows, wrap=console.width), markup=False, highlight=False, soft_wrap=True, end="")
        console.print(f"[dim]{count}, one field per line: {len(names)} columns do not fit {console.width} "
                      "columns as a table (--format csv or json for a program)[/dim]")
        return
    console.print(t)
    console.print(f"[dim]{count}[/dim]")


def line(names: list[str], rows: list[tuple], wrap: int | None = None) -> str:
    """One field per line (`name = value`), a blank line between rows; `wrap`: a value longer than the
    screen continues on the next lines under itself."""
    import textwrap

    width = max((len(plain(n)) for n in names), default=0)
    indent = " " * (width + 3)
    out = []
    for i, row in enumerate(rows):
        if i:
            out.append("")
        for n, v in zip(names, row):
            text = f"{plain(n).rjust(width)} = {plain(_text(v))}"
            if wrap and len(text) > wrap and wrap > len(indent) + 10:
                out += textwrap.wrap(text, wrap, subsequent_indent=indent, break_on_hyphens=False) or [text]
            else:
                out.append(text)
    return "\n".join(out) + ("\n" if out else "")


def render(fmt: str, names: list[str], rows: list[tuple]) -> str:
    if fmt == "line":
        return line(names, rows)
    if fmt == "json":
        return "".join(json.dumps(dict(zip(names, row)), default=str, ensure_ascii=True) + "\n" for row in rows)
    if fmt == "markdown":
        out = ["| " + " | ".join(markdown(n) for n in names) + " |", "|" + "---|" * len(names)]
        out += ["| " + " | ".join(markdown(_text(v)) for v in row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(n) for n in names])
    w.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()
