"""`egresslens dns`: DNS-proxy analytics and suspicious domains."""

from __future__ import annotations

import json
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliutil import DB_HELP, END_HELP, SINCE_HELP, START_HELP, FirewallOption, analysis_window, resolve_firewall
from egresslens.escape import terminal as _t


def register(app: typer.Typer) -> None:
    app.command("dns")(dns_command)


def dns_command(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    since: str = typer.Option("24h", "--since", help=SINCE_HELP),
    start: Optional[str] = typer.Option(None, "--start", help=START_HELP),
    end: Optional[str] = typer.Option(None, "--end", help=END_HELP),
    firewall: Optional[str] = FirewallOption,
    top: int = typer.Option(10, "--top", help="Rows per table in the human output."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """DNS-proxy analytics: volumes, failure rates and latency per source group and name, search-domain
    noise, names resolved then denied, and the suspicion model's domains and compromised sources.

    Exit code 1 when a domain is flagged never-allow or a source is compromised."""
    from egresslens import dns, fleet

    with analysis_window(db, since, start, end) as (con, window):
        with fleet.scoped(con, resolve_firewall(con, window, firewall)):
            result = dns.analyse_dns(con, window)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=True))
    else:
        render(result, top)
    raise typer.Exit(exitcodes.FINDINGS if result.has_findings else exitcodes.OK)


def _pct(v) -> str:  # noqa: ANN001
    return "-" if v is None else f"{v:.1%}"


def _ms(v, basis: str | None = "raw") -> str:  # noqa: ANN001
    """Milliseconds; `~` marks percentiles approximated from hourly rollups (latency_basis)."""
    return "-" if v is None else f"{'~' if basis not in (None, 'raw') else ''}{v * 1000:.1f}"


def render_compromised(console, susp) -> None:  # noqa: ANN001 - rich Console, suspicion.Suspicion
    """Compromised sources with their evidence and time window (log text escaped for the terminal)."""
    from rich.table import Table


    if susp.sources.height == 0:
        console.print("[green]No compromised sources.[/green]")
        return
    c = Table(title="Compromised sources (cut out of every proposed rule; nothing only they asked for is proposed)")
    for col in ("source", "first contact", "last seen", "hours", "evidence"):
        c.add_column(col, overflow="fold")
    for r in susp.sources.iter_rows(named=True):
        ev = r["evidence"]
        c.add_row(f"[red]{_t(r['source_ip'])}[/red]", f"{r['first_seen']:%Y-%m-%d %H:%M}",
                  f"{r['last_seen']:%Y-%m-%d %H:%M}", str(r["hours_seen"]),
                  "\n".join([_t(f"{e['kind']}: {e['detail']}") for e in ev[:5]]
                            + ([f"and {len(ev) - 5} more (dns --json lists them all)"] if len(ev) > 5 else [])))
    console.print(c)


def render(result, top: int = 10) -> None:  # noqa: ANN001 - DnsResult, imported lazily
    from rich.console import Console
    from rich.table import Table


    console = Console()
    t = result.totals
    console.print(f"[bold]DNS proxy[/bold] {result.window.describe()}: {t['queries']:,} queries, {t['names']:,} names; "
                  f"search-domain noise {t['noise_queries']:,}, real failures {t['real_failures']:,}, "
                  f"upstream errors {t['upstream_errors']:,}")
    for note in result.notes:
        console.print(f"[dim]note: {_t(note)}[/dim]")

    s = Table(title="Suspicious domains (the suspicion model `recommend` reads too)")
    for col in ("reason", "domain", "zone", "never allow", "queries", "sources", "detail"):
        s.add_column(col, overflow="fold")
    shown = max(top, 50)  # every finding kind, most severe first
    for r in result.suspicious.head(shown).iter_rows(named=True):
        colour = "red" if r["never_allow"] else "yellow"
        s.add_row(f"[{colour}]{_t(r['reason'])}[/{colour}]", _t(r["domain"]), _t(r["zone"] or ""),
                  "yes" if r["never_allow"] else "no", "-" if r["queries"] is None else f"{r['queries']:,}",
                  _t(", ".join((r["sources"] or [])[:3])), _t(r["detail"] or ""))
    console.print(s if result.suspicious.height else "[green]No suspicious domains.[/green]")
    hidden = max(0, result.suspicious.height - shown) + sum(result.suspicion.omitted.values())
    if hidden:
        console.print(f"[dim]and {hidden:,} more suspicious or newly seen domains (dns --json, or the report)[/dim]")
    render_compromised(console, result.suspicion)

    g = Table(title="Per source group")
    for col in ("group", "queries", "names", "NXDOMAIN", "SERVFAIL", "REFUSED", "upstream err", "noise",
                "p50 ms", "p95 ms", "p99 ms"):
        g.add_column(col, overflow="fold")
    for r in result.by_group.head(top).iter_rows(named=True):
        g.add_row(_t(r["source_group"]), f"{r['queries']:,}", f"{r['names']:,}", _pct(r["nxdomain_rate"]),
                  _pct(r["servfail_rate"]), _pct(r["refused_rate"]), _pct(r["upstream_errors_rate"]),
                  f"{r['noise_queries']:,}", _ms(r["p50_latency_s"], r.get("latency_basis")),
                  _ms(r["p95_latency_s"], r.get("latency_basis")), _ms(r["p99_latency_s"], r.get("latency_basis")))
    console.print(g)
    if any(b not in (None, "raw") for b in result.by_group["latency_basis"].to_list()):
        console.print("[dim]~ latency approximated from hourly rollups (group means, tails understated)[/dim]")

    n = Table(title=f"Top {top} names")
    for col in ("name", "queries", "sources", "NXDOMAIN", "SERVFAIL", "REFUSED", "p95 ms", "noise"):
        n.add_column(col, overflow="fold")
    for r in result.by_name.head(top).iter_rows(named=True):
        n.add_row(_t(r["query_name"]), f"{r['queries']:,}", str(r["sources"]), _pct(r["nxdomain_rate"]),
                  _pct(r["servfail_rate"]), _pct(r["refused_rate"]), _ms(r["p95_latency_s"], r.get("latency_basis")),
                  _t(r["noise_kind"] or ""))
    console.print(n)

    f = Table(title="Real failures (search-domain noise removed; names under flagged domains last)")
    for col in ("name", "failures", "rate", "NXDOMAIN", "SERVFAIL", "REFUSED", "sources"):
        f.add_column(col, overflow="fold")
    for r in result.failures.head(top).iter_rows(named=True):
        f.add_row(_t(r["query_name"]), f"{r['failures']:,}", _pct(r["failure_rate"]), str(r["nxdomain"]),
                  str(r["servfail"]), str(r["refused"]), str(r["sources"]))
    console.print(f)

    z = Table(title="Search-domain noise")
    for col in ("kind", "intended name", "queries", "upstream err"):
        z.add_column(col, overflow="fold")
    for r in result.noise.head(top).iter_rows(named=True):
        z.add_row(_t(r["noise_kind"]), _t(r["intended_name"] or ""), f"{r['queries']:,}", str(r["upstream_errors"]))
    console.print(z)

    d = Table(title="Resolved, then denied")
    for col in ("layer", "name", "sources", "denials", "denied destinations / reason"):
        d.add_column(col, overflow="fold")
    for r in result.resolved_then_denied.head(top).iter_rows(named=True):
        d.add_row(_t(r["layer"]), _t(r["query_name"]), str(r["sources"]), f"{r['denials']:,}",
                  _t(", ".join(r["denied_destinations"] or []) or (r["reason"] or "")))
    console.print(d)
