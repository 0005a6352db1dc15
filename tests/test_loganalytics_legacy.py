"""Summary mode over the legacy AzureDiagnostics table: the same simulated day served once as structured
AZFW* rows and once as legacy text (msg_s) must give the same flow and DNS rollups, equal to raw mode."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fakes.loganalytics_server import (
    FakeCredential,
    FakeLogAnalytics,
    fixture_tables,
    legacy_fixture,
)

from egresslens import legacy_grammar, store
from egresslens.sources import kql
from egresslens import ingest
from egresslens.sources.loganalytics import LogAnalyticsError, LogAnalyticsSource, Settings, Target

WS = "11111111-2222-3333-4444-555555555555"
START = datetime(2025, 7, 1)
END = START + timedelta(hours=3)
NOW = END + timedelta(hours=2)
DAY = dict(hours=3, events_per_hour=800, start=START,
           tables=("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery"))
FLOW_COLS = ("hour, firewall, kind, protocol, source_ip, destination_ip, destination_fqdn, destination_port, action, "
             "action_reason, policy, rule_collection_group, rule_collection, rule, hits, first_seen, last_seen")
DNS_COLS = ("hour, firewall, source_ip, query_name, query_type, response_code, queries, errors, "
            "round(total_duration_s, 6), round(max_duration_s, 6), first_seen, last_seen")


@pytest.fixture(scope="module")
def structured():
    return fixture_tables(**DAY)


@pytest.fixture(scope="module")
def legacy():
    return legacy_fixture(**DAY)


def run(data, *, mode, row_cap=500_000, **kw):
    con = store.connect_memory()
    with FakeLogAnalytics(WS, tables=dict(data), row_cap=row_cap) as fake:
        source = LogAnalyticsSource(FakeCredential(), Target(workspace_id=WS), start=START, end=END, now=NOW,
                                    endpoint=fake.endpoint, mode=mode,
                                    settings=Settings(backoff_base=0.001, window=timedelta(minutes=30), row_cap=row_cap),
                                    **kw)
        stats = source.summary(ingest.run(con, source))
        templates = sorted({r.template for r in fake.requests})
    return con, stats, templates


def rows(con, table, cols):
    return sorted(con.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)


def test_fixtures_are_the_same_day(structured, legacy):
    assert set(legacy) == {"AzureDiagnostics"}
    assert legacy["AzureDiagnostics"].height == sum(df.height for df in structured.values())
    assert legacy["AzureDiagnostics"]["msg_s"].str.contains(" request from ").any()


def test_legacy_summary_equals_structured_summary_and_raw(structured, legacy):
    s_raw, s_raw_stats, _ = run(structured, mode="raw")
    l_raw, l_raw_stats, _ = run(legacy, mode="raw")
    s_sum, s_stats, _ = run(structured, mode="summary")
    l_sum, l_stats, l_tpl = run(legacy, mode="summary")
    assert s_stats.tables == ["flows", "dns"] and l_stats.tables == ["flows_legacy", "dns_legacy"]
    assert "summary_flows_legacy" in l_tpl and "summary_flows" not in l_tpl
    assert l_raw_stats.counts.quarantined == 0
    # identical rollups (everything but ingest_run_id), whichever table the firewall logs to
    for table, cols in (("flow_rollups", FLOW_COLS), ("dns_rollups", DNS_COLS)):
        a, b = rows(s_sum, table, cols), rows(l_sum, table, cols)
        assert a and a == b, table
    assert rows(s_sum, "flow_rollups", "rollup_id") == rows(l_sum, "flow_rollups", "rollup_id")
    # hit totals equal raw-mode row counts, in both workspaces
    for raw_con, sum_con in ((s_raw, s_sum), (l_raw, l_sum)):
        flows = raw_con.execute("SELECT count(*) FROM flows").fetchall()[0][0]
        dns = raw_con.execute("SELECT count(*) FROM dns_queries").fetchall()[0][0]
        assert flows > 0 and dns > 0
        assert sum_con.execute("SELECT sum(hits) FROM flow_rollups").fetchall()[0][0] == flows
        assert sum_con.execute("SELECT sum(queries) FROM dns_rollups").fetchall()[0][0] == dns
    # and the rollups are the raw canonical rows grouped by hour (same values, not just the same totals)
    grouped = l_raw.execute("""
        SELECT date_trunc('hour', time) AS hour, firewall, kind, protocol, source_ip, destination_ip, destination_fqdn,
               destination_port, action, action_reason, policy, rule_collection_group, rule_collection, rule,
               count(*) AS hits, min(time) AS first_seen, max(time) AS last_seen
        FROM flows GROUP BY ALL""").fetchall()
    assert sorted(grouped, key=repr) == rows(l_sum, "flow_rollups", FLOW_COLS)
    # canonical values as the local normaliser writes them
    assert l_sum.execute("""SELECT count(*) FROM flow_rollups WHERE protocol <> upper(protocol)
        OR destination_fqdn <> lower(destination_fqdn) OR destination_fqdn LIKE '%.' OR action NOT IN ('Allow', 'Deny', 'DNAT')
        OR destination_port = 0 OR (protocol = 'ICMP' AND destination_port IS NOT NULL)
        OR rule <> trim(rule)""").fetchall()[0][0] == 0
    assert l_sum.execute("SELECT count(*) FROM flow_rollups WHERE action_reason = 'Default Action'").fetchall()[0][0] > 0
    print(f"\nbytes moved, legacy workspace: raw {l_raw_stats.bytes:,} summary {l_stats.bytes:,} "
          f"(x{l_raw_stats.bytes / l_stats.bytes:.1f}); structured: raw {s_raw_stats.bytes:,} summary {s_stats.bytes:,}")
    assert l_stats.bytes * 3 < l_raw_stats.bytes


def test_capped_legacy_summary_splits_to_the_same_rollups(legacy):
    whole, _, _ = run(legacy, mode="summary")
    capped, stats, _ = run(legacy, mode="summary", row_cap=150, tables="flows_legacy,dns_legacy")
    assert stats.splits > 0
    for table, cols in (("flow_rollups", FLOW_COLS), ("dns_rollups", DNS_COLS)):
        assert rows(capped, table, cols) == rows(whole, table, cols)


def test_auto_picks_legacy_only_when_only_azurediagnostics_has_data(structured, legacy):
    _, stats, templates = run(legacy, mode="summary")
    assert stats.tables == ["flows_legacy", "dns_legacy"]
    assert templates == ["detect", "summary_dns_legacy", "summary_flows_legacy"]
    _, stats, templates = run(structured, mode="summary")
    assert templates == ["detect", "summary_dns", "summary_flows"]
    _, stats, templates = run({}, mode="summary")
    assert stats.tables == [] and templates == ["detect"]


def test_both_formats_for_one_firewall_are_counted_once(structured, legacy):
    only, _, _ = run(structured, mode="summary")
    both, stats, _ = run({**structured, **legacy}, mode="summary")
    assert stats.tables == ["flows", "dns", "flows_legacy", "dns_legacy"]
    for table, cols in (("flow_rollups", FLOW_COLS), ("dns_rollups", DNS_COLS)):
        assert rows(both, table, cols) == rows(only, table, cols)


def test_unknown_summary_table_is_one_sentence(legacy):
    with pytest.raises(LogAnalyticsError, match="flows_legacy"):
        run(legacy, mode="summary", tables="AzureDiagnostics")


def test_legacy_templates_use_the_normaliser_grammars_verbatim():
    flows = kql.load("summary_flows_legacy").text
    dns = kql.load("summary_dns_legacy").text
    for pattern in (legacy_grammar.APP_RE, legacy_grammar.NET_RE, legacy_grammar.NAT_RE, legacy_grammar.RULE_TAIL_RE):
        assert f'@"{pattern}"' in flows
    for pattern in (legacy_grammar.DNS_RE, legacy_grammar.DNS_ERR_RE):
        assert f'@"{pattern}"' in dns
    for name in ("summary_flows_legacy", "summary_dns_legacy"):
        assert [p for p, _ in kql.load(name).params] == ["time_start", "time_end", "firewall"]
