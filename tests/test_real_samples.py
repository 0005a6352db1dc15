"""Real Azure Firewall records published by Microsoft (tests/fixtures/real, see its README) are read
field by field as published, and the defects they showed stay fixed."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIREWALL_ID, ingest_raw, legacy_record, rows
from egresslens import exitcodes, store
from egresslens.cli import app
from egresslens.ingest import ingest_files

REAL = Path(__file__).parent / "fixtures" / "real"
LOGS = REAL / "logs"
ASIM = LOGS / "sentinel-asim"
LAB = "/subscriptions/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/resourcegroups/{}/providers/microsoft.network/azurefirewalls/{}"

# file -> (read, stored, quarantined)
EXPECTED_COUNTS = {
    "sentinel-asim/Microsoft_AzureFirewall_AZFWApplicationRule_IngestedLogs.csv": (13, 13, 0),
    "sentinel-asim/Microsoft_AzureFirewall_AZFWNetworkRule_IngestedLogs.csv": (18, 18, 0),
    "sentinel-asim/Microsoft_AzureFirewall_AZFWNatRule_IngestedLogs.csv": (6, 6, 0),
    "sentinel-asim/Microsoft_AzureFirewall_AZFWDnsQuery_IngestedLogs.csv": (12, 12, 0),
    "sentinel-asim/Microsoft_AzureFirewall_AZFWThreatIntel_IngestedLogs.csv": (10, 8, 2),  # two source ports > 65535
    "sentinel-asim/Microsoft_AzureFirewall_AZFWIdpsSignature_IngestedLogs.csv": (8, 8, 0),
    "sentinel-parsers/PT1H.json": (12, 12, 0),
    "microsoft-docs/monitor-firewall-examples.json": (5, 4, 1),  # published with a typographic closing quote
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus ingested one file per run, so each run's counts are one file's."""
    db = tmp_path_factory.mktemp("real") / "s.duckdb"
    con = store.connect(db)
    counts = {}
    for name in EXPECTED_COUNTS:
        c, results, _ = ingest_files(con, [LOGS / name])
        assert not any(r.problem for r in results), results
        counts[name] = (c.read, c.stored, c.quarantined)
    yield con, counts
    con.close()


def _row(con, sql: str, *params) -> dict:
    got = rows(con, sql, list(params))
    assert len(got) == 1, got
    return got[0]


def _check(row: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert row[key] == value, f"{key}: {row[key]!r} != {value!r}"


def test_every_corpus_file_is_listed_with_its_counts():
    on_disk = {str(p.relative_to(LOGS)) for p in LOGS.rglob("*") if p.is_file()}
    assert on_disk == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_each_real_file_reads_stores_and_quarantines_exactly(corpus, name):
    _, counts = corpus
    assert counts[name] == EXPECTED_COUNTS[name]


def test_structured_application_rows_match_their_source(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM flows WHERE destination_fqdn = 'rt.services.visualstudio.com'"), dict(
        time=datetime(2025, 11, 21, 20, 13, 8, 223234), firewall=LAB.format("westus3", "test-lab-wus3-fw-04"),
        kind="application", log_format="structured", protocol="HTTPS", source_ip="10.1.174.123", source_port=60326,
        destination_port=443, target_url=None, action="Allow", action_reason=None, policy="Global-Policy-Premium",
        rule_collection_group="DefaultApplicationRuleCollectionGroup", rule_collection="DSRE_Allowed_Standard_Ports_Global",
        rule="Allow_Standard_Ports_EGRC#1804280-01", web_category=None, is_tls_inspected=False, is_explicit_proxy=False))


def test_structured_sni_missing_row_is_stored_as_a_deny(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM flows WHERE source_ip = '10.2.243.134'"), dict(
        kind="application", action="Deny", action_reason="SNI TLS extension was missing", source_port=55766,
        destination_fqdn=None, destination_port=None, policy=None, rule=None))


