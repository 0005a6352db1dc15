"""`egresslens dns`: DNS-proxy analytics and suspicious domains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from egresslens import exitcodes
from egresslens.cliout import EndOption, JsonOption, OutOption, SinceOption, StartOption, format_option, resolve_format, show, write
from egresslens.cliutil import DbOption, FirewallOption, analysis_window, resolve_firewall
from egresslens.escape import terminal as _t


FORMATS = ("table", "json")


def register(app: typer.Typer) -> None:
    app.command("dns")(dns_command)


def dns_command(
    db: Optional[str] = DbOption,
    since: str = SinceOption,
    start: Optional[str] = StartOption,
    end: Optional[str] = EndOption,
    firewall: Optional[str] = FirewallOption,
    top: int = typer.Option(10, "--top", metavar="N", help="Rows per table in the table output."),
    fmt: Optional[str] = format_option(FORMATS),
    as_json: bool = JsonOption,
    out: Optional[Path] = OutOption,
) -> None:
    """DNS-proxy analytics: volumes, failure rates and latency per source group and name, search-domain
    noise, names resolved then denied, and the suspicion model's domains and compromised sources. Without
    --firewall, each firewall's DNS proxy is judged on its own (a table of the firewalls, then a section
    each); suspicious domains and compromised sources are one assessment of them all.

    Exit codes: 0 nothing suspicious, 1 a domain is flagged never-allow or a source is compromised, 2 usage,
    3 no store, 6 busy store (docs/dns.md, docs/suspicion.md)."""
    from egresslens import dns, fleet

    fmt = resolve_format(fmt, as_json, out, FORMATS)
    with analysis_window(db, since, start, end) as (con, window):
        with fleet.scoped(con, resolve_firewall(con, window, firewall)):
            result = dns.analyse_dns(con, window)
    if fmt == "json":
        write(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=True) + "\n", out)
    else:
        show(lambda c: render(c, result, top), out)
    raise typer.Exit(exitcodes.FINDINGS if result.has_findings else exitcodes.OK)


def _pct(v) -> str:  # noqa: ANN001
    return "-" if v is None else f"{v:.1%}"


def _ms(v, basis: str | None = "raw") -> str:  # noqa: ANN001
    """Milliseconds; `~` marks percentiles approximated from hourly rollups (latency_basis)."""
    return "-" if v is None else f"{'~' if basis not in (None, 'raw') else ''}{v * 1000:.1f}"


def _fit(console, title: str, cols, rows, wider: str = "a wider terminal or --json") -> None:  # noqa: ANN001
    from egresslens.cliout import dropped_note, fit_table

    t, dropped = fit_table(title, cols, rows, console.width)
    console.print(t)
    if dropped:
        console.print(dropped_note(dropped, wider))


def render_compromised(console, susp) -> None:  # noqa: ANN001 - rich Console, suspicion.Suspicion
    """Compromised sources with their evidence and time window (log text escaped for the terminal)."""
    from egresslens.cliout import KEEP, NUM, PROSE_BELOW_WIDTH, Col, prose_below

    if susp.sources.height == 0:
        console.print("[green]No compromised sources.[/green]")
        return
    below = console.width < PROSE_BELOW_WIDTH  # the evidence at the full width under the table, not in a column
    cols = [Col("source", KEEP), Col("first contact", KEEP, priority=3), Col("last seen", KEEP, priority=2),
            Col("hours", NUM, priority=1)] + ([] if below else [Col("evidence", min_width=24)])
    rows, evidence = [], []
    for r in susp.sources.iter_rows(named=True):
        ev = r["evidence"]
        evidence.append([_t(f"{e['kind']}: {e['detail']}") for e in ev[:5]]
                        + ([f"and {len(ev) - 5} more (dns --json lists them all)"] if len(ev) > 5 else []))
        rows.append([f"[red]{_t(r['source_ip'])}[/red]", f"{r['first_seen']:%Y-%m-%d %H:%M}",
                     f"{r['last_seen']:%Y-%m-%d %H:%M}", "-" if r.get("hours_seen") is None else str(r["hours_seen"])]
                    + ([] if below else ["\n".join(evidence[-1])]))
    _fit(console, "Compromised sources (cut out of every proposed rule; nothing only they asked for is proposed)",
         cols, rows)
    if below:
        prose_below(console, "Evidence", [(row[0], parts) for row, parts in zip(rows, evidence)])


def render(console, result, top: int = 10) -> None:  # noqa: ANN001 - rich Console, DnsResult
    from egresslens.cliout import KEEP, NUM, Col

    t = result.totals
    console.print(f"[bold]DNS proxy[/bold] {result.window.describe()}: {t['queries']:,} queries, {t['names']:,} names; "
                  f"search-domain noise {t['noise_queries']:,}, real failures {t['real_failures']:,}, "
                  f"upstream errors {t['upstream_errors']:,}")
    for note in result.notes:
        console.print(f"[dim]note: {_t(note)}[/dim]")

    shown = max(top, 50)  # every finding kind, most severe first
    if result.suspicious.height:
        cols = [Col("reason", KEEP), Col("domain", min_width=20), Col("zone", min_width=14, priority=1),
                Col("never allow", KEEP, priority=4), Col("queries", NUM, priority=3),
                Col("sources", min_width=13, priority=2), Col("detail", min_width=20, priority=5)]
        rows = []
        for r in result.suspicious.head(shown).iter_rows(named=True):
            colour = "red" if r["never_allow"] else "yellow"
            rows.append([f"[{colour}]{_t(r['reason'])}[/{colour}]", _t(r["domain"]), _t(r["zone"] or ""),
                         "yes" if r["never_allow"] else "no", "-" if r["queries"] is None else f"{r['queries']:,}",
                         _t(", ".join((r["sources"] or [])[:3])), _t(r["detail"] or "")])
        _fit(console, "Suspicious domains (the suspicion model `recommend` reads too)", cols, rows)
    else:
        console.print("[green]No suspicious domains.[/green]")
    hidden = max(0, result.suspicious.height - shown) + sum(getattr(result.suspicion, "omitted", {}).values())
    if hidden:
        console.print(f"[dim]and {hidden:,} more suspicious or newly seen domains (dns --json, or the report)[/dim]")
    render_compromised(console, result.suspicion)

    if result.parts:  # several firewalls: each one's DNS proxy judged on its own
        from egresslens import fleet

        _fleet_table(console, result)
        for part in result.parts:
            t = part.totals
            name = _t(fleet.label(part.firewall))
            if not t["queries"]:
                console.print(f"\n[bold]Firewall {name}[/bold]: no DNS proxy query in the window (is DNS proxy on, "
                              "and its log category ingested?)")
                continue
            console.print(f"\n[bold]Firewall {name}[/bold]: {t['queries']:,} queries, {t['names']:,} names; "
                          f"search-domain noise {t['noise_queries']:,}, real failures {t['real_failures']:,}, "
                          f"upstream errors {t['upstream_errors']:,}")
            _health_tables(console, part, top)
    else:
        _health_tables(console, result, top)


def _fleet_table(console, result) -> None:  # noqa: ANN001 - rich Console, DnsResult
    """One row per firewall: its DNS proxy's failure rates, noise and latency, each over its own queries."""
    from egresslens import fleet
    from egresslens.cliout import KEEP, NUM, Col

    basis = lambda r: r.get("latency_basis")  # noqa: E731
    cols = [Col("firewall", KEEP), Col("queries", NUM), Col("names", NUM, priority=2), Col("NXDOMAIN", NUM, priority=4),
            Col("SERVFAIL", NUM, priority=3), Col("real fail", NUM, priority=5), Col("upstream err", NUM, priority=3),
            Col("noise", NUM, priority=2), Col("p50 ms", NUM, priority=1), Col("p95 ms", NUM, priority=5)]
    rows = [[_t(fleet.label(r["firewall"])), f"{r['queries']:,}", f"{r['names']:,}", _pct(r["nxdomain_rate"]),
             _pct(r["servfail_rate"]), _pct(r["real_failure_rate"]), _pct(r["upstream_errors_rate"]),
             _pct(r["noise_share"]), _ms(r["p50_latency_s"], basis(r)), _ms(r["p95_latency_s"], basis(r))]
            for r in result.health.iter_rows(named=True)]
    _fit(console, "Per firewall (each judged on its own queries)", cols, rows)


