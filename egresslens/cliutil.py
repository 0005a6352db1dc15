"""Pieces every command shares: the store and window options, opening both, and one-sentence errors."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer
import typer.exceptions

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


# exits the command chose, and usage errors click/typer print themselves
_PASS_THROUGH = (typer.Exit, typer.Abort, typer.exceptions.TyperException, click.exceptions.Exit,
                 click.exceptions.Abort, click.ClickException)


def guarded(command):  # noqa: ANN001, ANN201 - a command function, and the same with its failures mapped
    """`command` with every failure that reaches it turned into one sentence and its exit code
    (:func:`egresslens.errors.classify`): never a traceback, never the findings code. The CLI wraps
    every command in it."""
    if getattr(command, "__guarded__", False):
        return command

    @functools.wraps(command)
    def run(*args, **kwargs):  # noqa: ANN202
        from egresslens import errors

        try:
            return command(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - each is classified, none is lost
            if errors.debug() and not isinstance(exc, KeyboardInterrupt):
                raise
            code, message = errors.classify(exc)
            raise fail(message, code) from None

    run.__guarded__ = True
    return run


def guard_all(app: typer.Typer) -> None:
    """Wrap every command of `app` (and of its sub-apps) in :func:`guarded`."""
    for info in app.registered_commands:
        info.callback = guarded(info.callback)
    for group in app.registered_groups:
        guard_all(group.typer_instance)


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
