"""`egresslens report`: the morning report of a window, as one self-contained HTML file (or Markdown / JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliout import EndOption, JsonOption, SinceOption, StartOption, format_option, resolve_format
from egresslens.cliutil import (
    ArmEndpointOption,
    DbOption,
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
    db: Optional[str] = DbOption,
    since: str = SinceOption,
    start: Optional[str] = StartOption,
    end: Optional[str] = EndOption,
    compare_to: Optional[str] = typer.Option("7d", "--compare-to", metavar="DURATION", help="Comparison window just before the report window (what changed); '' for none."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", help="Output file (default report.html, report.md or report.json); its suffix picks the format when --format is not given."),
    fmt: Optional[str] = format_option(("html", "markdown", "json"), default="html", extra="html has its JSON summary beside it."),
    as_json: bool = JsonOption,
    plotly_js: Optional[str] = typer.Option(None, "--plotly-js", metavar="FILE", help="Load plotly.js from this file, relative to the report, instead of inlining it (4.8 MB); written beside the report when missing. Default: the report is one self-contained file."),
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
    from egresslens.escape import shell
    from egresslens.report import FAIL_ON, FORMATS, SUFFIX, build_report, windows, write
    from egresslens.store import resolve_db_path

    fmt = resolve_format(fmt, as_json, out, FORMATS, default="html")
    if fail_on not in FAIL_ON:
        raise fail(f"--fail-on must be one of {', '.join(FAIL_ON)}", exitcodes.USAGE)
    given, notes = given_estate(db, policy, firewall_id, policy_id, arm_endpoint)
    out = out or Path("report" + SUFFIX[fmt])
    con = open_store(db, read_only=True)
    try:
        try:
            window, baseline = windows(con, since, compare_to or None, end=end, start=start)
        except ValueError as exc:
            raise fail(str(exc), exitcodes.USAGE)
        fw = resolve_firewall(con, window, firewall)
        estate, used = estate_in_force(con, window, given)
        report = build_report(con, window, baseline=baseline, estate=estate, firewall=fw, policy_notes=notes + used,
                              db=str(resolve_db_path(db)),
                              since=(f"--start {shell(start)}" if start else f"--since {since}")
                              + (f" --end {shell(end)}" if end else ""))
    finally:
        con.close()
    code = report.exit_code(fail_on)
    written = write(report, out, fmt, code, plotly_js=plotly_js)
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("critical", "finding", "warning"))
    typer.echo(f"wrote {' and '.join(str(p) for p in written)}: {counts} (exit {code})", err=True)
    raise typer.Exit(code)


def drilldown_command(
    subject: str = typer.Argument(..., help="An FQDN, a destination IP, a source IP or a rule name."),
    kind: str = typer.Option("auto", "--kind", metavar="KIND", help="auto, fqdn, destination (IP), source (IP) or rule."),
    db: Optional[str] = DbOption,
    since: str = SinceOption,
    start: Optional[str] = StartOption,
    end: Optional[str] = EndOption,
    firewall: Optional[str] = FirewallOption,
    policy: Optional[list[Path]] = PolicyFilesOption,
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", help="Output file (default drilldown.html, or standard output for json)."),
    fmt: Optional[str] = format_option(("html", "json"), default="html"),
    as_json: bool = JsonOption,
    plotly_js: Optional[str] = typer.Option(None, "--plotly-js", metavar="FILE", help="Load plotly.js from this file, relative to the page, instead of inlining it."),
) -> None:
    """One subject up close, as an HTML page: the suspicion model's verdict first (a compromised source
    opens with a banner, its evidence and what to do), then its timeline of allowed and denied events,
    sources and ports, DNS history, the rules that matched, the recommendations that touch it and the SNAT
    view of its destination. The notebook notebooks/drilldown-subject.ipynb draws the same figures.

    Exit codes: 0 written, 2 usage, 3 no store, or the subject has no event, DNS query or recommendation in
    the window, 6 busy store (docs/report.md, Drilldown)."""
    import json as _json
    from datetime import datetime, timezone

    from egresslens import atomic, cliout
    from egresslens.cliutil import analysis_window
    from egresslens.escape import plain, shell
    from egresslens.report.drilldown import KINDS, drilldown
    from egresslens.report.html import render_drilldown

    if kind not in ("auto", *KINDS):
        raise fail(f"--kind must be auto or one of {', '.join(KINDS)}", exitcodes.USAGE)
    fmt = resolve_format(fmt, as_json, out, ("html", "json"), default="html")
    given, _ = given_estate(db, policy, firewall_id, policy_id, arm_endpoint)
    from egresslens.recommend.fleet import rules_for

    with analysis_window(db, since, start, end) as (con, window):
        fw = resolve_firewall(con, window, firewall)
        estate, _ = estate_in_force(con, window, given)
        d = drilldown(con, window, subject, kind, policy=rules_for(estate, fw), estate=estate, firewall=fw)
    if d.empty:
        raise fail(f"nothing about {plain(subject)!r} in {window.describe()}: no {d.kind} of that name has an event, "
                   "a DNS query or a recommendation (check the spelling, --kind, or a longer --since)",
                   exitcodes.INPUT_ERROR)
    if fmt == "json":
        cliout.write(_json.dumps(d.to_dict(), indent=2, default=str, ensure_ascii=True) + "\n", out)
        return
    out = out or Path("drilldown.html")
    window_flags = f"--start {shell(start)}" if start else f"--since {since}"
    command = f"egresslens drilldown --kind {d.kind} {shell(subject)} {window_flags}" + (f" --end {shell(end)}" if end else "")
    text = render_drilldown(d, datetime.now(timezone.utc).replace(tzinfo=None), command, plotly_js=plotly_js)
    atomic.write_text(out, text)
    if plotly_js:
        from egresslens.report.html import write_plotly_js

        write_plotly_js(Path(out).parent, plotly_js)
    typer.echo(f"wrote {out}: {plain(d.facts[0])}", err=True)
