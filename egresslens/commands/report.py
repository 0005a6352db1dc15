"""`egresslens report`: the morning report of a window, as one self-contained HTML file (or Markdown / JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import (
    DB_HELP,
    ArmEndpointOption,
    FirewallIdOption,
    FirewallOption,
    PolicyFilesOption,
    PolicyIdOption,
    estate_in_force,
    estate_source,
    fail,
    open_store,
    read_estate,
    resolve_firewall,
    save_snapshot,
)

FAIL_ON_HELP = ("finding (default): exit 1 on findings; warning: warnings count too; critical: only critical "
                "findings fail. Critical findings always exit 7.")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("drilldown")(drilldown_command)


def given_estate(db, policy, firewall_id, policy_id, arm_endpoint):  # noqa: ANN001, ANN201
    """The estate given on the command line, stored as a snapshot; (estate or None, notes)."""
    estate = read_estate(policy, firewall_id, policy_id, arm_endpoint)
    notes = []
    if estate is not None:
        note = save_snapshot(db, estate, estate_source(policy, firewall_id, policy_id))
        notes += [note] if note else []
    return estate, notes


def report_command(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("24h", "--since", help="Report window, ending at the newest data (24h, 7d, 30d)."),
    compare_to: Optional[str] = typer.Option("7d", "--compare-to", help="Comparison window just before the report window (what changed); '' for none."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file (default report.html / report.md / report.json)."),
    fmt: str = typer.Option("html", "--format", "-f", help="html (with a JSON summary beside it), markdown or json."),
    firewall: Optional[str] = FirewallOption,
    policy: Optional[list[Path]] = PolicyFilesOption,
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    fail_on: str = typer.Option("finding", "--fail-on", help=FAIL_ON_HELP),
) -> None:
    """The morning report: freshness, egress over time, what changed, top denied destinations with their fix,
    rules to narrow or remove, SNAT, DNS health, threat-intel and IDPS events.

    With several firewalls the report opens with a table of them, each judged against the policy it uses (from --policy, --firewall-id / --policy-id, or the snapshot in force); with a policy it says what changed since the day before.

    Exit codes: 0 nothing to act on, 1 findings, 7 critical findings (SNAT over critical, threat-intel/IDPS
    hits, a compromised source, a dependency newly denied that was allowed before), 2 usage, 3 unreadable input or policy, 4 Azure refused, 6 busy store."""
    from egresslens.report import FAIL_ON, FORMATS, SUFFIX, build_report, windows, write
    from egresslens.store import resolve_db_path

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", exitcodes.USAGE)
    if fail_on not in FAIL_ON:
        raise fail(f"--fail-on must be one of {', '.join(FAIL_ON)}", exitcodes.USAGE)
    given, notes = given_estate(db, policy, firewall_id, policy_id, arm_endpoint)
    out = out or Path("report" + SUFFIX[fmt])
    con = open_store(db, read_only=True)
    try:
        try:
            window, baseline = windows(con, since, compare_to or None)
        except ValueError as exc:
            raise fail(str(exc), exitcodes.USAGE)
        fw = resolve_firewall(con, window, firewall)
        estate, used = estate_in_force(con, window, given)
        report = build_report(con, window, baseline=baseline, estate=estate, firewall=fw, policy_notes=notes + used,
                              db=str(resolve_db_path(db)), since=since)
    finally:
        con.close()
    code = report.exit_code(fail_on)
    written = write(report, out, fmt, code)
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("critical", "finding", "warning"))
    typer.echo(f"wrote {' and '.join(str(p) for p in written)}: {counts} (exit {code})", err=True)
    raise typer.Exit(code)


def drilldown_command(
    subject: str = typer.Argument(..., help="An FQDN, a destination IP, a source IP or a rule name."),
    kind: str = typer.Option("auto", "--kind", help="auto, fqdn, destination (IP), source (IP) or rule."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("24h", "--since", help="Window, ending at the newest data (24h, 7d)."),
    firewall: Optional[str] = FirewallOption,
    policy: Optional[list[Path]] = PolicyFilesOption,
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output HTML file (default drilldown.html)."),
) -> None:
    """One subject up close, as an HTML page: its timeline of allowed and denied events, sources and ports,
    DNS history, the rules that matched, the recommendations that touch it and the SNAT view of its destination.
    The notebook notebooks/drilldown-subject.ipynb draws the same figures."""
    from datetime import datetime, timezone

    from egresslens import atomic
    from egresslens.cliutil import analysis_window
    from egresslens.escape import shell
    from egresslens.report.drilldown import KINDS, drilldown
    from egresslens.report.html import render_drilldown

    if kind not in ("auto", *KINDS):
        raise fail(f"--kind must be auto or one of {', '.join(KINDS)}", exitcodes.USAGE)
    given, _ = given_estate(db, policy, firewall_id, policy_id, arm_endpoint)
    out = out or Path("drilldown.html")
    from egresslens import fleet
    from egresslens.recommend.fleet import rules_for

    with analysis_window(db, since, None, None) as (con, window):
        fw = resolve_firewall(con, window, firewall)
        estate, _ = estate_in_force(con, window, given)
        with fleet.scoped(con, fw):
            d = drilldown(con, window, subject, kind, policy=rules_for(estate, fw))
    command = f"egresslens drilldown --kind {d.kind} {shell(subject)} --since {since}"
    atomic.write_text(out, render_drilldown(d, datetime.now(timezone.utc).replace(tzinfo=None), command))
    typer.echo(f"wrote {out}: {d.facts[0]}", err=True)