def _health_tables(console, result, top: int) -> None:  # noqa: ANN001 - rich Console, DnsResult
    """One firewall's (or the store's) source groups, names, failures, noise and names resolved then denied."""
    from egresslens.cliout import KEEP, NUM, Col

    basis = lambda r: r.get("latency_basis")  # noqa: E731
    cols = [Col("group", min_width=16), Col("queries", NUM), Col("names", NUM, priority=2), Col("NXDOMAIN", NUM, priority=6),
            Col("SERVFAIL", NUM, priority=5), Col("REFUSED", NUM, priority=1), Col("upstream err", NUM, priority=4),
            Col("noise", NUM, priority=3), Col("p50 ms", NUM, priority=1), Col("p95 ms", NUM, priority=5),
            Col("p99 ms", NUM, priority=1)]
    rows = [[_t(r["source_group"]), f"{r['queries']:,}", f"{r['names']:,}", _pct(r["nxdomain_rate"]),
             _pct(r["servfail_rate"]), _pct(r["refused_rate"]), _pct(r["upstream_errors_rate"]),
             f"{r['noise_queries']:,}", _ms(r["p50_latency_s"], basis(r)), _ms(r["p95_latency_s"], basis(r)),
             _ms(r["p99_latency_s"], basis(r))] for r in result.by_group.head(top).iter_rows(named=True)]
    _fit(console, "Per source group", cols, rows)
    if any(b not in (None, "raw") for b in result.by_group["latency_basis"].to_list()):
        console.print("[dim]~ latency approximated from hourly rollups (group means, tails understated)[/dim]")

    cols = [Col("name", min_width=24), Col("queries", NUM), Col("sources", NUM, priority=3),
            Col("NXDOMAIN", NUM, priority=4), Col("SERVFAIL", NUM, priority=2), Col("REFUSED", NUM, priority=1),
            Col("p95 ms", NUM, priority=3), Col("noise", KEEP, priority=2)]
    rows = [[_t(r["query_name"]), f"{r['queries']:,}", str(r["sources"]), _pct(r["nxdomain_rate"]),
             _pct(r["servfail_rate"]), _pct(r["refused_rate"]), _ms(r["p95_latency_s"], basis(r)),
             _t(r["noise_kind"] or "")] for r in result.by_name.head(top).iter_rows(named=True)]
    _fit(console, f"Top {top} names", cols, rows)

    cols = [Col("name", min_width=24), Col("failures", NUM), Col("rate", NUM, priority=4), Col("NXDOMAIN", NUM, priority=3),
            Col("SERVFAIL", NUM, priority=2), Col("REFUSED", NUM, priority=1), Col("sources", NUM, priority=2)]
    rows = [[_t(r["query_name"]), f"{r['failures']:,}", _pct(r["failure_rate"]), str(r["nxdomain"]),
             str(r["servfail"]), str(r["refused"]), str(r["sources"])] for r in result.failures.head(top).iter_rows(named=True)]
    _fit(console, "Real failures (search-domain noise removed; names under flagged domains last)", cols, rows)

    cols = [Col("kind", KEEP), Col("intended name", min_width=24), Col("queries", NUM), Col("upstream err", NUM, priority=1)]
    rows = [[_t(r["noise_kind"]), _t(r["intended_name"] or ""), f"{r['queries']:,}", str(r["upstream_errors"])]
            for r in result.noise.head(top).iter_rows(named=True)]
    _fit(console, "Search-domain noise", cols, rows)

    cols = [Col("layer", KEEP, priority=2), Col("name", min_width=22), Col("sources", NUM, priority=1), Col("denials", NUM),
            Col("denied destinations / reason", min_width=18, priority=3)]
    rows = [[_t(r["layer"]), _t(r["query_name"]), str(r["sources"]), f"{r['denials']:,}",
             _t(", ".join(r["denied_destinations"] or []) or (r["reason"] or ""))]
            for r in result.resolved_then_denied.head(top).iter_rows(named=True)]
    _fit(console, "Resolved, then denied", cols, rows)
