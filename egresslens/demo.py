"""The offline demo: one simulated day through every stage, on the embedded store.

The day has something for every feature: the VM spoke's nightly backup pushes one storage account over
the SNAT warning level (egresslens.simulate.batch), a compromised pod tunnels and hits threat
intelligence, broad rules to narrow and unused ones to remove; the demo ends by saying what it showed
and writes the report and the compromised pod's drilldown beside the store."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from egresslens import exitcodes, store
from egresslens.cliout import hanging
from egresslens.escape import terminal


def _summary_table(con) -> Table:
    table = Table("table", "rows", title="Store")
    for name in ("flows", "dns_queries", "threats", "quarantine"):
        table.add_row(name, f"{con.execute(f'SELECT count(*) FROM {name}').fetchall()[0][0]:,}")
    return table


def _top_denied(con) -> Table:
    rows = con.execute(
        """SELECT coalesce(destination_fqdn, destination_ip) AS destination, protocol, destination_port,
                  count(*) AS hits, count(DISTINCT source_ip) AS sources
           FROM flows WHERE action = 'Deny' GROUP BY ALL ORDER BY hits DESC LIMIT 10"""
    ).fetchall()
    table = Table("destination", "protocol", "port", "hits", "sources", title="Top denied destinations")
    for dest, proto, port, hits, sources in rows:
        table.add_row(terminal(dest), terminal(proto), "" if port is None else str(port), f"{hits:,}", str(sources))
    return table


def _analyse(con, logs: Path, console: Console):  # noqa: ANN202
    """Steps 3-5: the analyses every user runs next, on the same store; (snat result, recommendations)."""
    from egresslens import dns, snat
    from egresslens.analyse import resolve_window
    from egresslens.commands import dns as dns_command
    from egresslens.commands import snat as snat_command
    from egresslens.recommend import load_policy, recommend, terminal as rec_terminal

    window = resolve_window(con, since="24h")
    t = time.perf_counter()
    snat_result = snat.analyse_snat(con, window)
    console.rule(f"3. egresslens snat ({time.perf_counter() - t:.1f} s)")
    snat_command.render(console, snat_result)
    t = time.perf_counter()
    dns_result = dns.analyse_dns(con, window)
    console.rule(f"4. egresslens dns ({time.perf_counter() - t:.1f} s)")
    dns_command.render(console, dns_result, top=5)
    t = time.perf_counter()
    recs = recommend(con, window, policy=load_policy(logs / "policy.json"))
    console.rule(f"5. egresslens recommend --policy {terminal(logs / 'policy.json')} ({time.perf_counter() - t:.1f} s)")
    rec_terminal.summary(console, recs)
    return snat_result, recs


def _report(con, db_path: Path, logs: Path, directory: Path, console: Console):  # noqa: ANN202
    """Step 6: the morning report of the day, as `egresslens report --policy ... --out` writes it; the report."""
    from egresslens.recommend import load_policy
    from egresslens.report import build_report, windows, write

    t = time.perf_counter()
    window, _ = windows(con, "24h", None)
    report = build_report(con, window, policy=load_policy(logs / "policy.json"), db=str(db_path))
    out = write(report, directory / "report.html", "html", report.exit_code())[0]
    console.rule(f"6. egresslens report --since 24h --policy {terminal(logs / 'policy.json')} --out {terminal(out)} "
                 f"({time.perf_counter() - t:.1f} s)")
    console.print(", ".join(f"{report.count(s)} {s}" for s in ("critical", "finding", "warning")), markup=False)
    hanging(console, [(f"  {f.severity}:", terminal(f.message)) for f in report.findings[:8]])
    return out, report


def _drilldown(con, logs: Path, directory: Path, console: Console, source: str) -> Path:
    """Step 7: the compromised pod up close, as `egresslens drilldown SOURCE --policy ...` writes it."""
    from datetime import datetime, timezone

    from egresslens import atomic
    from egresslens.analyse import resolve_window
    from egresslens.recommend import load_policy
    from egresslens.report.drilldown import drilldown
    from egresslens.report.html import render_drilldown

    t = time.perf_counter()
    window = resolve_window(con, since="24h")
    d = drilldown(con, window, source, "source", policy=load_policy(logs / "policy.json"))
    out = directory / f"drilldown-{source}.html"
    atomic.write_text(out, render_drilldown(d, datetime.now(timezone.utc).replace(tzinfo=None),
                                            f"egresslens drilldown {source} --policy {logs / 'policy.json'}"))
    console.rule(f"7. egresslens drilldown {source} --policy {terminal(logs / 'policy.json')} --out {terminal(out)} "
                 f"({time.perf_counter() - t:.1f} s)")
    v = d.verdict
    hanging(console, [("verdict:", f"{v.verdict}" + (f" since {v.since:%Y-%m-%d %H:%M:%S} UTC" if v.since else "")
                         + (f"; reached {terminal(', '.join(v.reached[:5]))}" if v.reached else ""))])
    return out


def shows(snat_result, recs, report, drill: Path | None) -> list[str]:  # noqa: ANN001
    """What the demo's day shows, one line per feature (log text not escaped: the caller's medium does it);
    a feature the day did not show says so."""
    lines = []
    f = snat_result.findings
    if f.height:
        r = f.row(0, named=True)
        lines.append(f"SNAT {r['severity']}: {r['destination']}:{r['port']} peaks at {r['peak_utilisation']:.0%} of "
                     f"{snat_result.capacity:,} ports at {r['peak_minute']:%H:%M} UTC (egresslens snat)")
    else:
        lines.append("SNAT: no destination reached the warning level this time")
    susp = recs.suspicion
    if susp.compromised:
        ip = susp.compromised[0]
        lines.append(f"compromised pod {susp.source_summary(ip)} since {susp.first_contact(ip):%Y-%m-%d %H:%M} UTC: "
                     f"isolate it (egresslens drilldown {ip}" + (f"; {drill.name})" if drill else ")"))
    else:
        lines.append("compromised pod: none this time")
    narrow = [r for r in recs.items if r.kind == "narrow-rule"]
    if narrow:
        e = narrow[0].existing_rule or {}
        lines.append(f"{len(narrow)} rule(s) to narrow, e.g. {e.get('rule_collection_group')}/{e.get('rule_collection')}/"
                     f"{e.get('rule')} (egresslens recommend show {narrow[0].id} --policy ...)")
    else:
        lines.append("rules to narrow: none this time")
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("critical", "finding", "warning"))
    lines.append(f"report: {counts}, exit code {report.exit_code()} (egresslens report --policy ...)")
    return lines


def run_demo(directory: Path, *, events_per_hour: int, seed: int, console: Console, progress) -> int:
    from egresslens.simulate import simulate_to_dir
    from egresslens.ingest import ingest_files

    directory = Path(directory)
    logs = directory / "logs"
    db_path = directory / "egresslens.duckdb"
    t0 = time.perf_counter()
    summary = simulate_to_dir(logs, hours=24, events_per_hour=events_per_hour, seed=seed,
                              fmt="structured", layout="storage", batch=True)
    console.print(f"[bold]1. simulate[/]: a day of an AKS egress firewall into {terminal(logs)} "
                  f"({time.perf_counter() - t0:.1f} s)")
    t1 = time.perf_counter()
    con = store.connect(db_path)
    try:
        bar, start = progress("ingest")
        with bar:
            # truth.json and policy.json sit beside the log containers: they are not logs.
            containers = sorted(p for p in logs.iterdir() if p.is_dir())
            counts, results, run_id = ingest_files(con, containers, progress=start)
        console.print(f"[bold]2. ingest[/]: {len(results)} files, {counts.summary()} "
                      f"({time.perf_counter() - t1:.1f} s, {counts.read / max(time.perf_counter() - t1, 1e-9):,.0f} records/s)")
        console.print(_summary_table(con))
        console.print(_top_denied(con))
        if not counts.balanced:
            console.print("[red]counts do not balance[/]")
            return exitcodes.INPUT_ERROR
        snat_result, recs = _analyse(con, logs, console)
        report, built = _report(con, db_path, logs, directory, console)
        pods = recs.suspicion.compromised
        drill = _drilldown(con, logs, directory, console, pods[0]) if pods else None
    finally:
        con.close()
    console.rule("What this day shows")
    hanging(console, [("-", terminal(line)) for line in shows(snat_result, recs, built, drill)])
    policy = terminal(logs / "policy.json")
    console.print(f"next (README, Quick start): export EGRESSLENS_DB={terminal(db_path)}; "
                  f"egresslens recommend --policy {policy}", overflow="fold")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    console.print(f"report: {report}  (open it in a browser; the JSON summary is beside it)", markup=False,
                  highlight=False, soft_wrap=True)
    _ = summary
    return exitcodes.OK
