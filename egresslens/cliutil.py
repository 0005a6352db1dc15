"""Pieces every command shares: the store and window options, opening both, and one-sentence errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from egresslens import exitcodes

DB_HELP = "Store path (default: $EGRESSLENS_DB, then ./egresslens.duckdb)."
START_HELP = "Window start, ISO 8601 UTC (overrides --since)."
END_HELP = "Window end, ISO 8601 UTC (default: newest data)."
SINCE_HELP = "Window length ending at the newest data (30m, 24h, 7d, 2w)."
WAIT_HELP = "When another process holds the store, wait up to this many seconds for it (default: do not wait)."


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


def fail(message, code: int) -> typer.Exit:
    """Print one sentence to stderr (control characters made visible) and return the Exit to raise."""
    from egresslens.escape import plain

    typer.echo(f"error: {plain(message)}", err=True)
    return typer.Exit(code)


def open_store(db, *, read_only: bool = False, wait: float = 0, query: bool = False):
    """The store (`query`: the sandboxed read-only connection of `egresslens sql`), or an exit in one
    sentence: INPUT_ERROR when missing or unreadable, BUSY when another process holds it (after
    waiting `wait` seconds), USAGE for a bad setting."""
    from egresslens.store import StoreBusy, StoreUnreadable, connect, connect_query

    try:
        return connect_query(db) if query else connect(db, read_only=read_only, wait=wait)
    except (FileNotFoundError, StoreUnreadable) as exc:
        raise fail(exc, exitcodes.INPUT_ERROR) from None
    except StoreBusy as exc:
        raise fail(exc, exitcodes.BUSY) from None
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None


@contextmanager
def analysis_window(db, since: str, start: str | None, end: str | None) -> Iterator[tuple]:
    """The store opened read-only and the observation window: (connection, Window).

    A missing store exits with INPUT_ERROR, a locked one with BUSY, a bad window with USAGE, each in
    one sentence."""
    from egresslens.analyse import resolve_window

    con = open_store(db, read_only=True)
    try:
        try:
            window = resolve_window(con, since=since, start=start, end=end)
        except ValueError as exc:
            raise fail(exc, exitcodes.USAGE)
        yield con, window
    finally:
        con.close()
