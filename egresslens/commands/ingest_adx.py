"""`egresslens ingest adx`: Azure Firewall logs from an Azure Data Explorer (or Fabric Eventhouse) database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import WAIT_HELP, DbOption, fail
from egresslens.commands import ingest_azure


def read_table_map(path: Path) -> dict:
    """A table-mapping file: JSON (or TOML for a .toml name) with a `tables` object of LA name -> ADX name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the table map {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the table map {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict) or not all(
            isinstance(v, str) for v in doc["tables"].values()):
        raise ValueError(f'the table map {path} must hold {{"tables": {{"AZFWNetworkRule": "MyTable", ...}}}}')
    return doc


def ingest_adx(
    cluster: str = typer.Option(..., "--cluster", help="Cluster query URI, e.g. https://mycluster.westeurope.kusto.windows.net (or a Fabric Eventhouse query URI)."),
    database: str = typer.Option(..., "--database", help="Database holding the firewall tables."),
    table: list[str] = typer.Option([], "--table", help="Table name mapping LA_NAME=ADX_NAME, e.g. AZFWNetworkRule=FirewallNetwork (repeat; unmapped tables keep their Log Analytics names)."),
    table_map: Optional[Path] = typer.Option(None, "--table-map", help='JSON (or .toml) file {"tables": {"AZFWNetworkRule": "FirewallNetwork", ...}}; --table overrides it.'),
    since: Optional[str] = ingest_azure.IngestSinceOption,
    start: Optional[str] = ingest_azure.IngestStartOption,
    end: Optional[str] = ingest_azure.IngestEndOption,
    tables: str = ingest_azure.TablesOption,
    mode: str = ingest_azure.mode_option("in the cluster"),
    max_concurrency: int = typer.Option(5, "--max-concurrency", min=1, max=5, help="Parallel queries."),
    firewall: str = typer.Option("", "--firewall", help="Only this firewall's records (its ARM id, the _ResourceId column)."),
    row_cap: int = typer.Option(500_000, "--row-cap", min=1, hidden=True, help="Rows per result before a window is split."),
    db: Optional[Path] = DbOption,
    wait: float = typer.Option(0, "--wait", min=0, help=WAIT_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pull Azure Firewall logs from Azure Data Explorer tables with the Log Analytics schema (needs Database Viewer).

    Incremental by ingestion time: a re-run reads only what arrived since the last one (docs/ingest-adx.md).

    Exit codes: 0 done, 2 bad arguments, 4 Azure refused (credential, access, database, table), 5 some records quarantined, 130 interrupted (the next run resumes).
    """
    from egresslens.sources.adx import AdxSource, AdxTarget, check_cluster, default_settings, parse_mapping

    if mode not in ("raw", "summary"):
        raise fail(f"--mode is raw or summary, not {mode!r}", exitcodes.USAGE)
    try:
        cluster = check_cluster(cluster)
        if not database.strip():
            raise ValueError("--database must name the database")
        mapping = parse_mapping(table, read_table_map(table_map) if table_map else None)
        t0, t1 = ingest_azure.time_range(since, start, end)
    except (ValueError, typer.BadParameter) as exc:
        raise fail(exc, exitcodes.USAGE) from None
    settings = default_settings(row_cap=row_cap, max_concurrency=max_concurrency)
    target = AdxTarget(cluster, database.strip(), firewall=firewall)
    ingest_azure.run_query_source(lambda on_progress: AdxSource(
        ingest_azure.default_credential(), target, tables_map=mapping, start=t0, end=t1, tables=tables, mode=mode,
        settings=settings, on_progress=on_progress), mode=mode, db=db, wait=wait, json_out=json_out, quiet=quiet)


def register(app: typer.Typer) -> None:
    group = next(g.typer_instance for g in app.registered_groups if g.name == "ingest")
    group.command("adx")(ingest_adx)
