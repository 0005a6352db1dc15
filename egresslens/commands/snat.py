"""`egresslens snat`: SNAT port capacity findings per destination."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliout import EndOption, JsonOption, OutOption, SinceOption, StartOption, format_option, resolve_format, show, write
from egresslens.cliutil import (
    ARM_ENDPOINT_HELP,
    DbOption,
    FirewallOption,
    analysis_window,
    fail,
    resolve_firewall,
)
from egresslens.escape import terminal as _t


FORMATS = ("table", "json", "csv")
CSV_COLUMNS = ("severity", "destination", "port", "protocol", "peak_utilisation", "peak_ports", "peak_minute",
               "minutes_warning", "minutes_to_exhaustion", "fix")


def register(app: typer.Typer) -> None:
    app.command("snat")(snat_command)


def snat_command(
    db: Optional[str] = DbOption,
    since: str = SinceOption,
    start: Optional[str] = StartOption,
    end: Optional[str] = EndOption,
    public_ips: Optional[int] = typer.Option(None, "--public-ips", help="Public IPs on the firewall (1..250)."),
    instances: Optional[int] = typer.Option(None, "--instances", help="Backend instances (at least 2; plan on the minimum)."),
    nat_gateway_ips: Optional[int] = typer.Option(None, "--nat-gateway-ips", help="Public IPs of a NAT Gateway on AzureFirewallSubnet (0 = none)."),
    port_rule: Optional[str] = typer.Option(None, "--port-rule", help="Which public IPs add SNAT ports: 'all' or 'first-five'."),
    hold_time: Optional[str] = typer.Option(None, "--hold-time", help="Seconds (or 4m) each connection holds a port (default 240)."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="TOML file: public_ips, instances, nat_gateway_ips, hold_time, port_rule, a thresholds table (docs/snat.md)."),
    firewall: Optional[str] = FirewallOption,
    firewall_id: Optional[list[str]] = typer.Option(None, "--firewall-id", help="ARM id of a firewall: read its public IPs, instances and NAT Gateway (DefaultAzureCredential, Reader role) and judge that firewall's traffic against them; repeatable, each firewall on its own. Flags and --config override what is read."),
    arm_endpoint: str = typer.Option("https://management.azure.com", "--arm-endpoint", help=ARM_ENDPOINT_HELP),
    fmt: Optional[str] = format_option(FORMATS),
    as_json: bool = JsonOption,
    out: Optional[Path] = OutOption,
) -> None:
    """SNAT port exhaustion risk per firewall and destination, with the fix (public IPs, NAT Gateway, private
    endpoint). Each firewall's demand is judged against its own capacity.

    --format csv writes one line per destination at or above the warning level.

    Exit codes: 0 nothing near exhaustion, 1 a destination reaches the critical threshold, 2 usage, 3 no store,
    4 Azure refused, 6 busy store (docs/snat.md)."""
    fmt = resolve_format(fmt, as_json, out, FORMATS)
    ids = list(firewall_id or [])
    if len(ids) > 1:
        if firewall:
            raise fail("give --firewall or several --firewall-id, not both", exitcodes.USAGE)
        results = [_one(db, since, start, end, public_ips, instances, nat_gateway_ips, port_rule, hold_time, config,
                        i, arm_endpoint, None, scope_to_id=True) for i in ids]
        names = [i.rstrip("/").rsplit("/", 1)[-1] for i in ids]
        if fmt == "json":
            write(json.dumps({"firewalls": [{"firewall": i, **r.to_dict()} for i, r in zip(ids, results)]},
                             indent=2, default=str, ensure_ascii=True) + "\n", out)
        elif fmt == "csv":
            write(to_csv(results, names), out)
        else:
            show(lambda c: [render(c, r, title=n) for n, r in zip(names, results)], out)
        raise typer.Exit(exitcodes.FINDINGS if any(r.has_critical for r in results) else exitcodes.OK)
    result = _one(db, since, start, end, public_ips, instances, nat_gateway_ips, port_rule, hold_time, config,
                  ids[0] if ids else None, arm_endpoint, firewall)
    if fmt == "json":
        write(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=True) + "\n", out)
    elif fmt == "csv":
        write(to_csv([result], [None]), out)
    else:
        show(lambda c: render(c, result), out)
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


def to_csv(results, names) -> str:  # noqa: ANN001
    """One line per destination at or above the warning level (with the firewall when several were asked for)."""
    import csv
    import io

    from egresslens.escape import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    many = any(n is not None for n in names)
    w.writerow((["firewall"] if many else []) + list(CSV_COLUMNS))
    for name, r in zip(names, results):
        for row in r.findings.iter_rows(named=True):
            w.writerow(([csv_cell(name)] if many else []) + [csv_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def render(console, result, title: str | None = None) -> None:  # noqa: ANN001 - rich Console, SnatResult
    from egresslens.cliout import KEEP, NUM, PROSE_BELOW_WIDTH, Col, dropped_note, fit_table, prose_below

    console.print(f"[bold]SNAT capacity{' of ' + _t(title) if title else ''}[/bold] {result.window.describe()}")
    console.print(f"Assumes: {_t(result.config.describe())}")
    if result.capacity_sources:
        values = {"public_ips": result.config.public_ips, "instances": result.config.instances,
                  "nat_gateway_ips": result.config.nat_gateway_ips}
        for key, src in result.capacity_sources.items():
            console.print(f"  {key.replace('_', ' ').replace('ips', 'IPs')}: {values.get(key)} ({_t(src)})")
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
        # the fix is what a reader acts on: on a narrow screen it goes under the table at full width, a line
        # per option, rather than into a column a few words wide
        fix_below = console.width < PROSE_BELOW_WIDTH
        cols = [Col("severity", KEEP), Col("destination", min_width=22), Col("peak", NUM), Col("ports", NUM, priority=3),
                Col("peak at (UTC)", KEEP, priority=2), Col("min. over warning", NUM, priority=1),
                Col("exhaustion in", KEEP, priority=4)] + ([] if fix_below else [Col("fix", min_width=16, priority=5)])
        rows = []
        for r in result.findings.iter_rows(named=True):
            sev = "[red]critical[/red]" if r["severity"] == "critical" else "[yellow]warning[/yellow]"
            tte = r["minutes_to_exhaustion"]
            rows.append([sev, _t(f"{r['destination']}:{r['port']}/{r['protocol']}"), f"{r['peak_utilisation']:.0%}",
                         f"{r['peak_ports']:,.0f}", f"{r['peak_minute']:%Y-%m-%d %H:%M}", str(r["minutes_warning"]),
                         "-" if tte is None or tte != tte else ("now" if tte == 0 else f"{tte:.0f} min")]
                        + ([] if fix_below else [_t(r["fix"] or "")]))
        t, dropped = fit_table("Destinations near SNAT exhaustion", cols, rows, console.width, show_lines=True)
        console.print(t)
        if dropped:
            console.print(dropped_note(dropped, "a wider terminal, --format csv or --json"))
        if fix_below:
            prose_below(console, "Fixes", [(f"{row[0]} {row[1]}", [_t(p) for p in (r["fix"] or "no fix found").split("; ")])
                                           for row, r in zip(rows, result.findings.iter_rows(named=True))])
    if result.metric_fit.height:
        def pct(v):  # noqa: ANN001, ANN202
            return "-" if v is None else f"{v:.0%}"

        cols = [Col("firewall", min_width=14), Col("points", NUM, priority=1), Col("peak metric", NUM),
                Col("peak estimate", NUM), Col("metric / estimate", NUM, priority=3), Col("correlation", NUM, priority=2),
                Col("calibrated hold time", NUM, priority=4)]
        rows = [[_t(r["firewall"].rsplit("/", 1)[-1]), str(r["points"]), pct(r["peak_metric"]), pct(r["peak_estimate"]),
                 "-" if r["scale"] is None else f"{r['scale']:.2f}",
                 "-" if r["correlation"] is None else f"{r['correlation']:.2f}",
                 "-" if r["calibrated_hold_time_s"] is None else f"{r['calibrated_hold_time_s']:.0f} s"]
                for r in result.metric_fit.iter_rows(named=True)]
        t, dropped = fit_table("SNATPortUtilization metric beside the estimate", cols, rows, console.width)
        console.print(t)
        if dropped:
            console.print(dropped_note(dropped))