def test_structured_network_and_nat_rows_match_their_source(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM flows WHERE source_ip = '10.1.176.117'"), dict(
        time=datetime(2025, 11, 21, 20, 14, 51, 213253), kind="network", protocol="UDP", source_port=59603,
        destination_ip="10.50.10.50", destination_port=53, action="Allow", icmp_type=None,
        rule="DNS-from-Spoke-to-DNS_ANYCAST-EGRC#2591142", rule_collection="Corp_to_Spoke_Global_Policies"))
    _check(_row(con, "SELECT * FROM flows WHERE source_ip = '192.168.131.10'"), dict(
        action="Deny", action_reason="Default Action", policy=None, rule_collection_group=None, rule=None,
        destination_port=179))
    long_rule = _row(con, "SELECT rule FROM flows WHERE source_ip = '192.168.162.74'")["rule"]
    assert long_rule.startswith("SPD-LabER2-LAB-EUS-VNET-1006-ACL-6657") and len(long_rule) == 400
    _check(_row(con, "SELECT * FROM flows WHERE source_ip = '203.0.113.100'"), dict(
        kind="nat", action="DNAT", protocol="TCP", source_port=38778, destination_ip="203.0.113.55",
        destination_port=22, translated_ip="10.0.0.4", translated_port=22, rule="test-rule-001",
        firewall=LAB.format("test-vnet-rg", "test-vnet-001-firewall")))


def test_structured_dns_rows_match_their_source(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM dns_queries WHERE source_ip = '192.168.0.5'"), dict(
        time=datetime(2025, 11, 21, 19, 45, 18, 76624), source_port=62241, query_id=65237, query_type="AAAA",
        query_class="IN", query_name="test-workspace-001.ods.opinsights.azure.com", protocol="udp",
        request_size=90, dnssec_ok=False, edns0_buffer_size=1232, response_code="NOERROR",
        response_flags="qr,aa,rd,ra", response_size=380, duration_s=0.000133101, error_message=None))
    assert _row(con, "SELECT duration_s FROM dns_queries WHERE query_id = 31400")["duration_s"] == pytest.approx(3.4899e-05)


def test_structured_dns_failure_rows_keep_their_client(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM dns_queries WHERE query_name = 'integration.example.com'"), dict(
        source_ip="192.168.229.11", source_port=62163, protocol="udp", query_type="A", error_message="i/o timeout",
        response_code=None, query_id=None))


def test_structured_threat_intel_and_idps_rows_match_their_source(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM threats WHERE fqdn = 'test-malware-domain.com'"), dict(
        kind="threat_intel", protocol="HTTP", source_ip="10.1.190.216", source_port=29825, destination_ip=None,
        destination_port=80, action="deny", description="Destination reported by Threat Intelligence",
        is_tls_inspected=False))
    assert _row(con, "SELECT source_port FROM threats WHERE fqdn = 'test-ddos-controller.attack'")["source_port"] == 1234
    _check(_row(con, "SELECT * FROM threats WHERE source_ip = '192.168.97.142'"), dict(
        kind="idps", protocol="TCP", source_port=3830, destination_ip="203.0.113.56", destination_port=443,
        action="alert", signature_id="2063118", category="Misc activity", severity=3,
        description="INFO Abused Hosting Domain (azurewebsites .net) in TLS SNI"))


def test_legacy_parser_samples_match_their_text(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM flows WHERE destination_ip = '12.23.13.14'"), dict(
        log_format="legacy", kind="network", protocol="ICMP", icmp_type=8, source_ip="101.202.3.4", action="Deny"))
    _check(_row(con, "SELECT * FROM flows WHERE source_port = 6065"), dict(
        log_format="legacy", kind="application", action="Deny", action_reason="SNI TLS extension was missing"))
    _check(_row(con, "SELECT * FROM threats WHERE signature_id = '2102649'"), dict(
        kind="idps", action="alert", severity=1, destination_port=1521,
        category="Attempted User Privilege Gain", description="SQL service_name buffer overflow attempt"))
    _check(_row(con, "SELECT * FROM threats WHERE fqdn = 'ocsp.sca1b.amazontrust.com'"), dict(
        kind="threat_intel", action="deny", description="Bot Networks", destination_port=80))


def test_documentation_examples_match_their_text(corpus):
    con, _ = corpus
    _check(_row(con, "SELECT * FROM flows WHERE destination_fqdn = 'www.bing.com'"), dict(
        time=datetime(2018, 4, 16, 23, 45, 4, 829503), rule_collection="ExampleRuleCollection", rule="ExampleRule",
        web_category="SearchEnginesAndPortals", source_port=53344))
    _check(_row(con, "SELECT * FROM dns_queries WHERE source_ip = '11.5.0.7'"), dict(
        query_id=15676, query_type="AAA", query_name="md-l1l1pg5lcmkq.blob.core.windows.net",
        response_flags=None, duration_s=2.000301956))
    q = _row(con, "SELECT * FROM quarantine WHERE source LIKE '%monitor-firewall-examples.json'")
    assert q["position"] == 5 and "not valid JSON" in q["reason"] and q["raw"].endswith("i/o timeout\u201d } }")


