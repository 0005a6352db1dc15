"""The offline demo: one simulated day through every stage, on the embedded store."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from egresslens import exitcodes, store
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


def _analyse(con, logs: Path, console: Console) -> None:
    """Steps 3-5: the analyses every user runs next, on the same store."""
    from egresslens import dns, snat
    from egresslens.analyse import resolve_window
    from egresslens.commands import dns as dns_command
    from egresslens.commands import snat as snat_command
    from egresslens.recommend import load_policy, recommend
    from egresslens.recommend.markdown import emit

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
    console.print(emit(recs), markup=False, highlight=False)


def _report(con, db_path: Path, logs: Path, directory: Path, console: Console) -> Path:
    """Step 6: the morning report of the day, as `egresslens report --policy ... --out` writes it."""
    from egresslens.recommend import load_policy
    from egresslens.report import build_report, windows, write

    t = time.perf_counter()
    window, _ = windows(con, "24h", None)
    report = build_report(con, window, policy=load_policy(logs / "policy.json"), db=str(db_path))
    out = write(report, directory / "report.html", "html", report.exit_code())[0]
    console.rule(f"6. egresslens report --since 24h --policy {logs / 'policy.json'} --out {out} "
                 f"({time.perf_counter() - t:.1f} s)")
    console.print(", ".join(f"{report.count(s)} {s}" for s in ("critical", "finding", "warning")), markup=False)
    return out


def run_demo(directory: Path, *, events_per_hour: int, seed: int, console: Console, progress) -> int:
    from egresslens.simulate import simulate_to_dir
    from egresslens.ingest import ingest_files

    directory = Path(directory)
    logs = directory / "logs"
    db_path = directory / "egresslens.duckdb"
    t0 = time.perf_counter()
    summary = simulate_to_dir(logs, hours=24, events_per_hour=events_per_hour, seed=seed,
                              fmt="structured", layout="storage")
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
        _analyse(con, logs, console)
        report = _report(con, db_path, logs, directory, console)
    finally:
        con.close()
    console.print(f"store: {terminal(db_path)}  — try: egresslens sql --db {terminal(db_path)} \"SELECT action, count(*) FROM flows GROUP BY 1\"")
    console.print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    console.print(f"report: {report}  (open it in a browser; the JSON summary is beside it)", markup=False,
                  highlight=False, soft_wrap=True)
    _ = summary
    return exitcodes.OK
