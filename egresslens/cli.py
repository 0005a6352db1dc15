"""The `egresslens` command line: a thin layer over the library (`egresslens.*`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from egresslens import cliout, escape, exitcodes, store
from egresslens.cliutil import WAIT_HELP, DbOption, byte_progress, fail, guard_all, open_store
from egresslens.commands import register_all
from egresslens.escape import plain, terminal

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    cls=cliout.Group,
)
ingest_app = typer.Typer(help="Load Azure Firewall logs into the store.", no_args_is_help=True, cls=cliout.Group)
app.add_typer(ingest_app, name="ingest")


@app.callback()
def main(version: bool = cliout.VersionOption, no_color: bool = cliout.NoColorOption) -> None:
    """EgressLens: Azure Firewall logs in, least-privilege egress rules and SNAT warnings out. Every command
    takes --help, --version, --no-color (or NO_COLOR=1) and, where it prints, --format, --json and --out;
    the documentation is in docs/ (docs/getting-started.md first)."""
    cliout.app_options(version, no_color)

console = Console(stderr=True)
# Azure SDK warnings (a dozen lines per failed credential) would repeat, at length, what the command's
# one-sentence error already says; they still reach any handler a caller configures.
logging.getLogger("azure").addHandler(logging.NullHandler())


@ingest_app.command("files")
def ingest_files(
    paths: list[Path] = typer.Argument(..., help="Files or directories (searched recursively)."),
    db: Optional[Path] = DbOption,
    force: bool = typer.Option(False, "--force", help="Re-read files already ingested (duplicates are still skipped)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    wait: float = typer.Option(0, "--wait", min=0, help=WAIT_HELP),
) -> None:
    """Ingest storage-archive trees (PT1H.json), Event Hub bodies, Log Analytics CSV/JSON exports, gzip of any.

    A file that is no log (binary, unreadable, a database) is skipped with one line saying why; the
    others are ingested. Exit codes: 0 all records stored or already present, 5 some records quarantined
    or some files skipped, 3 input missing, 6 another process holds the store, 130 interrupted (Ctrl-C;
    the next run resumes).
    """
    from egresslens.ingest import ingest_files
    from egresslens.ingest import unknown_categories, unknown_categories_line

    con = open_store(db, wait=wait)
    bar, start = byte_progress("ingest", console, quiet=quiet or json_out)
    try:
        with bar:
            counts, results, run_id = ingest_files(con, paths, force=force, progress=start)
        unknown = unknown_categories(con, run_id)
    except FileNotFoundError as exc:
        raise fail(exc, exitcodes.INPUT_ERROR) from None
    except KeyboardInterrupt:
        typer.echo("interrupted, the next run resumes", err=True)
        raise typer.Exit(exitcodes.INTERRUPTED) from None
    finally:
        con.close()
    unchanged = sum(r.skipped for r in results)
    troubled = [r for r in results if r.problem]
    for r in troubled:
        verb = "skipped " if r.fmt == "skipped" else ""
        typer.echo(escape.plain(f"{verb}{r.path}: {r.problem}"), err=True)
    for r in results:
        if r.waiting:
            typer.echo(escape.plain(f"{r.path}: last line incomplete (still being written?), read on a later run"),
                       err=True)
    if not json_out and unknown:
        typer.echo(escape.plain(unknown_categories_line(unknown)), err=True)
    if json_out:
        print(json.dumps({"run_id": run_id, "files": len(results), "files_unchanged": unchanged,
                          "files_skipped": [{"path": r.path, "reason": r.problem} for r in results if r.fmt == "skipped"],
                          "records_read": counts.read, "stored": counts.stored, "duplicates": counts.duplicates,
                          "quarantined": counts.quarantined, "stored_per_table": counts.per_table,
                          "unknown_categories": unknown}))
    else:
        per_table = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.per_table.items()))
        skipped = sum(r.fmt == "skipped" for r in results)
        print(f"run {run_id}: {len(results)} files ({unchanged} unchanged"
              + (f", {skipped} skipped" if skipped else "") + f"): {counts.summary()}"
              + (f" [{per_table}]" if per_table else ""))
    raise typer.Exit(exitcodes.PARTIAL if counts.quarantined or troubled else exitcodes.OK)


SQL_FORMATS = ("table", "line", "csv", "json", "markdown")


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help="One read-only query on the store (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA)."),
    db: Optional[Path] = DbOption,
    fmt: Optional[str] = cliout.format_option(SQL_FORMATS, extra="line: one field per line, for wide rows; json: one object per line."),
    as_json: bool = cliout.JsonOption,
    out: Optional[Path] = cliout.OutOption,
) -> None:
    """Run one read-only query on the store: `egresslens sql "SELECT action, count(*) FROM flows GROUP BY 1"`.

    Nothing but the store can be read and nothing can be written: no ATTACH, COPY, EXPORT, INSTALL or
    LOAD, no file or URL functions, no SET, one statement per call (docs/security.md). A table too wide for
    the terminal is shown one field per line instead, and says so (--format line asks for that form).
    Exit codes: 0 done, 2 the query was refused or failed, 3 no store, 6 another process holds the store."""
    from egresslens import sqlout

    fmt = cliout.resolve_format(fmt, as_json, out, SQL_FORMATS)
    con = open_store(db, query=True)
    try:
        names, rows = store.run_query(con, query)
    except store.RefusedQuery as exc:
        raise fail(exc, exitcodes.USAGE) from None
    finally:
        con.close()
    if not names:
        return
    if fmt == "table":
        cliout.show(lambda c: sqlout.table(c, names, rows), out)
    else:  # one field per line is for people: long values folded to the screen (80 columns in a file)
        wrap = (cliout.console().width if out is None else cliout.FILE_WIDTH) if fmt == "line" else None
        cliout.write(sqlout.render(fmt, names, rows, wrap=wrap), out)


@app.command("simulate")
def simulate(
    out: Path = typer.Option(..., "--out", help="Directory to write into."),
    hours: int = typer.Option(24, "--hours", min=1),
    events_per_hour: int = typer.Option(10_000, "--events-per-hour", min=1),
    seed: int = typer.Option(7, "--seed"),
    fmt: str = typer.Option("structured", "--format", help="structured, legacy or both."),
    layout: str = typer.Option("storage", "--layout", help="storage, eventhub or csv."),
    start: Optional[str] = typer.Option(None, "--start", help="First hour, ISO 8601 UTC (default: now - hours)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    incident: bool = typer.Option(False, "--incident", help="Add an incident: tunnelling, a C2 beacon and its bare address, a DGA burst, a second pod that reaches the C2 and uploads, a typosquat (docs/suspicion.md)."),
    batch_job: bool = typer.Option(False, "--batch-job", help="Add the VM spoke's nightly backup: ~1,100 new connections a minute to one storage account for 20 minutes, over the SNAT warning level of one public IP (docs/getting-started.md)."),
    firewalls: int = typer.Option(1, "--firewalls", min=1, help="Simulate an estate of N firewalls (2-10): a parent policy, child policies, IP Groups and one classic firewall; logs under OUT/logs/<firewall>, exports under OUT/estate (docs/estate.md)."),
) -> None:
    """Write realistic Azure Firewall logs of an AKS hub-and-spoke deployment, plus truth.json and policy.json
    (with --firewalls N: an estate of N firewalls and its policy exports)."""
    from egresslens.analyse import parse_time
    from egresslens.simulate import simulate_estate_to_dir, simulate_to_dir

    if fmt not in ("structured", "legacy", "both") or layout not in ("storage", "eventhub", "csv"):
        raise fail("--format is structured|legacy|both and --layout storage|eventhub|csv", exitcodes.USAGE)
    kw = dict(hours=hours, events_per_hour=events_per_hour, seed=seed, fmt=fmt, layout=layout,
              start=parse_time(start) if start else None, incident=incident)
    if batch_job and firewalls > 1:
        raise fail("--batch-job simulates one firewall: leave out --firewalls", exitcodes.USAGE)
    try:
        summary = simulate_estate_to_dir(out, firewalls, **kw) if firewalls > 1 else simulate_to_dir(out, batch=batch_job, **kw)
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    if json_out:
        print(json.dumps(summary, default=str))
    else:
        print(f"wrote {plain(out)}: " + ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (list, dict))))


@app.command("demo")
def demo(
    directory: Path = typer.Option(Path("demo-output"), "--out", "-o", metavar="DIR", help="Where the simulated logs, the store and the report go."),
    events_per_hour: int = typer.Option(20_000, "--events-per-hour", min=100),
    seed: int = typer.Option(7, "--seed"),
) -> None:
    """Offline demo: simulate a day of a busy AKS egress firewall, ingest it, analyse it, and say what it shows: a
    SNAT warning, a compromised pod, rules to narrow. Writes the report and the compromised pod's drilldown
    beside the store; the README's quick start goes on from there."""
    from egresslens.demo import run_demo

    try:
        code = run_demo(directory, events_per_hour=events_per_hour, seed=seed, console=cliout.console(),
                        progress=lambda description: byte_progress(description, console))
    except store.StoreBusy as exc:
        raise fail(exc, exitcodes.BUSY) from None
    except store.StoreUnreadable as exc:
        raise fail(exc, exitcodes.INPUT_ERROR) from None
    raise typer.Exit(code)


register_all(app)
cliout.ALIASES.update({"demo": {"--dir": "--out"}, "nightly": {"--out-dir": "--out"}})  # the old spellings
guard_all(app)  # every failure: one sentence and its own exit code (egresslens.errors)
cliout.finish(app)  # every command: --version, --no-color, help that wraps, old spellings as hidden aliases

if __name__ == "__main__":
    app()
