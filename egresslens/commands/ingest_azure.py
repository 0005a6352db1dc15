"""`egresslens ingest loganalytics | metrics | storage`: Azure sources of firewall logs and metrics."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from egresslens import exitcodes
from egresslens.cliutil import WAIT_HELP, DbOption, fail, open_store
from egresslens.escape import plain

console = Console(stderr=True)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_since(text: str) -> timedelta:
    from egresslens.analyse import parse_duration

    try:
        return parse_duration(text.strip().lower())
    except ValueError as exc:
        raise typer.BadParameter(f"--since: {exc}") from None


def parse_when(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r}") from None
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def time_range(since: Optional[str], start: Optional[str], end: Optional[str]) -> tuple[datetime, datetime | None]:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    if start:
        if since:
            raise typer.BadParameter("give either --since or --start/--end, not both")
        return parse_when(start), parse_when(end) if end else None
    if end:
        raise typer.BadParameter("--end needs --start")
    return now - parse_since(since or "24h"), None


# The window of every command that queries Azure (`ingest loganalytics`, `ingest adx`, `ingest metrics`),
# read by `time_range`; and the table choice and mode of the two that query logs.
IngestSinceOption = typer.Option(None, "--since", metavar="DURATION", help="How far back, e.g. 24h, 7d (default 24h).")
IngestStartOption = typer.Option(None, "--start", metavar="TIME", help="Start of the range, ISO 8601 UTC (with --end).")
IngestEndOption = typer.Option(None, "--end", metavar="TIME", help="End of the range (exclusive), ISO 8601 UTC.")
TablesOption = typer.Option("auto", "--tables", help="auto, or a comma list of AZFW* tables / AzureDiagnostics, by their "
                            "Log Analytics names (summary: flows, dns, flows_legacy, dns_legacy).")


def mode_option(where: str):  # noqa: ANN201 - a typer Option
    """`--mode` of a command whose rollups are computed `where` (in the workspace, in the cluster)."""
    return typer.Option("raw", "--mode", help=f"raw (every record) or summary (hourly rollups computed {where}).")


def default_credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _table_progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("windows  {task.fields[rows]:,} rows  {task.fields[note]}"), TimeElapsedColumn(),
                   console=console, transient=False, disable=quiet)
    tasks: dict[str, int] = {}
    rows: dict[str, int] = {}

    def on_progress(event: str, table: str, info: dict) -> None:
        if event == "plan":
            tasks[table] = bar.add_task(table, total=info["windows"] or 1, rows=0, note="",
                                        completed=0 if info["windows"] else 1)
            rows[table] = 0
        elif table in tasks:
            if event == "rows":
                rows[table] += info["rows"]
                bar.update(tasks[table], rows=rows[table])
            elif event == "window":
                bar.advance(tasks[table], 1)
            elif event == "split":
                bar.update(tasks[table], note="(split a capped window)")
            elif event == "retry":
                bar.update(tasks[table], note=f"(retried {info['retries']}x)")

    return bar, on_progress


def ingest_loganalytics(
    workspace_id: Optional[str] = typer.Option(None, "--workspace-id", help="Workspace ID (GUID, the workspace's Overview page)."),
    resource_id: Optional[str] = typer.Option(None, "--resource-id", help="Query one firewall's logs by its ARM resource id instead."),
    since: Optional[str] = IngestSinceOption,
    start: Optional[str] = IngestStartOption,
    end: Optional[str] = IngestEndOption,
    tables: str = TablesOption,
    mode: str = mode_option("in the workspace"),
    max_concurrency: int = typer.Option(5, "--max-concurrency", min=1, max=5, help="Parallel queries (the service runs 5 per identity)."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Query endpoint, e.g. https://api.loganalytics.us for US Gov."),
    firewall: str = typer.Option("", "--firewall", help="Only this firewall's records (its ARM id) within the workspace."),
    row_cap: int = typer.Option(500_000, "--row-cap", min=1, hidden=True, help="Rows per result before a window is split."),
    db: Optional[Path] = DbOption,
    wait: float = typer.Option(0, "--wait", min=0, help=WAIT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pull Azure Firewall logs from a Log Analytics workspace (needs Log Analytics Reader on the workspace).

    Exit codes: 0 done, 2 bad arguments, 4 Azure refused (credential, access, workspace, table), 5 some records quarantined.
    """
    from egresslens.sources.loganalytics import LogAnalyticsSource, Settings, Target

    if bool(workspace_id) == bool(resource_id):
        raise fail("give exactly one of --workspace-id or --resource-id", exitcodes.USAGE)
    if workspace_id and not _GUID.match(workspace_id):
        raise fail(f"--workspace-id must be the workspace ID (a GUID), not {workspace_id!r}", exitcodes.USAGE)
    if resource_id and not resource_id.startswith("/subscriptions/") and not resource_id.lower().startswith("/subscriptions/"):
        raise fail("--resource-id must be an ARM id starting with /subscriptions/", exitcodes.USAGE)
    if mode not in ("raw", "summary"):
        raise fail(f"--mode is raw or summary, not {mode!r}", exitcodes.USAGE)
    try:
        t0, t1 = time_range(since, start, end)
    except typer.BadParameter as exc:
        raise fail(exc, exitcodes.USAGE) from None
    settings = Settings(row_cap=row_cap, max_concurrency=max_concurrency)
    target = Target(workspace_id=workspace_id, resource_id=resource_id, firewall=firewall)
    run_query_source(lambda on_progress: LogAnalyticsSource(
        default_credential(), target, start=t0, end=t1, tables=tables, mode=mode, endpoint=endpoint, settings=settings,
        on_progress=on_progress), mode=mode, db=db, wait=wait, json_out=json_out, quiet=quiet)


