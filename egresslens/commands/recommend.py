"""`egresslens recommend`: least-privilege rule changes with evidence, per firewall, as Markdown, JSON, az,
a policy draft, Terraform or Bicep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import (
    DB_HELP,
    END_HELP,
    SINCE_HELP,
    START_HELP,
    ArmEndpointOption,
    FirewallIdOption,
    FirewallOption,
    PolicyFilesOption,
    PolicyIdOption,
    analysis_window,
    estate_in_force,
    estate_source,
    fail,
    read_estate,
    resolve_firewall,
    save_snapshot,
)
from egresslens.escape import plain

FORMATS = ("markdown", "json", "az", "draft", "terraform", "bicep")


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)


def recommend_command(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("7d", "--since", help=SINCE_HELP),
    start: Optional[str] = typer.Option(None, "--start", help=START_HELP),
    end: Optional[str] = typer.Option(None, "--end", help=END_HELP),
    firewall: Optional[str] = FirewallOption,
    policy: Optional[list[Path]] = PolicyFilesOption,
    parent_policy: Optional[Path] = typer.Option(None, "--parent-policy", help="Parent policy of the one --policy (same formats); its groups are evaluated first."),
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config: sections sources (name = list of CIDRs), thresholds, output (see README.md, 'Config')."),
    service_tags: Optional[Path] = typer.Option(None, "--service-tags", help="Azure Service Tags JSON (ServiceTags_Public_*.json) to map IPs to tags."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown | json | az | draft (a policy draft to review and deploy) | terraform | bicep."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of standard output."),
    what_if: bool = typer.Option(False, "--what-if", help="Replay the window's flows through the policy plus the proposals and show what changes."),
) -> None:
    """Least-privilege Azure Firewall rule changes from denied and allowed traffic, with evidence, for every
    firewall in the window (each against the rules it evaluates; a need every child of a parent policy shares
    goes to the parent once). The policy comes from --policy exports, from Azure (--firewall-id, --policy-id;
    each read is kept in the store as a dated snapshot), or from the snapshot in force for the window.

    Exit codes: 0 nothing needs attention, 1 recommendations, 2 usage, 3 unreadable input or policy, 4 Azure refused, 6 busy store."""
    from egresslens.recommend import Config, ConfigError, ServiceTags, recommend_fleet

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", exitcodes.USAGE)
    try:
        cfg = Config.from_toml(config) if config else Config()
    except ConfigError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    try:
        tags = ServiceTags.load(service_tags) if service_tags else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"cannot read input: {exc}", exitcodes.INPUT_ERROR) from None
    given = read_estate(policy, firewall_id, policy_id, arm_endpoint, parent_policy)
    notes = []
    if given is not None:
        note = save_snapshot(db, given, estate_source(policy, firewall_id, policy_id))
        notes += [note] if note else []
    with analysis_window(db, since, start, end) as (con, window):
        fw = resolve_firewall(con, window, firewall)
        estate, used = estate_in_force(con, window, given)
        recs = recommend_fleet(con, window, estate, firewall=fw, config=cfg, service_tags=tags, what_if=what_if)
    recs.warnings = notes + used + recs.warnings
    text = render(recs, fmt, what_if=what_if)
    if out:
        from egresslens import atomic

        atomic.write_text(out, text)
        typer.echo(f"wrote {len(recs.items)} recommendation(s) as {fmt} to {plain(out)}", err=True)
    else:
        typer.echo(text, nl=False)
    raise typer.Exit(exitcodes.FINDINGS if any(r.kind != "investigate" or r.risk == "high" for r in recs.items) else exitcodes.OK)


def render(recs, fmt: str, what_if: bool = False) -> str:
    from egresslens.recommend import emit_az, emit_bicep, emit_draft, emit_json, emit_terraform, markdown

    if fmt == "json":
        return emit_json.emit(recs)
    if fmt == "az":
        return emit_az.emit(recs)
    if fmt == "draft":
        return emit_draft.emit(recs)
    if fmt == "terraform":
        return emit_terraform.emit(recs)
    if fmt == "bicep":
        return emit_bicep.emit(recs)
    return markdown.emit(recs, what_if=what_if)
