"""Summary mode against raw rows on a simulated week: a hundred times fewer bytes, the same answers.

One simulated week of a firewall is served by the loopback Log Analytics workspace and held three ways:

* `raw`: its raw rows (the simulator's canonical rows, as `ingest` stores them);
* `hourly`: the same rows taken to hour grain by `egresslens.simulate.rollups` (the local statement of
  what the summary queries compute), threats as raw rows;
* `summary`: what `ingest loganalytics --mode summary` stores from the workspace through the real
  client: the front-coded summaries of `egresslens/sources/summary_wire.py`, plus the threat tables
  read raw (summaries replace flows and DNS queries; threat events stay rows).

Every analysis (recommend, snat, dns, the report, drilldowns at hour grain) gives exactly the same
answers from `summary` as from `hourly`. Against `raw`, every answer made at hour grain is the same;
what needs sub-hour timing and so differs by design is named: SNAT's per-minute rates (rollup hours are
spread over their minutes and say so), DNS latency percentiles (from group means, marked
`rollup-mean`) and the network-layer resolved-then-denied link (raw timing only).

The byte ratio is measured on four hours of the busy day the Benchmarks page uses (20,000 flow events
an hour): summary rows against the raw rows of the tables they replace.
"""

from __future__ import annotations

import ipaddress
import json
import math
from datetime import datetime, timedelta
from functools import lru_cache

import polars as pl
import pytest
from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, fixture_tables

from egresslens import dns, snat, store
from egresslens.analyse import Window
from egresslens.ingest import store_canonical_frames
from egresslens.recommend import recommend
from egresslens.report import build_report
from egresslens.report import summary as report_summary
from egresslens.report.drilldown import drilldown
from egresslens.simulate import generate
from egresslens.simulate.rollups import dns_rollups_sql, flow_rollups_sql
from egresslens.sources import kql
from conftest import run_loganalytics
from egresslens.sources.loganalytics import Settings, Target

WS = "11111111-2222-3333-4444-555555555555"
START = datetime(2025, 7, 7)
HOURS = 168
EVENTS = 1_000  # flow events an hour (DNS and threats come on top)
WINDOW = Window(START, START + timedelta(hours=HOURS))
REPLACED = ("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery")


@lru_cache(maxsize=None)
def stores():
    sc = generate(hours=HOURS, events_per_hour=EVENTS, seed=7, start=START)
    raw = store.connect_memory()
    store_canonical_frames(raw, flows=sc.flows, dns_queries=sc.dns_queries, threats=sc.threats)
    hourly = store.connect_memory()
    store_canonical_frames(hourly, threats=sc.threats)
    for table, sql in (("flow_rollups", flow_rollups_sql("flows")), ("dns_rollups", dns_rollups_sql("dns_queries"))):
        hourly.register("r", raw.sql(sql).to_arrow_table())
        hourly.execute(f"INSERT INTO {table} BY NAME SELECT * FROM r")
        hourly.unregister("r")
    summary = store.connect_memory()
    with FakeLogAnalytics(WS, tables=fixture_tables(seed=7, scenario=sc)) as fake:
        for mode, tables, window in (("summary", "auto", timedelta(hours=1)),
                                     ("raw", "AZFWThreatIntel,AZFWIdpsSignature", timedelta(days=2))):
            run_loganalytics(summary, FakeCredential(), Target(workspace_id=WS), start=WINDOW.start, end=WINDOW.end,
                             now=WINDOW.end + timedelta(hours=1), mode=mode, tables=tables, endpoint=fake.endpoint,
                             settings=Settings(backoff_base=0.001, window=window))
    return sc, {"raw": raw, "hourly": hourly, "summary": summary}