def run_query_source(make_source, *, mode: str, db: Optional[Path], wait: float, json_out: bool, quiet: bool) -> None:
    """Run a query source (Log Analytics, Azure Data Explorer: `make_source(on_progress)`) as a command: its
    progress bars, one sentence and exit code 4 for what Azure refused, 2 for a bad argument, 130 on Ctrl-C,
    the run's last line, and exit 5 when records were quarantined."""
    from egresslens import ingest
    from egresslens.sources.loganalytics import LogAnalyticsError

    con = open_store(db, wait=wait)
    bar, on_progress = _table_progress(quiet or json_out)
    try:
        source = make_source(on_progress)
        with bar:
            stats = source.summary(ingest.run(con, source))
    except LogAnalyticsError as exc:  # and AdxError, one of them
        raise fail(exc, exitcodes.REMOTE_ERROR) from None
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    except KeyboardInterrupt:
        raise _interrupted()
    else:
        _print_unknown_categories(con, stats.run_id, json_out)
    finally:
        con.close()
    print_query_run(stats, mode, json_out)
    raise typer.Exit(exitcodes.PARTIAL if stats.counts.quarantined else exitcodes.OK)


def print_query_run(stats, mode: str, json_out: bool) -> None:
    """The last line of a query source's run (Log Analytics, Azure Data Explorer): JSON, or one sentence."""
    summary = {"run_id": stats.run_id, "mode": mode, **stats.as_dict()}
    if json_out:
        print(json.dumps(summary))
    else:
        what = f"{stats.rollups:,} rollups" if mode == "summary" else stats.counts.summary()
        print(f"run {summary['run_id']}: {stats.rows:,} rows in {stats.windows} windows "
              f"({stats.windows_skipped} already done, {stats.splits} splits), {stats.queries} queries, "
              f"{stats.retries} retries, {stats.bytes:,} bytes; {what}")


