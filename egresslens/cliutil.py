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


# -- the estate: which firewall, and the policy it evaluates -------------------------------------------

FIREWALL_HELP = ("One firewall, by name or ARM id (as the logs carry it). Default: every firewall in the window, "
                 "each judged on its own.")
POLICY_HELP = ("Policy export, repeatable, each recognised by its shape: `az network firewall policy rule-collection-group "
               "list`, `az network firewall policy show` (parent, DNS proxy), `az network ip-group list`, "
               "`az network firewall show` (classic rules), ARM exports.")
FIREWALL_ID_HELP = ("Read the firewall's policy (or classic rules), the policy's parents and the IP Groups its rules use "
                    "from Azure, read-only (DefaultAzureCredential, Reader role); repeatable.")
POLICY_ID_HELP = "Read this firewall policy, its parents and IP Groups from Azure, read-only; repeatable."
ARM_ENDPOINT_HELP = ("Azure Resource Manager endpoint (sovereign clouds: https://management.usgovcloudapi.net, "
                     "https://management.chinacloudapi.cn).")

DbOption = typer.Option(None, "--db", metavar="FILE", help=DB_HELP)
FirewallOption = typer.Option(None, "--firewall", help=FIREWALL_HELP)
PolicyFilesOption = typer.Option(None, "--policy", help=POLICY_HELP)
FirewallIdOption = typer.Option(None, "--firewall-id", help=FIREWALL_ID_HELP)
PolicyIdOption = typer.Option(None, "--policy-id", help=POLICY_ID_HELP)
ArmEndpointOption = typer.Option("https://management.azure.com", "--arm-endpoint", help=ARM_ENDPOINT_HELP)


def read_estate(policy_files=None, firewall_ids=None, policy_ids=None, arm_endpoint: str | None = None,
                parent_policy=None):
    """The estate given on the command line (exports and/or Azure), or None when nothing was given.
    Exits in one sentence: INPUT_ERROR for an unreadable export, USAGE for a malformed id, REMOTE_ERROR
    when Azure says no."""
    from egresslens.estate import PolicyError, load_files
    from egresslens.estate.parse import load_policy

    files, fids, pids = list(policy_files or []), list(firewall_ids or []), list(policy_ids or [])
    if not (files or fids or pids):
        return None
    estate = None
    try:
        if parent_policy is not None:  # `--policy CHILD --parent-policy PARENT`: the second is the first one's parent
            if len(files) != 1:
                raise fail("--parent-policy goes with exactly one --policy", exitcodes.USAGE)
            rules = load_policy(files[0], parent_policy)
            estate = _estate_of(rules)
        elif files:
            estate = load_files(files)
    except PolicyError as exc:
        raise fail(f"cannot read the policy: {exc}", exitcodes.INPUT_ERROR) from None
    if fids or pids:
        from egresslens.estate.arm import read_estate as read_from_azure
        from egresslens.sources.arm import ArmError

        try:
            remote = read_from_azure(fids, pids, endpoint=arm_endpoint or "https://management.azure.com")
        except ValueError as exc:
            if isinstance(exc, PolicyError):
                raise fail(f"cannot read the policy Azure returned: {exc}", exitcodes.INPUT_ERROR) from None
            raise fail(exc, exitcodes.USAGE) from None
        except ArmError as exc:
            raise fail(exc, exitcodes.REMOTE_ERROR) from None
        if estate is None:
            estate = remote
        else:
            estate.merge(remote)
    return estate


def _estate_of(rules):
    """An estate holding exactly the policy chain a RuleSet was read from."""
    from egresslens.estate import Estate

    e = Estate()
    for p in rules.chain:
        e.policies[p.key] = p
    return e


def estate_source(policy_files=None, firewall_ids=None, policy_ids=None) -> str:
    parts = [f"azure: {', '.join(list(firewall_ids or []) + list(policy_ids or []))}"] if (firewall_ids or policy_ids) else []
    return "; ".join(parts + [str(p) for p in policy_files or []])


def save_snapshot(db, estate, source: str) -> str | None:
    """Store the estate as a dated snapshot (when the store exists and can be written now); a note otherwise."""
    from egresslens.estate import snapshots
    from egresslens.store import StoreBusy, StoreUnreadable, connect, resolve_db_path

    if not resolve_db_path(db).exists():
        return None  # opening the store says it is missing
    try:
        con = connect(db)
    except (StoreBusy, StoreUnreadable, FileNotFoundError) as exc:
        return f"the policy snapshot was not stored ({exc})"
    try:
        snapshots.save(con, estate, source)
    finally:
        con.close()
    return None


def estate_in_force(con, window, given):
    """(estate, notes): the estate given, else the snapshot in force at the window's end, else (None, [])."""
    if given is not None:
        return given, []
    from egresslens.estate import snapshots

    snap, note = snapshots.in_force(con, window.end)
    if snap is None:
        return None, []
    return snap.estate, [f"rules from the {snap.describe()}"] + ([note] if note else [])


def resolve_firewall(con, window, ref):
    """The store's value for `--firewall`, or USAGE in one sentence."""
    if not ref:
        return None
    from egresslens import fleet

    try:
        return fleet.resolve(con, window, ref)
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None
