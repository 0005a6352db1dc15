"""`egresslens recommend`: least-privilege rule changes with evidence, per firewall: one line each in a
terminal, most urgent first (`recommend show ID` for one with all its evidence), or all of them as
Markdown, JSON, az, a policy draft, Terraform or Bicep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliout import EndOption, JsonOption, OutOption, SinceOption, StartOption, format_option, resolve_format, show, write
from egresslens.cliutil import (
    ArmEndpointOption,
    DbOption,
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

FORMATS = ("table", "markdown", "json", "az", "draft", "terraform", "bicep")


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)


def recommend_command(
    words: Optional[list[str]] = typer.Argument(None, metavar="[show ID]", show_default=False,
                                                help="`show ID`: one recommendation with all its evidence (also --id)."),
    rec_id: Optional[str] = typer.Option(None, "--id", metavar="ID", help="Only this recommendation (its id, or the start of it), with all its evidence."),
    db: Optional[str] = DbOption,
    since: str = SinceOption,
    start: Optional[str] = StartOption,
    end: Optional[str] = EndOption,
    firewall: Optional[str] = FirewallOption,
    policy: Optional[list[Path]] = PolicyFilesOption,
    parent_policy: Optional[Path] = typer.Option(None, "--parent-policy", metavar="FILE", help="Parent policy of the one --policy (same formats); its groups are evaluated first."),
    firewall_id: Optional[list[str]] = FirewallIdOption,
    policy_id: Optional[list[str]] = PolicyIdOption,
    arm_endpoint: str = ArmEndpointOption,
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="TOML config: source groups (name = list of CIDRs), thresholds, output (docs/recommend.md, section Config)."),
    service_tags: Optional[Path] = typer.Option(None, "--service-tags", metavar="FILE", help="Azure Service Tags JSON (ServiceTags_Public_*.json) to map IPs to tags."),
    fmt: Optional[str] = format_option(FORMATS, extra="draft: a policy draft to review and deploy."),
    as_json: bool = JsonOption,
    out: Optional[Path] = OutOption,
    what_if: bool = typer.Option(False, "--what-if", help="Replay the window's flows through the policy plus the proposals and show what changes."),
) -> None:
    """Least-privilege Azure Firewall rule changes from denied and allowed traffic, with evidence, for every
    firewall in the window (each against the rules it evaluates; a need every child of a parent policy shares
    goes to the parent once). The policy comes from --policy exports, from Azure (--firewall-id, --policy-id;
    each read is kept in the store as a dated snapshot), or from the snapshot in force for the window.

    In a terminal: one line per recommendation, most urgent first (what to investigate, then rules to narrow
    or remove, then rules to add); `recommend show ID` prints one with all its evidence. --format markdown,
    json, az, terraform, bicep or draft writes them all (docs/recommend.md).

    Exit codes: 0 nothing needs attention, 1 recommendations, 2 usage, 3 unreadable input or policy, or no
    recommendation with that id, 4 Azure refused, 6 busy store."""
    from egresslens.recommend import Config, ConfigError, ServiceTags, recommend_fleet

    wanted = _wanted_id(words, rec_id)
    fmt = resolve_format(fmt, as_json, out, FORMATS)
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
    if wanted is not None:
        one = _find(recs, wanted)
        recs.items = [one]
        if fmt == "table":
            from egresslens.recommend import terminal

            show(lambda c: terminal.detail(c, one, what_if=what_if), out)
        else:
            write(render(recs, fmt, what_if=what_if), out)
        raise typer.Exit(exitcodes.OK)
    if fmt == "table":
        from egresslens.recommend import terminal

        note = None if (estate is not None or given is not None) else "no policy (--policy): rules are read from the logs only"
        show(lambda c: terminal.summary(c, recs, policy_note=note), out)
    else:
        write(render(recs, fmt, what_if=what_if), out)
    if out:
        kept = sum(1 for r in recs.items if r.kind != "investigate")
        typer.echo(f"wrote {len(recs.items)} recommendation(s) as {fmt} to {plain(out)}"
                   + (f" ({kept} as rules; the {len(recs.items) - kept} to investigate as comments)"
                      if fmt in ("az", "terraform", "bicep", "draft") and kept < len(recs.items) else ""), err=True)
    raise typer.Exit(exitcodes.FINDINGS if any(r.kind != "investigate" or r.risk == "high" for r in recs.items) else exitcodes.OK)


def _wanted_id(words: list[str] | None, rec_id: str | None) -> str | None:
    """The id asked for by `show ID` or `--id ID`; a usage error for anything else."""
    words = list(words or [])
    if not words:
        return rec_id
    if words[0] != "show" or len(words) != 2:
        raise fail(f"unexpected {' '.join(words)!r}: the only subcommand is `recommend show ID`", exitcodes.USAGE)
    if rec_id and rec_id != words[1]:
        raise fail("give the id once: `recommend show ID` or `recommend --id ID`", exitcodes.USAGE)
    return words[1]


def _find(recs, wanted: str):  # noqa: ANN001, ANN202
    """The recommendation whose id is `wanted` or starts with it (at least 4 characters); INPUT_ERROR in
    one sentence when none or several match."""
    wanted = wanted.strip().lower()
    exact = [r for r in recs.items if r.id == wanted]
    found = exact or ([r for r in recs.items if r.id.startswith(wanted)] if len(wanted) >= 4 else [])
    if len(found) == 1:
        return found[0]
    if found:
        raise fail(f"{len(found)} recommendations start with {wanted!r}: give more of the id", exitcodes.USAGE)
    raise fail(f"no recommendation {plain(wanted)!r} in {recs.window.describe()}: ids are the first column of "
               "`egresslens recommend` (with the same window, firewall and policy)", exitcodes.INPUT_ERROR)


def render(recs, fmt: str, what_if: bool = False) -> str:
    """Every recommendation in `fmt` (the table as plain text, 80 columns)."""
    from egresslens.recommend import emit_az, emit_bicep, emit_draft, emit_json, emit_terraform, markdown

    if fmt == "table":
        from egresslens import cliout
        from egresslens.recommend import terminal

        return cliout.render(lambda c: terminal.summary(c, recs))
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
