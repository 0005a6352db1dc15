"""`egresslens snat`: SNAT port capacity findings per destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import (
    ARM_ENDPOINT_HELP,
    DB_HELP,
    END_HELP,
    SINCE_HELP,
    START_HELP,
    FirewallOption,
    analysis_window,
    fail,
    resolve_firewall,
)
from egresslens.escape import terminal as _t


def register(app: typer.Typer) -> None:
    app.command("snat")(snat_command)


def snat_command(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("24h", "--since", help=SINCE_HELP),
    start: Optional[str] = typer.Option(None, "--start", help=START_HELP),
    end: Optional[str] = typer.Option(None, "--end", help=END_HELP),
    public_ips: Optional[int] = typer.Option(None, "--public-ips", help="Public IPs on the firewall (1..250)."),
    instances: Optional[int] = typer.Option(None, "--instances", help="Backend instances (at least 2; plan on the minimum)."),
    nat_gateway_ips: Optional[int] = typer.Option(None, "--nat-gateway-ips", help="Public IPs of a NAT Gateway on AzureFirewallSubnet (0 = none)."),
    port_rule: Optional[str] = typer.Option(None, "--port-rule", help="Which public IPs add SNAT ports: 'all' or 'first-five'."),
    hold_time: Optional[str] = typer.Option(None, "--hold-time", help="Seconds (or 4m) each connection holds a port (default 240)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file: public_ips, instances, nat_gateway_ips, hold_time, port_rule, [thresholds]."),
    firewall: Optional[str] = FirewallOption,
    firewall_id: Optional[list[str]] = typer.Option(None, "--firewall-id", help="ARM id of a firewall: read its public IPs, instances and NAT Gateway (DefaultAzureCredential, Reader role) and judge that firewall's traffic against them; repeatable, each firewall on its own. Flags and --config override what is read."),
    arm_endpoint: str = typer.Option("https://management.azure.com", "--arm-endpoint", help=ARM_ENDPOINT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """SNAT port exhaustion risk per firewall and destination, with the fix (public IPs, NAT Gateway, private
    endpoint). Each firewall's demand is judged against its own capacity.

    Exit code 1 when a destination reaches the critical threshold."""
    ids = list(firewall_id or [])
    if len(ids) > 1:
        if firewall:
            raise fail("give --firewall or several --firewall-id, not both", exitcodes.USAGE)
        results = [_one(db, since, start, end, public_ips, instances, nat_gateway_ips, port_rule, hold_time, config,
                        i, arm_endpoint, None, scope_to_id=True) for i in ids]
        if as_json:
            typer.echo(json.dumps({"firewalls": [{"firewall": i, **r.to_dict()} for i, r in zip(ids, results)]},
                                  indent=2, default=str, ensure_ascii=True))
        else:
            for i, r in zip(ids, results):
                render(r, title=i.rstrip("/").rsplit("/", 1)[-1])
        raise typer.Exit(exitcodes.FINDINGS if any(r.has_critical for r in results) else exitcodes.OK)
    result = _one(db, since, start, end, public_ips, instances, nat_gateway_ips, port_rule, hold_time, config,
                  ids[0] if ids else None, arm_endpoint, firewall)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=True))
    else:
        render(result)
    raise typer.Exit(exitcodes.FINDINGS if result.has_critical else exitcodes.OK)


def _one(db, since, start, end, public_ips, instances, nat_gateway_ips, port_rule, hold_time, config,  # noqa: ANN001, ANN202
         firewall_id, arm_endpoint, firewall, scope_to_id: bool = False):
    """One firewall's (or, unscoped, every firewall's) SNAT result, capacity from flags, config and ARM."""
    from egresslens import fleet, snat

    flags = {"public_ips": public_ips, "instances": instances, "nat_gateway_ips": nat_gateway_ips}
    try:
        from_file = snat.config_file_values(config)
        resource = _read_firewall(firewall_id, arm_endpoint, flags, from_file) if firewall_id else {}
        sources: dict[str, str] = {}
        overrides: dict = {}
        for key, flag in flags.items():
            if flag is not None:
                overrides[key], sources[key] = flag, f"--{key.replace('_', '-')}"
            elif key in from_file:
                sources[key] = f"config file {config}"
            elif key in resource:
                overrides[key], sources[key] = resource[key]
            else:
                sources[key] = "default" + (" (Azure Firewall runs at least 2 instances)" if key == "instances" else
                                            " (no NAT Gateway)" if key == "nat_gateway_ips" else "")
        cfg = snat.load_config(
            config, **overrides,
            port_rule=port_rule.replace("_", "-").lower() if port_rule else None,
            hold_time_s=snat.seconds(hold_time) if hold_time else None)
    except _RemoteError as exc:
        raise fail(exc, exitcodes.REMOTE_ERROR) from None
    except (ValueError, OSError, TypeError) as exc:
        raise fail(exc, exitcodes.USAGE) from None
    with analysis_window(db, since, start, end) as (con, window):
        fw = resolve_firewall(con, window, firewall_id if scope_to_id else firewall)
        with fleet.scoped(con, fw):
            result = snat.analyse_snat(con, window, cfg)
    result.capacity_sources = sources
    return result


class _RemoteError(Exception):
    pass


def _read_firewall(firewall_id: str, endpoint: str, flags: dict, from_file: dict) -> dict[str, tuple[int, str]]:
    """{setting: (value, where it came from)} read from the firewall resource; skips what is given."""
    from egresslens.snat import MAX_PUBLIC_IPS, NAT_GATEWAY_MAX_IPS
    from egresslens.sources import firewall

    firewall.parse_firewall_id(firewall_id)  # ValueError -> usage error
    given = lambda k: flags.get(k) is not None or k in from_file  # noqa: E731
    try:
        cap = firewall.read_firewall(firewall_id, endpoint=endpoint, check_nat_gateway=not given("nat_gateway_ips"))
    except firewall.FirewallResourceError as exc:
        raise _RemoteError(str(exc)) from None
    name = firewall_id.rstrip("/").rsplit("/", 1)[-1]
    out: dict[str, tuple[int, str]] = {
        "public_ips": (min(max(cap.public_ips, 1), MAX_PUBLIC_IPS),
                       f"firewall resource {name}: {cap.public_ips_detail}"
                       + (" (none found: assuming 1)" if cap.public_ips < 1 else "")),
        "instances": (cap.instances, f"firewall resource {name}: {cap.instances_detail}"),
        "nat_gateway_ips": (min(cap.nat_gateway_ips, NAT_GATEWAY_MAX_IPS),
                            f"firewall resource {name}: {cap.nat_gateway_detail}"
                            + (f" (capped at {NAT_GATEWAY_MAX_IPS})" if cap.nat_gateway_ips > NAT_GATEWAY_MAX_IPS else "")),
    }
    return out


def render(result, title: str | None = None) -> None:  # noqa: ANN001 - SnatResult, imported lazily
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]SNAT capacity{' of ' + _t(title) if title else ''}[/bold] {result.window.describe()}")
    console.print(f"Assumes: {_t(result.config.describe())}")
    if result.capacity_sources:
        values = {"public_ips": result.config.public_ips, "instances": result.config.instances,
                  "nat_gateway_ips": result.config.nat_gateway_ips}
        for key, src in result.capacity_sources.items():
            console.print(f"  {key.replace('_', ' ').replace('ips', 'IPs')}: {values.get(key)} ({_t(src)})", soft_wrap=True)
    console.print(f"Demand: each allowed flow holds a port for {result.config.hold_time_s:g} s; "
                  f"rates {result.rate_basis}; warning {result.config.warning:.0%}, critical {result.config.critical:.0%}, "
                  f"fix target < {result.config.effective_target:.0%}")
    for note in result.notes:
        console.print(f"[dim]note: {_t(note)}[/dim]")
    if result.findings.height == 0:
        console.print("[green]No destination reaches the warning threshold.[/green]")
        if result.timeline.height:
            peak = result.timeline.sort("estimate", descending=True).row(0, named=True)
            console.print(f"Busiest: {_t(peak['busiest_destination'])}, peak {peak['estimate']:.0%} "
                          f"({peak['ports']:,.0f} ports) at {peak['minute']:%Y-%m-%d %H:%M} UTC.")
    else:
        t = Table(title="Destinations near SNAT exhaustion", show_lines=True)
        for col in ("severity", "destination", "peak", "ports", "peak at (UTC)", "min. over warning",
                    "exhaustion in", "fix"):
            t.add_column(col, overflow="fold")
        for r in result.findings.iter_rows(named=True):
            sev = "[red]critical[/red]" if r["severity"] == "critical" else "[yellow]warning[/yellow]"
            tte = r["minutes_to_exhaustion"]
            t.add_row(sev, _t(f"{r['destination']}:{r['port']}/{r['protocol']}"), f"{r['peak_utilisation']:.0%}",
                      f"{r['peak_ports']:,.0f}", f"{r['peak_minute']:%Y-%m-%d %H:%M}", str(r["minutes_warning"]),
                      "-" if tte is None or tte != tte else ("now" if tte == 0 else f"{tte:.0f} min"), _t(r["fix"] or ""))
        console.print(t)
    if result.metric_fit.height:
        t = Table(title="SNATPortUtilization metric beside the estimate")
        for col in ("firewall", "points", "peak metric", "peak estimate", "metric / estimate", "correlation",
                    "calibrated hold time"):
            t.add_column(col, overflow="fold")
        for r in result.metric_fit.iter_rows(named=True):
            def pct(v):  # noqa: ANN001, ANN202
                return "-" if v is None else f"{v:.0%}"
            t.add_row(_t(r["firewall"].rsplit("/", 1)[-1]), str(r["points"]), pct(r["peak_metric"]), pct(r["peak_estimate"]),
                      "-" if r["scale"] is None else f"{r['scale']:.2f}",
                      "-" if r["correlation"] is None else f"{r['correlation']:.2f}",
                      "-" if r["calibrated_hold_time_s"] is None else f"{r['calibrated_hold_time_s']:.0f} s")
        console.print(t)
