"""Benchmark the suspicion model (`assess`: contact taint, look-alikes, coverage) on a day of many distinct names.

Writes one day straight into a DuckDB store with SQL: `--names` distinct names (default 1M) queried through the
DNS proxy and reached by as many application flows (2M records in all), from 3,000 sources: names under 150,000
owner zones of their own (each used by several sources), storage accounts under `blob.core.windows.net` (each its own owner zone), a DGA burst of
NXDOMAIN names from one source (each a finding that taints), a beacon, a pod that reaches it, and 20 typosquats
(a swapped pair) of popular zones.
Then times `assess` in a child process and reports its peak RSS beside the bare engine's: the same store's
distinct names grouped by owner in hand-written DuckDB SQL (what any look at the names costs at least).
`--commands` then runs the commands that read the assessment as a user does (`recommend`, `report`, `dns`,
`snat`, `drilldown`, over the day), each in its own process, peak RSS taken from outside (`compare.measure`).

    .venv/bin/python benchmarks/bench_suspicion.py [--names 1000000] [--db PATH] [--commands recommend,dns,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from egresslens import store

START = datetime(2026, 1, 1)


def build(db: Path, names: int) -> dict:
    con = store.connect(db)
    dga = names // 10
    con.execute("""
    CREATE TEMP TABLE n AS
    SELECT i, CASE
        WHEN i < $dga THEN substr(md5('dga' || i::VARCHAR), 1, 16) || '.com'
        WHEN i % 3 = 0 THEN 'st' || substr(md5('acct' || i::VARCHAR), 1, 14) || '.blob.core.windows.net'
        ELSE 'h' || i::VARCHAR || '.z' || substr(md5('own' || (i % 150000)::VARCHAR), 1, 9) || '.com' END AS name,
      CASE WHEN i < $dga THEN '10.9.9.9'
           ELSE '10.244.' || (hash(i) % 12)::VARCHAR || '.' || (hash(i) // 12 % 250 + 2)::VARCHAR END AS src,
      $start::TIMESTAMP + to_microseconds((hash(i) % 86400000000)::BIGINT) AS t
    FROM range($names) r(i)""", {"names": names, "dga": dga, "start": START}).fetchall()
    con.execute("""
    INSERT INTO dns_queries (event_id, time, firewall, source_ip, query_type, query_class, query_name, protocol,
                             response_code, duration_s, log_format)
    SELECT md5('q' || i::VARCHAR), t, 'fw', src, 'A', 'IN', name, 'udp',
           CASE WHEN i < $dga THEN 'NXDOMAIN' ELSE 'NOERROR' END, 0.002, 'structured' FROM n""",
                {"dga": dga}).fetchall()
    con.execute("""
    INSERT INTO flows (event_id, time, firewall, kind, protocol, source_ip, source_port, destination_fqdn,
                       destination_port, action, action_reason, log_format)
    SELECT md5('f' || i::VARCHAR), t + INTERVAL 20 MILLISECOND, 'fw', 'application', 'HTTPS', src, 40000, name, 443,
           'Deny', 'Default Action', 'structured' FROM n WHERE i >= $dga""", {"dga": dga}).fetchall()
    # a beacon after the 6-hour baseline, a pod that reaches it, typosquats of popular owner zones
    con.execute("""
    INSERT INTO dns_queries (event_id, time, firewall, source_ip, query_type, query_class, query_name, protocol,
                             response_code, duration_s, log_format)
    SELECT md5('b' || i::VARCHAR), $start::TIMESTAMP + INTERVAL 8 HOUR + to_seconds(60 * i), 'fw', '10.244.3.17', 'A',
           'IN', 'sync.cdn-update-example.org', 'udp', 'NOERROR', 0.002, 'structured' FROM range(600) r(i)
    UNION ALL
    SELECT md5('c' || i::VARCHAR), $start::TIMESTAMP + INTERVAL 12 HOUR + to_seconds(977 * i), 'fw', '10.244.4.52', 'A',
           'IN', 'sync.cdn-update-example.org', 'udp', 'NOERROR', 0.002, 'structured' FROM range(3) r(i)
    UNION ALL
    SELECT md5('t' || i::VARCHAR), $start::TIMESTAMP + INTERVAL 13 HOUR + to_seconds(i), 'fw', '10.244.5.40', 'A', 'IN',
           'x.z' || substr(md5('own' || i::VARCHAR), 2, 1) || substr(md5('own' || i::VARCHAR), 1, 1)
                 || substr(md5('own' || i::VARCHAR), 3, 7) || '.com', 'udp',
           'NOERROR', 0.002, 'structured' FROM range(20) r(i)""", {"start": START}).fetchall()
    out = {"dns_queries": con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0],
           "flows": con.execute("SELECT count(*) FROM flows").fetchall()[0][0],
           "distinct_names": con.execute("SELECT count(DISTINCT query_name) FROM dns_queries").fetchall()[0][0]}
    con.close()
    return out


def _child(db: str, what: str) -> None:
    """Run one contender in this (fresh) process and print its time and peak RSS as JSON."""
    from egresslens.analyse import Window

    con = store.connect(db, read_only=True)
    window = Window(START, START + timedelta(days=1))
    t = time.perf_counter()
    if what == "assess":
        from egresslens.suspicion import assess

        s = assess(con, window=window)
        extra = {"names": s.names.height, "compromised": len(s.compromised),
                 "lookalikes": int((s.names["kind"] == "lookalike").sum())}
    else:  # the bare engine: every distinct name with its owner zone, grouped by owner
        from egresslens.suspicion.suffixes import owner_sql, register_rules

        register_rules(con)
        n = con.execute(f"""SELECT count(*) FROM (SELECT owner, count(*) FROM ({owner_sql(
            "SELECT query_name AS name FROM dns_queries UNION SELECT destination_fqdn FROM flows")}) GROUP BY owner)""").fetchall()
        extra = {"owners": n[0][0]}
    secs = time.perf_counter() - t
    print(json.dumps({"what": what, "seconds": round(secs, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}))


COMMANDS = ("recommend", "report", "dns", "snat", "drilldown")


def command_line(name: str, db: Path, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "egresslens.cli", name] + (["sync.cdn-update-example.org"] if name == "drilldown" else [])
    return cli + ["--db", str(db), "--since", "24h"] + {
        "recommend": ["--format", "json", "--out", str(out / "recs.json")],
        "report": ["--out", str(out / "report.html")],
        "dns": ["--json"], "snat": ["--json"],
        "drilldown": ["--out", str(out / "drill.html")]}[name]


def run_commands(db: Path, names: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare import measure

    with tempfile.TemporaryDirectory() as out:
        for name in names:
            run = measure(command_line(name, db, Path(out)))
            err = (run["stderr"] or "").strip().splitlines()
            print(json.dumps({"command": name, "exit": run["exit"], "seconds": round(run["seconds"], 1),
                              "peak_rss_mib": round(run["peak_rss_mib"]), "last_stderr_line": err[-1][:160] if err else ""}),
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path)
    ap.add_argument("--commands", default="", help=f"Also run these commands on the store: {','.join(COMMANDS)}.")
    ap.add_argument("--child", nargs=2, metavar=("DB", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if unknown := set(commands) - set(COMMANDS):
        ap.error(f"unknown commands: {', '.join(sorted(unknown))}")
    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.duckdb"
    if not db.exists():
        t = time.perf_counter()
        print(f"built {build(db, args.names)} in {time.perf_counter() - t:.1f} s")
    for what in ("bare", "assess"):
        out = subprocess.run([sys.executable, __file__, "--child", str(db), what], capture_output=True, text=True,
                             check=True)
        print(out.stdout.strip())
    run_commands(db, commands)


if __name__ == "__main__":
    main()
