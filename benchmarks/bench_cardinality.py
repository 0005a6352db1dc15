"""Peak memory of every command on a day of many distinct names (CDN shards and random subdomains).

    make bench-cardinality                                  # 1M distinct names, 2M records
    .venv/bin/python benchmarks/bench_cardinality.py --names 1M [--commands ingest,recommend,...]
        [--cache .bench-cache] [--out bench-output/cardinality-1M.json] [--budget 2GiB]

The input is two days of a structured storage archive (`AZFWApplicationRule` and `AZFWDnsQuery`, one
PT1H.json per hour and category), written once by DuckDB into the cache directory. Each day has NAMES
distinct query names, each resolved once and requested once (2 x NAMES records a day); half of the
second day's names were seen the day before (the report's "what changed" compares the two). 70 % are
hashed shards under 40 CDN zones (`<12 hex>.edge7.cdn-example.net`), 30 % one name under a zone of its
own (`www.<8 hex>-<n>.com`, as many owner zones); 5 % of the queries are NXDOMAIN; 40 % of the requests
are denied by the default action, the rest allowed by one broad rule (`app-egress/web/allow-web`,
target `*`, in the policy written beside the input). 300 sources in three /24 blocks.

Each command then runs as a user runs it (the analyses over the second day, `--since 24h`, with the
policy), in its own process, against the same store (ingested once by the first command): its peak RSS
and seconds are taken from outside by `compare.measure` (the child's own rusage). `nightly` runs last,
on a fresh store, ingesting both days and writing the report in one process, as the CronJob's first
night does. Prints a table and writes it all as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import measure, parse_rows  # noqa: E402

COMMANDS = ("ingest", "recommend", "report", "dns", "snat", "drilldown", "nightly")
RESOURCE = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG-HUB/PROVIDERS/"
            "MICROSOFT.NETWORK/AZUREFIREWALLS/FW-HUB-01")
CDN_ZONES = 40
DAY = datetime(2026, 3, 1)


DAYS = 2
POLICY = [{"name": "app-egress", "properties": {"priority": 300, "ruleCollections": [{
    "name": "web", "priority": 100, "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
    "action": {"type": "Allow"}, "rules": [
        {"name": "allow-web", "ruleType": "ApplicationRule", "sourceAddresses": ["10.244.0.0/16"],
         "targetFqdns": ["*"], "protocols": [{"protocolType": "Https", "port": 443}]},
        {"name": "allow-legacy-ftp", "ruleType": "ApplicationRule", "sourceAddresses": ["10.244.0.0/16"],
         "targetFqdns": ["ftp.example.org"], "protocols": [{"protocolType": "Http", "port": 80}]}]}]}}]


def _names_sql(names: int, day: int) -> str:
    """One row per distinct name of `day`: i, name, the hour its events fall in, a source, and its fate
    (half the names of a day are the second half of the day before)."""
    cdn = int(names * 0.7)
    return f"""
      SELECT i, CASE WHEN i < {cdn}
                     THEN substr(md5(i::VARCHAR), 1, 12) || '.edge' || (i % {CDN_ZONES}) || '.cdn-example.net'
                     ELSE 'www.' || substr(md5(i::VARCHAR), 1, 8) || '-' || i || '.com' END AS name,
             (i * 7919) % 24 AS hour, ((i * 104729) % 86_400_000_000 // 24) AS micros,
             '10.244.' || (i % 3) || '.' || (10 + (i // 3) % 100) AS source_ip,
             hash(i) % 100 < 5 AS nx, hash(i + 1) % 100 < 40 AS denied
      FROM (SELECT j + {day * (names // 2)} AS i FROM range({names}) t(j))"""


def build_input(out: Path, names: int) -> Path:
    """Write the days' archive once (about 80 s and 1.2 GB at 1M names a day)."""
    done = out / ".complete"
    if done.exists():
        return out
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    for day in range(DAYS):
        _write_day(con, out, names, day)
    con.close()
    (out.parent / f"{out.name}-policy.json").write_text(json.dumps(POLICY, indent=2) + "\n")
    done.write_text(json.dumps({"names": names, "days": DAYS, "records": DAYS * 2 * names}))
    return out


def _write_day(con, out: Path, names: int, day: int) -> None:  # noqa: ANN001 - a DuckDB connection
    con.execute(f"CREATE OR REPLACE TABLE n AS {_names_sql(names, day)}")
    ts = (f"strftime(TIMESTAMP '2026-03-0{day + 1}' + to_hours(hour) + to_microseconds(micros + {{off}}), "
          "'%Y-%m-%dT%H:%M:%S.%f+00:00')")
    for hour in range(24):
        for category, props, off in (
            ("AZFWDnsQuery", f"""{{'SourceIp': source_ip, 'SourcePort': 30000 + i % 30000, 'QueryId': i % 65536,
                'QueryType': 'A', 'QueryClass': 'IN', 'QueryName': name || '.', 'Protocol': 'udp', 'RequestSize': 60,
                'DnssecOkBit': false, 'EDNS0BufferSize': 1232,
                'ResponseCode': CASE WHEN nx THEN 'NXDOMAIN' ELSE 'NOERROR' END, 'ResponseFlags': 'qr,rd,ra',
                'ResponseSize': 120, 'RequestDurationSecs': 0.002 + (i % 50) / 1000.0, 'ErrorNumber': 0,
                'ErrorMessage': ''}}""", "0"),
            ("AZFWApplicationRule", f"""{{'Protocol': 'HTTPS', 'SourceIp': source_ip, 'SourcePort': 40000 + i % 20000,
                'DestinationPort': 443, 'Fqdn': name, 'TargetUrl': '',
                'Action': CASE WHEN denied THEN 'Deny' ELSE 'Allow' END, 'Policy': 'fw-policy',
                'RuleCollectionGroup': CASE WHEN denied THEN '' ELSE 'app-egress' END,
                'RuleCollection': CASE WHEN denied THEN '' ELSE 'web' END,
                'Rule': CASE WHEN denied THEN '' ELSE 'allow-web' END,
                'ActionReason': CASE WHEN denied THEN 'Default Action' ELSE '' END, 'IsTlsInspected': false,
                'WebCategory': '', 'IsExplicitProxyRequest': false}}""", "20000"),
        ):
            path = (out / f"insights-logs-{category.lower()}" / f"resourceId={RESOURCE}" / "y=2026" / "m=03" / f"d=0{day + 1}"
                    / f"h={hour:02d}" / "m=00" / "PT1H.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            con.execute(f"""COPY (SELECT {ts.format(off=off)} AS time, '{RESOURCE}' AS resourceId,
                                         '{category}' AS category, {props} AS properties
                                  FROM n WHERE hour = {hour} ORDER BY micros)
                            TO '{path}' (FORMAT json)""")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "egresslens.cli", *args]


def command_lines(name: str, data: Path, work: Path) -> list[str]:
    db = str(work / "store.duckdb")
    out = work / "out"
    policy = str(data.parent / f"{data.name}-policy.json")
    return {
        "ingest": cli("ingest", "files", str(data), "--db", db, "--quiet", "--json"),
        "recommend": cli("recommend", "--db", db, "--since", "24h", "--policy", policy, "--format", "json",
                         "--out", str(out / "recs.json")),
        "report": cli("report", "--db", db, "--since", "24h", "--compare-to", "24h", "--policy", policy,
                      "--out", str(out / "report.html")),
        "dns": cli("dns", "--db", db, "--since", "24h", "--json"),
        "snat": cli("snat", "--db", db, "--since", "24h", "--json"),
        "drilldown": cli("drilldown", "cdn-example.net", "--db", db, "--since", "24h", "--policy", policy,
                         "--out", str(out / "drill.html")),
        "nightly": cli("nightly", "--db", str(work / "nightly.duckdb"), "--files", str(data), "--out-dir",
                       str(out / "nightly"), "--since", "24h", "--compare-to", "24h", "--policy", policy),
    }[name]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default="1M", help="Distinct names a day (records: twice as many a day).")
    ap.add_argument("--commands", default=",".join(COMMANDS))
    ap.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    ap.add_argument("--work", type=Path, default=None, help="Where the stores go (default: CACHE/cardinality-work).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--budget", default=None, help="EGRESSLENS_MEMORY_LIMIT for every command (default: the tool's).")
    args = ap.parse_args(argv)
    names = parse_rows(args.names)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if unknown := set(commands) - set(COMMANDS):
        ap.error(f"unknown commands: {', '.join(sorted(unknown))}")
    data = build_input(args.cache / f"cardinality-{DAYS}d-{names}", names)
    work = args.work or args.cache / "cardinality-work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    if args.budget:
        os.environ["EGRESSLENS_MEMORY_LIMIT"] = args.budget
    if "ingest" not in commands and any(c != "nightly" for c in commands):
        commands.insert(0, "ingest")  # the other commands read the ingested store
    results = []
    for name in commands:
        run = measure(command_lines(name, data, work))
        err = (run["stderr"] or "").strip().splitlines()
        results.append({"command": name, "exit": run["exit"], "seconds": round(run["seconds"], 1),
                        "cpu_seconds": round(run["cpu_seconds"], 1), "peak_rss_mib": round(run["peak_rss_mib"]),
                        "last_stderr_line": err[-1][:300] if err else ""})
        r = results[-1]
        print(f"{name:<10} exit {r['exit']:>3}  {r['seconds']:>7.1f} s  {r['cpu_seconds']:>7.1f} CPU s  "
              f"peak RSS {r['peak_rss_mib']:>6,} MiB  {r['last_stderr_line'][:90]}", flush=True)
    doc = {"names_per_day": names, "days": DAYS, "records": DAYS * 2 * names, "budget": os.environ.get("EGRESSLENS_MEMORY_LIMIT", "default"),
           "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "results": results}
    out = args.out or Path("bench-output") / f"cardinality-{args.names}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
