"""Benchmark `recommend` over 30 days of hourly rollups for a busy firewall.

Writes `flow_rollups` (and `dns_rollups`) straight into a DuckDB store with SQL: per hour, a few
thousand (source, destination, port, action, rule) groups whose `hits` add up to tens of millions of
underlying events over the month. Then times `recommend` (and the what-if replay) on the full window.

    .venv/bin/python benchmarks/bench_recommend.py [--days 30] [--groups-per-hour 6000] [--db PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from egresslens import store
from egresslens.analyse import Window
from egresslens.recommend import parse_policy, recommend, whatif

POLICY = [{"name": "app-egress", "priority": 300, "ruleCollections": [{
    "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "workload-apps", "priority": 200,
    "action": {"type": "Allow"}, "rules": [
        {"ruleType": "ApplicationRule", "name": "allow-saas", "sourceAddresses": ["*"],
         "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["*.saas-example.com"], "fqdnTags": []},
        {"ruleType": "ApplicationRule", "name": "unused", "sourceAddresses": ["10.9.0.0/16"],
         "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["old.example.org"], "fqdnTags": []},
    ]}]}]


def build(db: Path, days: int, groups_per_hour: int) -> tuple[int, int]:
    con = store.connect(db)
    start = datetime(2026, 1, 1)
    hours = days * 24
    con.execute("""
    INSERT INTO flow_rollups
    WITH h AS (SELECT range AS hi FROM range($hours)),
    g AS (SELECT range AS gi FROM range($gph)),
    x AS (
      SELECT hi, gi, hash(hi * 1000003 + gi) AS r, (gi % 1000) AS d
      FROM h CROSS JOIN g
    )
    SELECT md5(hi::VARCHAR || '-' || gi::VARCHAR) AS rollup_id,
           $start::TIMESTAMP + to_hours(hi) AS hour,
           'fw-busy' AS firewall,
           CASE WHEN d < 800 THEN 'application' ELSE 'network' END AS kind,
           CASE WHEN d < 800 THEN 'HTTPS' WHEN d < 900 THEN 'TCP' ELSE 'UDP' END AS protocol,
           '10.244.' || ((r >> 8) % 64)::VARCHAR || '.' || ((r >> 16) % 250 + 2)::VARCHAR AS source_ip,
           CASE WHEN d >= 800 THEN '52.' || (d % 7)::VARCHAR || '.' || (d % 13)::VARCHAR || '.' || (d % 50 + 1)::VARCHAR END AS destination_ip,
           CASE WHEN d < 400 THEN 'api' || (d % 40)::VARCHAR || '.saas-example.com'
                WHEN d < 800 THEN 'svc' || (d % 150)::VARCHAR || '.partner' || (d % 60)::VARCHAR || '.example.net' END AS destination_fqdn,
           CASE WHEN d < 800 THEN 443 WHEN d < 900 THEN 5432 + (d % 3) ELSE 123 END AS destination_port,
           CASE WHEN d < 400 THEN 'Allow' ELSE 'Deny' END AS action,
           CASE WHEN d < 400 THEN NULL ELSE 'Default Action' END AS action_reason,
           CASE WHEN d < 400 THEN 'fw-policy' END AS policy,
           CASE WHEN d < 400 THEN 'app-egress' END AS rule_collection_group,
           CASE WHEN d < 400 THEN 'workload-apps' END AS rule_collection,
           CASE WHEN d < 400 THEN 'allow-saas' END AS rule,
           (1 + r % 40)::BIGINT AS hits,
           $start::TIMESTAMP + to_hours(hi) + to_seconds((r % 60)::BIGINT) AS first_seen,
           $start::TIMESTAMP + to_hours(hi) + to_seconds((3000 + r % 500)::BIGINT) AS last_seen,
           1 AS ingest_run_id
    FROM x
    """, {"hours": hours, "gph": groups_per_hour, "start": start}).fetchall()
    rows, events = con.execute("SELECT count(*), sum(hits) FROM flow_rollups").fetchall()[0]
    con.close()
    return rows, events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--groups-per-hour", type=int, default=6000)
    ap.add_argument("--db", type=Path)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.duckdb"
    t = time.perf_counter()
    rows, events = build(db, args.days, args.groups_per_hour)
    print(f"built {rows:,} hourly rollup rows = {events:,} underlying events in {time.perf_counter() - t:.1f} s")
    con = store.connect(db, read_only=True)
    start = datetime(2026, 1, 1)
    window = Window(start, start + timedelta(days=args.days))
    policy = parse_policy(POLICY)
    t = time.perf_counter()
    recs = recommend(con, window, policy=policy)
    rec_s = time.perf_counter() - t
    print(f"recommend over {window.describe()}: {rec_s:.2f} s, {len(recs.items)} recommendations {recs.stats['by_kind']}")
    t = time.perf_counter()
    replayed = whatif.replay(con, window, recs, policy)
    print(f"what-if replay of {replayed.height:,} distinct flows: {time.perf_counter() - t:.2f} s")
    con.close()


if __name__ == "__main__":
    main()
