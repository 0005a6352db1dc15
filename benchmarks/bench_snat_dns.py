"""Benchmark `snat` and `dns` over a simulated busy day (default 24 h x 1,000,000 flow events/hour).

Usage: python benchmarks/bench_snat_dns.py [--events-per-hour N] [--hours H] [--db PATH] [--rebuild]
The store is built once (hour by hour, so memory stays bounded) and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from egresslens import dns, snat
from egresslens.analyse import resolve_window
from egresslens.ingest import store_canonical_frames
from egresslens.simulate.scenario import default_start, iter_hours
from egresslens.store import connect


def build(db: Path, hours: int, events_per_hour: int) -> None:
    if db.exists():
        db.unlink()
    con = connect(db)
    t = time.perf_counter()
    for h, flows, dns_q, threats in iter_hours(hours, events_per_hour, 7, default_start(hours), 0.35):
        store_canonical_frames(con, flows=flows, dns_queries=dns_q, threats=threats)
        if h % 6 == 5:
            print(f"  built {h + 1} h in {time.perf_counter() - t:.0f} s", flush=True)
    con.close()


def timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label:<38} {time.perf_counter() - t:6.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events-per-hour", type=int, default=1_000_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--db", default="bench-output/snat_dns.duckdb")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--dns-copies", type=int, default=0,
                    help="also add N time-jittered copies of every DNS query (DNS-heavy firewall), then rerun dns")
    args = ap.parse_args()
    db = Path(args.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.rebuild or not db.exists():
        print(f"building {db}: {args.hours} h x {args.events_per_hour:,} flow events/hour")
        build(db, args.hours, args.events_per_hour)
    con = connect(db, read_only=True)
    flows = con.execute("SELECT count(*) FROM flows").fetchall()[0][0]
    queries = con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0]
    print(f"store: {flows:,} flows, {queries:,} DNS queries; {os.cpu_count()} CPUs; DuckDB threads "
          f"{con.execute('SELECT current_setting(' + repr('threads') + ')').fetchall()[0][0]}")
    window = resolve_window(con, since="24h")
    res = timed("snat (analyse_snat, 1 IP x 2 instances)", lambda: snat.analyse_snat(con, window, snat.SnatConfig()))
    print(f"  findings: {res.findings.select('destination', 'severity', 'peak_utilisation', 'ips_needed').to_dicts()}")
    timed("snat (20 public IPs, nothing to report)", lambda: snat.analyse_snat(con, window, snat.SnatConfig(public_ips=20)))
    r = timed("dns (analyse_dns, everything)", lambda: dns.analyse_dns(con, window))
    print(f"  suspicious: {r.suspicious.select('domain', 'reason', 'never_allow').to_dicts()}")
    timed("dns.suspicious_domains (never-allow list)", lambda: dns.suspicious_domains(con, window))
    con.close()
    if args.dns_copies:
        heavy = db.with_name(db.stem + f"_dns{args.dns_copies}.duckdb")
        if args.rebuild or not heavy.exists():
            import shutil
            shutil.copy(db, heavy)
            c = connect(heavy)
            c.execute(f"""INSERT INTO dns_queries BY NAME
                SELECT d.* REPLACE (md5(d.event_id || i.range::VARCHAR) AS event_id,
                                  least(d.time + to_microseconds((hash(d.event_id, i.range) % 60000000)::BIGINT),
                                        (SELECT max(time) FROM dns_queries)) AS time)
                FROM dns_queries d, range(1, {args.dns_copies + 1}) i""").fetchall()
            c.close()
        con = connect(heavy, read_only=True)
        n = con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0]
        print(f"DNS-heavy store: {n:,} DNS queries")
        window = resolve_window(con, since="24h")
        timed("dns (analyse_dns, DNS-heavy)", lambda: dns.analyse_dns(con, window))
        timed("dns.suspicious_domains (DNS-heavy)", lambda: dns.suspicious_domains(con, window))
        con.close()


if __name__ == "__main__":
    main()
