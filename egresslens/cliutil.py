"""Pieces every analysis command shares: the store and window options, and opening both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from egresslens import exitcodes

DB_HELP = "Store path (default: $EGRESSLENS_DB, then ./egresslens.duckdb)."
START_HELP = "Window start, ISO 8601 UTC (overrides --since)."
END_HELP = "Window end, ISO 8601 UTC (default: newest data)."
SINCE_HELP = "Window length ending at the newest data (30m, 24h, 7d, 2w)."


def byte_progress(description: str, console, *, quiet: bool = False):
    """A rich progress bar over bytes and the `progress` callback the readers accept:
    `start(total_bytes)` returns `advance(n_bytes)`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn(f"[bold]{description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console, transient=True, disable=quiet,
    )

    def start(total: int):
        task = bar.add_task(description, total=total or None)
        return lambda n: bar.advance(task, n)

    return bar, start


def fail(message: str, code: int) -> typer.Exit:
    """Print one sentence to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def analysis_window(db, since: str, start: str | None, end: str | None) -> Iterator[tuple]:
    """The store opened read-only and the observation window: (connection, Window).

    A missing store exits with INPUT_ERROR, a bad window with USAGE, each in one sentence."""
    from egresslens.analyse import resolve_window
    from egresslens.store import connect

    try:
        con = connect(db, read_only=True)
    except FileNotFoundError as exc:
        raise fail(str(exc), exitcodes.INPUT_ERROR)
    try:
        try:
            window = resolve_window(con, since=since, start=start, end=end)
        except ValueError as exc:
            raise fail(str(exc), exitcodes.USAGE)
        yield con, window
    finally:
        con.close()