# -- each defect the samples showed, by name ------------------------------------------------------

def _structured(category: str, time: str = "2025-11-21T20:12:08.5442870Z", **props) -> str:
    return json.dumps({"time": time, "category": category, "resourceId": FIREWALL_ID, "properties": props})


def test_sni_missing_event_is_one_deny_in_structured_and_legacy_form(con):
    structured = _structured("AZFWApplicationRule", Protocol="HTTPS", SourceIp="10.0.0.1", SourcePort=6065,
                             DestinationPort=12000, Fqdn="", TargetUrl="", Action="", Policy="", RuleCollectionGroup="",
                             RuleCollection="", Rule="", ActionReason="SNI TLS extension was missing.",
                             IsTlsInspected=False, WebCategory="", IsExplicitProxyRequest=False)
    legacy = legacy_record("HTTPS request from 10.0.0.1:6065. Action: Deny. Reason: SNI TLS extension was missing.",
                           time="2025-11-21T20:12:08.5442870Z", category="AzureFirewallApplicationRule")
    counts = ingest_raw(con, [structured, legacy])
    assert (counts.stored, counts.duplicates, counts.quarantined) == (1, 1, 0)
    assert rows(con, "SELECT action FROM flows") == [{"action": "Deny"}]


def test_structured_icmp_type_is_split_off_the_protocol_like_legacy(con):
    structured = _structured("AZFWNetworkRule", time="2025-11-26T14:16:47.1397390Z", Protocol="ICMP Type=8",
                             SourceIp="10.13.2.4", SourcePort=0, DestinationIp="13.107.4.50", DestinationPort=0,
                             Action="Deny", Policy="", RuleCollectionGroup="", RuleCollection="", Rule="",
                             ActionReason="Default Action")
    legacy = legacy_record("ICMP Type=8 request from 10.13.2.4:0 to 13.107.4.50:0. Action: Deny..")
    counts = ingest_raw(con, [structured, legacy])
    assert (counts.stored, counts.duplicates) == (1, 1)
    _check(_row(con, "SELECT * FROM flows"), dict(protocol="ICMP", icmp_type=8, source_port=None, destination_port=None))


def test_structured_threat_intel_description_drops_the_prefix_like_legacy(con):
    ingest_raw(con, [_structured("AZFWThreatIntel", Protocol="HTTP", SourceIp="10.0.0.5", SourcePort=54074,
                                 DestinationIp="", DestinationPort=80, Fqdn="somemaliciousdomain.com", Action="Alert",
                                 ThreatDescription="ThreatIntel: Bot Networks", IsTlsInspected=False)])
    assert _row(con, "SELECT description FROM threats")["description"] == "Bot Networks"


@pytest.mark.parametrize("field, value", [("SourcePort", 65536), ("DestinationPort", 78901), ("SourcePort", -1)])
def test_ports_outside_0_to_65535_are_quarantined(con, field, value):
    props = dict(Protocol="TCP", SourceIp="10.0.0.1", SourcePort=50000, DestinationIp="10.1.0.1", DestinationPort=443,
                 Action="Allow")
    counts = ingest_raw(con, [_structured("AZFWNetworkRule", **{**props, field: value})])
    assert (counts.stored, counts.quarantined) == (0, 1)
    assert "not a port number" in _row(con, "SELECT reason FROM quarantine")["reason"]


def test_firewall_category_without_its_message_says_what_is_missing(con):
    raw = json.dumps({"category": "AzureFirewallNetworkRule", "time": "2025-01-01T00:00:00Z", "resourceId": FIREWALL_ID})
    ingest_raw(con, [raw])
    reason = _row(con, "SELECT reason FROM quarantine")["reason"]
    assert "without its message text" in reason and "not an Azure Firewall log category" not in reason