def ingest_metrics(
    resource_id: list[str] = typer.Option(..., "--resource-id", help="Firewall ARM id (repeat for several, same region)."),
    endpoint: str = typer.Option(..., "--endpoint", help="Regional metrics endpoint, e.g. https://westeurope.metrics.monitor.azure.com."),
    since: Optional[str] = IngestSinceOption,
    start: Optional[str] = IngestStartOption,
    end: Optional[str] = IngestEndOption,
    grain: int = typer.Option(1, "--grain-minutes", min=1, help="Time grain in minutes."),
    db: Optional[Path] = DbOption,
    wait: float = typer.Option(0, "--wait", min=0, help=WAIT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Firewall platform metrics (SNATPortUtilization, Throughput, rule hits, health) into `metrics` (needs Monitoring Reader)."""
    from egresslens import ingest
    from egresslens.sources.metrics import MetricsError, MetricsSource

    try:
        t0, t1 = time_range(since, start, end)
    except typer.BadParameter as exc:
        raise fail(exc, exitcodes.USAGE) from None
    con = open_store(db, wait=wait)
    try:
        source = MetricsSource(default_credential(), resource_id, endpoint=endpoint, start=t0,
                               end=t1 or datetime.now(timezone.utc).replace(tzinfo=None),
                               granularity=timedelta(minutes=grain))
        out = source.summary(ingest.run(con, source))
    except MetricsError as exc:
        raise fail(exc, exitcodes.REMOTE_ERROR) from None
    finally:
        con.close()
    print(json.dumps(out) if json_out else
          f"run {out['run_id']}: {out['points']:,} metric points ({plain(', '.join(out['metrics']))}) in {out['calls']} calls")


def register(app: typer.Typer) -> None:
    ingest = next(g.typer_instance for g in app.registered_groups if g.name == "ingest")
    ingest.command("loganalytics")(ingest_loganalytics)
    ingest.command("metrics")(ingest_metrics)
    if _STORAGE is not None:
        ingest.command("storage")(_STORAGE)


def ingest_storage(
    account_url: Optional[str] = typer.Option(None, "--account-url", help="https://<account>.blob.core.windows.net (a SAS token may follow '?')."),
    container: str = typer.Option(..., "--container", help="Archive container, e.g. insights-logs-azfwnetworkrule."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Only blobs whose name starts with this, e.g. resourceId=/SUBSCRIPTIONS/<sub>/.../y=2026/m=03/."),
    since: Optional[str] = typer.Option(None, "--since", help="Only blobs filed in the last 24h, 7d, ... (by the y=/m=/d=/h= in their names)."),
    connection_string: Optional[str] = typer.Option(None, "--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", show_default=False,
                                                    help="Account connection string (key or SAS) instead of Azure sign-in; prefer the env var AZURE_STORAGE_CONNECTION_STRING."),
    force: bool = typer.Option(False, "--force", help="Re-read every blob from the start (duplicates are still skipped)."),
    db: Optional[Path] = DbOption,
    wait: float = typer.Option(0, "--wait", min=0, help=WAIT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Pull the firewall's storage-account archive (PT1H.json blobs) incrementally (needs Storage Blob Data Reader).

    Exit codes: 0 done, 2 bad arguments, 4 Azure refused (credential, access, container), 5 some records quarantined.
    """
    from egresslens.analyse import parse_duration
    from egresslens.cliutil import byte_progress
    from egresslens import ingest, redact
    from egresslens.sources.storage import StorageError, StorageSource, container_client

    try:
        since_delta = parse_duration(since) if since else None
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None

    try:
        client = container_client(container, account_url=account_url, connection_string=connection_string)
    except StorageError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    bar, start = byte_progress("storage", console, quiet=quiet or json_out)

    con = open_store(db, wait=wait)
    try:
        with bar, client:
            source = StorageSource(client, prefix, since=since_delta)
            stats = source.summary(ingest.run(con, source, force=force, progress=start))
    except StorageError as exc:
        raise fail(exc, exitcodes.REMOTE_ERROR) from None
    except KeyboardInterrupt:
        raise _interrupted()
    else:
        _print_unknown_categories(con, stats.run_id, json_out)
    finally:
        con.close()
    if json_out:
        print(json.dumps(stats.as_dict()))
    else:
        c = stats.counts
        per_table = ", ".join(f"{k} {v:,}" for k, v in sorted(c.per_table.items()))
        where = redact.url(account_url) if account_url else client.account_name
        print(f"run {stats.run_id}: {stats.blobs} blobs in {plain(where)}/{plain(container)} ({stats.unchanged} unchanged, "
              f"{stats.appended} appended, {stats.rewritten} rewritten), {stats.bytes_downloaded:,} bytes in "
              f"{stats.requests} requests: {c.summary()}" + (f" [{per_table}]" if per_table else ""))
    raise typer.Exit(exitcodes.PARTIAL if stats.counts.quarantined else exitcodes.OK)


def _interrupted() -> typer.Exit:
    typer.echo("interrupted, the next run resumes", err=True)
    return typer.Exit(exitcodes.INTERRUPTED)


def _print_unknown_categories(con, run_id: int, json_out: bool) -> None:
    from egresslens import escape
    from egresslens.ingest import unknown_categories, unknown_categories_line

    line = unknown_categories_line(unknown_categories(con, run_id))
    if line and not json_out:
        typer.echo(escape.plain(line), err=True)


_STORAGE = ingest_storage