def same(a, b, path="") -> list[str]:
    """Where two JSON-like values differ (floats to 1e-9: sums in another order differ in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        close = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
        return [] if close else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _frame(df: pl.DataFrame) -> list[dict]:
    return json.loads(df.write_json()) if df.height else []


SUBJECTS = ("github.com", "10.244.5.11", "91.189.91.157", "allow-github")


@lru_cache(maxsize=None)
def answers(name: str) -> dict:
    """Every analysis over the week, as plain data."""
    _, cons = stores()
    con = cons[name]
    recs = recommend(con, WINDOW)
    rep = build_report(con, WINDOW, generated_at=datetime(2025, 7, 14, 6, 0), db="store.duckdb", since="7d")
    doc = report_summary.document(rep)
    doc.pop("timings")
    # the store's own ingest history (runs, their times) is not an answer about the traffic
    fresh = doc["sections"]["freshness"]
    fresh["summary"].pop("last_good_ingest", None)
    fresh["tables"].pop("Last ingest runs", None)
    fresh["facts"] = [f for f in fresh["facts"] if "ingest" not in f]
    drills = {}
    for subject in SUBJECTS:
        d = drilldown(con, WINDOW, subject)
        drills[subject] = {"kind": d.kind, "facts": d.facts, **{k: _frame(v) for k, v in d.frames.items()}}
    return {
        "recommend": {"items": recs.to_dicts(), "warnings": recs.warnings, "stats": recs.stats,
                      "rule_scores": recs.rule_scores, "dns_attribution": recs.dns_attribution},
        "snat": snat.analyse_snat(con, WINDOW).to_dict(),
        "dns": dns.analyse_dns(con, WINDOW).to_dict(),
        "report": json.loads(json.dumps(doc, default=str)),
        "drilldown": json.loads(json.dumps(drills, default=str)),
    }


def test_summary_holds_every_group_of_the_week():
    sc, cons = stores()
    flows = "hour, firewall, kind, protocol, source_ip, destination_ip, destination_fqdn, destination_port, action, " \
            "action_reason, policy, rule_collection_group, rule_collection, rule, hits, first_seen, last_seen, rollup_id"
    dnsc = "hour, firewall, source_ip, query_name, query_type, response_code, queries, errors, first_seen, last_seen, rollup_id"
    for table, cols in (("flow_rollups", flows), ("dns_rollups", dnsc)):
        a, b = (sorted(cons[n].execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr) for n in ("hourly", "summary"))
        assert a and a == b, table
    assert cons["summary"].execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0] == sc.flows.height
    assert cons["summary"].execute("SELECT sum(queries) FROM dns_rollups").fetchall()[0][0] == sc.dns_queries.height
    durations = """SELECT sum(total_duration_s), max(max_duration_s), count(*) FILTER (WHERE total_duration_s IS NULL)
                   FROM dns_rollups"""
    (ta, ma, na), (tb, mb, nb) = (cons[n].execute(durations).fetchall()[0] for n in ("hourly", "summary"))
    assert tb == pytest.approx(ta, rel=1e-12) and mb == ma and na == nb == 0


@pytest.mark.parametrize("analysis", ["recommend", "snat", "dns", "report", "drilldown"])
def test_every_analysis_answers_the_same_from_summaries_as_from_hourly_rows(analysis):
    diffs = same(answers("hourly")[analysis], answers("summary")[analysis], analysis)
    assert not diffs, "\n".join(diffs[:20])


def _drop(value, paths: set[str], path=""):
    """The value without the named paths (a `[]` in a path stands for every item)."""
    if isinstance(value, dict):
        return {k: _drop(v, paths, f"{path}.{k}") for k, v in value.items() if f"{path}.{k}" not in paths}
    if isinstance(value, list):
        return [_drop(v, paths, f"{path}[]") for v in value]
    return value


# what only raw timing gives, per analysis: left out of the comparison with raw rows, checked apart
SUB_HOUR = {
    "snat": {".notes", ".rate_basis", ".findings[].rate_basis", ".findings[].peak_utilisation", ".findings[].peak_ports",
             ".findings[].peak_minute", ".findings[].first_minute", ".findings[].last_minute",
             ".findings[].minutes_at_warning", ".findings[].minutes_at_critical", ".findings[].trend_per_hour",
             ".findings[].minutes_to_exhaustion", ".findings[].top_sources", ".findings[].fix", ".findings[].detail"},
    "dns": {".notes", ".by_group[].latency_basis", ".by_group[].p50_latency_s", ".by_group[].p95_latency_s",
            ".by_group[].p99_latency_s", ".by_name[].latency_basis", ".by_name[].p50_latency_s",
            ".by_name[].p95_latency_s", ".by_name[].p99_latency_s", ".resolved_then_denied",
            ".firewalls[].notes", ".firewalls[].health.latency_basis", ".firewalls[].health.p50_latency_s",
            ".firewalls[].health.p95_latency_s", ".firewalls[].health.p99_latency_s"},
}


def _covers(dest: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(dest, strict=False)
    except ValueError:
        return False


def _attributed(item: dict, ips: set[str], names: set[str]) -> bool:
    """A network-rule proposal for a denied IP that raw DNS timing names (or its address form)."""
    rule = item.get("rule") or {}
    return bool(set(rule.get("destination_fqdns") or []) & names
                or any(_covers(d, ip) for d in rule.get("destination_addresses") or [] for ip in ips))


def test_hour_grain_answers_are_the_same_as_from_raw_rows():
    raw, summ = answers("raw"), answers("summary")
    # DNS-to-IP attribution pairs each denied connection with the query its source made just before:
    # raw timing only. From summaries those IPs are proposed as addresses instead, every one covered.
    attribution = raw["recommend"]["dns_attribution"]
    ips, names = set(attribution), {n for ns in attribution.values() for n in ns}
    assert summ["recommend"]["dns_attribution"] == {}
    proposed = [d for i in summ["recommend"]["items"] if _attributed(i, ips, names)
                for d in (i.get("rule") or {}).get("destination_addresses") or []]
    assert all(any(_covers(d, ip) for d in proposed) for ip in ips), (ips, proposed)
    rest = {k: [i for i in v["items"] if not _attributed(i, ips, names)] for k, v in (("raw", raw["recommend"]),
                                                                                       ("summary", summ["recommend"]))}
    assert rest["raw"] and len(rest["raw"]) >= len(raw["recommend"]["items"]) - 2 * len(ips)
    diffs = same(rest["raw"], rest["summary"], "recommend.items")
    diffs += same(raw["recommend"]["rule_scores"], summ["recommend"]["rule_scores"], "recommend.rule_scores")
    for analysis in ("snat", "dns"):
        diffs += same(_drop(raw[analysis], SUB_HOUR[analysis]), _drop(summ[analysis], SUB_HOUR[analysis]), analysis)
    for subject in SUBJECTS:
        parts = ["kind", "timeline", "peers", "ports", "rules"]
        if subject not in ips:  # a destination's DNS history and proposals come from the attribution
            parts += ["dns", "dns_names", "recommendations"]
        for part in parts:
            diffs += same(raw["drilldown"][subject][part], summ["drilldown"][subject][part], f"drilldown.{subject}.{part}")
    assert not diffs, "\n".join(diffs[:20])
    # what needs raw timing is marked as such, never silently different
    assert summ["snat"]["rate_basis"] == "hourly-spread" and raw["snat"]["rate_basis"] == "per-minute"
    assert {f["destination"] for f in summ["snat"]["findings"]} == {f["destination"] for f in raw["snat"]["findings"]}
    assert {g["latency_basis"] for g in summ["dns"]["by_group"] if g["latency_basis"]} == {"rollup-mean"}
    layers = {r["layer"] for r in summ["dns"]["resolved_then_denied"]}
    assert "network (inferred)" not in layers
    app = [r for r in raw["dns"]["resolved_then_denied"] if r["layer"] == "application"]
    assert app == [r for r in summ["dns"]["resolved_then_denied"] if r["layer"] == "application"]
    assert raw["dns"]["suspicious"]


def test_summaries_move_a_hundred_times_fewer_bytes_than_the_rows_they_replace():
    start = datetime(2025, 7, 1, 10)
    end = start + timedelta(hours=4)
    tables = fixture_tables(hours=4, events_per_hour=20_000, start=start, tables=REPLACED)
    con = store.connect_memory()
    with FakeLogAnalytics(WS, tables=tables) as fake:
        stats = run_loganalytics(con, FakeCredential(), Target(workspace_id=WS), start=start, end=end,
                                 now=end + timedelta(hours=1), mode="summary", endpoint=fake.endpoint,
                                 settings=Settings(backoff_base=0.001))
        raw = 0  # the raw rows raw mode reads for the same events: every table, its whole ingestion range
        for table in REPLACED:
            q = kql.load(f"raw_{table}").render(time_start=start, time_end=end, ingest_start=start - timedelta(hours=1),
                                                ingest_end=end + timedelta(hours=1), firewall="")
            raw += len(fake.answer_query(f"/v1/workspaces/{WS}/query", {"query": q}, {})[2])
    rows = sum(df.height for df in tables.values())
    assert stats.rollups > 0
    assert con.execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0] + \
        con.execute("SELECT sum(queries) FROM dns_rollups").fetchall()[0][0] == rows
    print(f"\n{rows:,} rows: raw {raw:,} bytes, summary {stats.bytes:,} bytes ({raw / stats.bytes:.1f} : 1)")
    assert raw >= 100 * stats.bytes