def test_quarantined_csv_row_shows_its_file_line_and_original_text(tmp_path):
    path = tmp_path / "AZFWNetworkRule.csv"
    lines = ["TimeGenerated,Protocol,SourceIp,SourcePort,DestinationIp,DestinationPort,Action",
             "2025-11-26T14:17:00Z,UDP,10.1.0.4,40000,91.189.91.157,123,Deny",
             "2025-11-26T14:17:01Z,UDP,10.1.0.4,99999,91.189.91.157,123,Deny"]
    path.write_text("\n".join(lines) + "\n")
    con = store.connect(tmp_path / "s.duckdb")
    ingest_files(con, [path])
    q = _row(con, "SELECT position, raw FROM quarantine")
    con.close()
    assert q == {"position": 3, "raw": lines[2]}


# -- format drift: Azure adds columns and categories over time --------------------------------------

def test_unknown_extra_columns_are_ignored_not_quarantined(tmp_path, con):
    path = tmp_path / "AZFWNetworkRule.csv"
    path.write_text("TimeGenerated,Protocol,SourceIp,SourcePort,DestinationIp,DestinationPort,Action,SomeNewColumn\n"
                    "2025-11-26T14:17:00Z,UDP,10.1.0.4,40000,91.189.91.157,123,Deny,whatever\n")
    file_con = store.connect(tmp_path / "s.duckdb")
    counts, _, _ = ingest_files(file_con, [path])
    file_con.close()
    assert (counts.stored, counts.quarantined) == (1, 0)
    record = _structured("AZFWNetworkRule", Protocol="TCP", SourceIp="10.0.0.1", SourcePort=1, DestinationIp="10.1.0.1",
                         DestinationPort=443, Action="Allow", SomeNewProperty={"nested": [1, 2]})
    assert ingest_raw(con, [record]).stored == 1


def test_unknown_azfw_category_is_quarantined_by_name_and_summed_up_once_per_run(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    new = [_structured("AZFWNewFeatureLog", time=f"2025-11-26T14:17:0{i}Z", Something="x") for i in range(3)]
    (logs / "PT1H.json").write_text("\n".join(new + [_structured("AZFWNetworkRule", Protocol="TCP", SourceIp="10.0.0.1",
                                                                SourcePort=1, DestinationIp="10.1.0.1",
                                                                DestinationPort=443, Action="Allow")]) + "\n")
    result = CliRunner().invoke(app, ["ingest", "files", str(logs), "--db", str(tmp_path / "s.duckdb"), "--quiet"])
    assert result.exit_code == exitcodes.PARTIAL
    summary = [line for line in result.stderr.splitlines() if "unknown Azure Firewall log categories" in line]
    assert summary == ["unknown Azure Firewall log categories, quarantined (a newer EgressLens may read them): "
                       "AZFWNewFeatureLog (3 records)"]
    con = store.connect(tmp_path / "s.duckdb", read_only=True)
    reasons = {r["reason"] for r in rows(con, "SELECT reason FROM quarantine")}
    con.close()
    assert len(reasons) == 1 and reasons.pop().endswith("AZFWNewFeatureLog")


def test_ingest_over_the_corpus_with_a_binary_and_an_empty_file_stores_every_good_record(tmp_path):
    import shutil

    logs = tmp_path / "logs"
    shutil.copytree(LOGS, logs)
    (logs / "program").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    (logs / "empty.json").write_bytes(b"")
    db = tmp_path / "s.duckdb"
    result = CliRunner().invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet", "--json"])
    assert result.exit_code in (exitcodes.OK, exitcodes.PARTIAL), result.output
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert summary["stored"] == sum(s for _, s, _ in EXPECTED_COUNTS.values())
    assert [f["reason"] for f in summary["files_skipped"]] == ["binary file (an ELF executable), not a log"]


def test_recommend_and_dns_print_no_none_for_empty_values(tmp_path):
    db = str(tmp_path / "s.duckdb")
    runner = CliRunner()
    runner.invoke(app, ["ingest", "files", str(LOGS), "--db", db, "--quiet"])
    window = ["--start", "2018-01-01T00:00:00", "--end", "2026-01-01T00:00:00"]
    recommend = runner.invoke(app, ["recommend", "--db", db, *window, "--format", "markdown"])
    table = runner.invoke(app, ["recommend", "--db", db, *window])
    dns = runner.invoke(app, ["dns", "--db", db, *window])
    assert recommend.exit_code == exitcodes.FINDINGS and dns.exit_code in (exitcodes.OK, exitcodes.FINDINGS)
    assert "\\(ICMP\\)" in recommend.stdout  # an ICMP destination has no port to print
    for out in (recommend.stdout, table.stdout, dns.stdout):
        assert "None" not in out
