"""`egresslens recommend`: least-privilege rule changes with evidence, as Markdown, JSON, az, Terraform or Bicep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import DB_HELP, END_HELP, SINCE_HELP, START_HELP, analysis_window, fail
from egresslens.escape import plain

FORMATS = ("markdown", "json", "az", "terraform", "bicep")


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend_command)


def recommend_command(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("7d", "--since", help=SINCE_HELP),
    start: Optional[str] = typer.Option(None, "--start", help=START_HELP),
    end: Optional[str] = typer.Option(None, "--end", help=END_HELP),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Current policy: JSON of `az network firewall policy rule-collection-group list`, or an ARM export."),
    parent_policy: Optional[Path] = typer.Option(None, "--parent-policy", help="Parent policy (same formats); its groups are evaluated first."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config: sections sources (name = list of CIDRs), thresholds, output (see README.md, 'Config')."),
    service_tags: Optional[Path] = typer.Option(None, "--service-tags", help="Azure Service Tags JSON (ServiceTags_Public_*.json) to map IPs to tags."),
    fmt: str = typer.Option("markdown", "--format", "-f", help="markdown | json | az | terraform | bicep."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of standard output."),
    what_if: bool = typer.Option(False, "--what-if", help="Replay the window's flows through the policy plus the proposals and show what changes."),
) -> None:
    """Least-privilege Azure Firewall rule changes from denied and allowed traffic, with evidence.

    Exit code 0 when nothing needs attention, 1 when there are recommendations."""
    from egresslens.recommend import Config, ConfigError, ServiceTags, load_policy, recommend

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}", exitcodes.USAGE)
    try:
        cfg = Config.from_toml(config) if config else Config()
    except ConfigError as exc:
        raise fail(exc, exitcodes.USAGE) from None
    try:
        rules = load_policy(policy, parent_policy) if policy else None
        tags = ServiceTags.load(service_tags) if service_tags else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"cannot read input: {exc}", exitcodes.INPUT_ERROR) from None
    with analysis_window(db, since, start, end) as (con, window):
        recs = recommend(con, window, policy=rules, config=cfg, service_tags=tags)
        if what_if:
            from egresslens.recommend import whatif

            whatif.apply(recs, whatif.replay(con, window, recs, rules, tags))
    text = render(recs, fmt, what_if=what_if)
    if out:
        from egresslens import atomic

        atomic.write_text(out, text)
        typer.echo(f"wrote {len(recs.items)} recommendation(s) as {fmt} to {plain(out)}", err=True)
    else:
        typer.echo(text, nl=False)
    raise typer.Exit(exitcodes.FINDINGS if any(r.kind != "investigate" or r.risk == "high" for r in recs.items) else exitcodes.OK)


def render(recs, fmt: str, what_if: bool = False) -> str:
    from egresslens.recommend import emit_az, emit_bicep, emit_json, emit_terraform, markdown

    if fmt == "json":
        return emit_json.emit(recs)
    if fmt == "az":
        return emit_az.emit(recs)
    if fmt == "terraform":
        return emit_terraform.emit(recs)
    if fmt == "bicep":
        return emit_bicep.emit(recs)
    return markdown.emit(recs, what_if=what_if)
