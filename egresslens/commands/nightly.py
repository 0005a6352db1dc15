"""`egresslens nightly`: incremental ingest, then the report, in one locked run (for cron, Kubernetes, CI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from egresslens import cliout, exitcodes
from egresslens.cliutil import (
    ArmEndpointOption,
    DbOption,
    FirewallIdOption,
    PolicyFilesOption,
    PolicyIdOption,
    estate_source,
    fail,
    read_estate,
)
from egresslens.commands.report import FAIL_ON_HELP

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def register(app: typer.Typer) -> None:
    app.command("nightly")(nightly_command)


def nightly_command(
    out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Where the dated reports, latest.html and latest.json go (formerly --out-dir)."),
    db: Optional[str] = DbOption,
    files: Optional[list[Path]] = typer.Option(None, "--files", help="Ingest these files or directories first (repeatable)."),
    workspace_id: Optional[str] = typer.Option(None, "--workspace-id", help="Ingest from this Log Analytics workspace first (DefaultAzureCredential)."),
    adx_cluster: Optional[str] = typer.Option(None, "--adx-cluster", help="Ingest from this Azure Data Explorer cluster (or Fabric Eventhouse query URI) first, with --adx-database."),
    adx_database: Optional[str] = typer.Option(None, "--adx-database", help="The database for --adx-cluster."),
    adx_table_map: Optional[Path] = typer.Option(None, "--adx-table-map", help='Table names for --adx-cluster: {"tables": {"AZFWNetworkRule": "MyTable", ...}} (JSON or .toml).'),
    account_url: Optional[str] = typer.Option(None, "--account-url", help="Ingest the storage-account archive first (with --container)."),
    container: Optional[list[str]] = typer.Option(None, "--container", help="Archive container for --account-url (repeatable), e.g. insights-logs-azfwnetworkrule."),
    since: str = typer.Option("24h", "--since", help="Report window (and how far back to ingest)."),
    compare_to: Optional[str] = typer.Option("7d", "--compare-to", help="Comparison window before the report window; '' for none."),
    policy: Optional[list[Path]] = PolicyFilesOption,
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    fail_on: str = typer.Option("finding", "--fail-on", help=FAIL_ON_HELP),
    keep_days: int = typer.Option(30, "--keep-days", min=1, help="Delete dated reports older than this."),
    self_contained: bool = typer.Option(False, "--self-contained", help="Each report carries its own plotly.js (4.8 MB) instead of sharing one file beside them."),
    as_json: bool = cliout.JsonOption,
) -> None:
    """Ingest what is new, then write the report: OUT/reports/egresslens-<UTC time>.html (+ .json) and
    OUT/latest.html (+ latest.json). One run at a time (a lock in OUT). The reports share one plotly.js
    (plotly-<version>.min.js beside them) unless --self-contained; with --json the run's outcome is printed
    as JSON.

    With --firewall-id / --policy-id the policy is read from Azure every night and kept as a dated snapshot, so each report is judged against the policy as it was and says what changed since the day before.

    Exit codes: as `report` (0, 1, 7); 6 another run holds the lock or the store; 3 or 4 the ingest (or reading
    the policy from Azure) failed (the report is still written, saying so, and shows the last good data)."""
    from egresslens.analyse import parse_duration
    from egresslens.nightly import Busy, NightlyOptions, run_nightly
    from egresslens.report import FAIL_ON

    if fail_on not in FAIL_ON:
        raise fail(f"--fail-on must be one of {', '.join(FAIL_ON)}", exitcodes.USAGE)
    if workspace_id and not _GUID.match(workspace_id):
        raise fail(f"--workspace-id must be the workspace ID (a GUID), not {workspace_id!r}", exitcodes.USAGE)
    adx_tables: dict[str, str] = {}
    if adx_cluster or adx_database or adx_table_map:
        from egresslens.commands.ingest_adx import read_table_map
        from egresslens.sources.adx import check_cluster, parse_mapping

        try:
            if not (adx_cluster and adx_database and adx_database.strip()):
                raise ValueError("--adx-cluster and --adx-database go together")
            adx_cluster = check_cluster(adx_cluster)
            adx_tables = parse_mapping([], read_table_map(adx_table_map) if adx_table_map else None)
        except ValueError as exc:
            raise fail(exc, exitcodes.USAGE) from None
    if account_url and not container:
        raise fail("--account-url needs at least one --container (e.g. insights-logs-azfwnetworkrule)", exitcodes.USAGE)
    try:
        parse_duration(since)
        if compare_to:
            parse_duration(compare_to)
    except ValueError as exc:
        raise fail(str(exc), exitcodes.USAGE)
    from egresslens.estate.arm import check_ids

    try:
        check_ids(firewall_id or [], policy_id or [])
    except ValueError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    opts = NightlyOptions(out_dir=out_dir, db=db, files=list(files or []), workspace_id=workspace_id,
                          adx_cluster=adx_cluster, adx_database=adx_database.strip() if adx_database else None,
                          adx_tables=adx_tables,
                          account_url=account_url, containers=list(container or []), since=since,
                          compare_to=compare_to or None, estate=read_estate(policy), fail_on=fail_on,
                          keep_days=keep_days, firewall_ids=list(firewall_id or []), policy_ids=list(policy_id or []),
                          arm_endpoint=arm_endpoint, policy_source=estate_source(policy, firewall_id, policy_id),
                          shared_plotly=not self_contained)
    try:
        result = run_nightly(opts)
    except Busy as exc:
        raise fail(str(exc), exitcodes.BUSY)
    if as_json:
        import json

        typer.echo(json.dumps({"exit_code": result.code, "written": [str(p) for p in result.written],
                               "ingest": result.ingest, "error": result.error}, ensure_ascii=True))
    for line in result.ingest:
        typer.echo(f"ingest {line}", err=True)
    if result.error:
        typer.echo(f"error: {result.error}; the report says so and shows the last good ingest", err=True)
    typer.echo(f"wrote {result.written[0]} and {out_dir / 'latest.html'} (exit {result.code})", err=True)
    raise typer.Exit(result.code)
