"""Specification of the log simulator: canonical frames, rendered records, ground truth, policy."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from egresslens.schema import DNS_QUERIES, FLOWS, THREATS
from egresslens.simulate import Scenario, generate, simulate_to_dir, write
from egresslens.simulate.policy import evaluate, fqdn_matches

START = datetime(2025, 7, 1, 0, 0)
HOURS = 3
EPH = 4000
DROPPED = {"event_id", "log_format", "ingest_run_id"}
TYPES = {"VARCHAR": pl.String, "INTEGER": pl.Int32, "BIGINT": pl.Int64, "BOOLEAN": pl.Boolean,
         "DOUBLE": pl.Float64, "TIMESTAMP": pl.Datetime("us")}


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return generate(hours=HOURS, events_per_hour=EPH, seed=11, start=START)


@pytest.fixture(scope="module")
def storage_both(sc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("storage")
    write(sc, out, fmt="both", layout="storage")
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _records(root: Path):
    for p in sorted(root.rglob("PT1H.json")):
        for line in p.read_text().splitlines():
            yield p, json.loads(line)


# --- shape of the canonical frames -----------------------------------------------------------

@pytest.mark.parametrize("attr,table", [("flows", FLOWS), ("dns_queries", DNS_QUERIES), ("threats", THREATS)])
def test_frames_have_exactly_the_canonical_columns_and_types(sc, attr, table):
    """Other modules insert these frames straight into the store: names, order and types must match."""
    df = getattr(sc, attr)
    expected = [(c.name, TYPES[c.type]) for c in table.columns if c.name not in DROPPED]
    assert list(df.schema.items()) == expected


def test_counts_flow_events_per_hour_and_adds_dns_and_threats(sc):
    """events_per_hour counts flows; DNS and threats come on top, in every hour."""
    assert sc.flows.height == HOURS * EPH
    per_hour = sc.flows.group_by(pl.col("time").dt.truncate("1h")).len()
    assert per_hour["len"].to_list() == [EPH] * HOURS
    assert 0 < sc.threats.height < sc.flows.height
    assert sc.flows.height / 50 < sc.dns_queries.height < sc.flows.height
    for df in (sc.flows, sc.dns_queries, sc.threats):
        assert df["time"].min() >= START and df["time"].max() < START + timedelta(hours=HOURS)
        assert df["time"].is_sorted()


def test_same_seed_gives_identical_frames_and_files(tmp_path):
    """Reproducibility is what makes benchmarks and golden tests possible."""
    a = generate(hours=2, events_per_hour=800, seed=3, start=START)
    b = generate(hours=2, events_per_hour=800, seed=3, start=START)
    c = generate(hours=2, events_per_hour=800, seed=4, start=START)
    for name in ("flows", "dns_queries", "threats"):
        assert getattr(a, name).equals(getattr(b, name))
    assert not a.flows.equals(c.flows)
    for layout in ("storage", "eventhub", "csv"):
        write(a, tmp_path / f"a-{layout}", fmt="both", layout=layout)
        write(b, tmp_path / f"b-{layout}", fmt="both", layout=layout)
        da, db = _digest(tmp_path / f"a-{layout}"), _digest(tmp_path / f"b-{layout}")
        assert da and da == db


def test_default_start_is_the_current_hour_minus_the_window():
    sc = generate(hours=2, events_per_hour=50, seed=1)
    now = datetime.now(timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    assert sc.start in (now - timedelta(hours=2), now - timedelta(hours=3))
    assert sc.flows["time"].min() >= sc.start


def test_flow_rows_follow_canonical_semantics(sc):
    """The parser maps text back to exactly these conventions."""
    f = sc.flows
    app, net, nat = (f.filter(pl.col("kind") == k) for k in ("application", "network", "nat"))
    assert set(f["kind"].unique()) == {"application", "network", "nat"}
    assert app["destination_ip"].null_count() == app.height
    assert app["translated_ip"].null_count() == app.height
    assert not app["is_explicit_proxy"].any()
    assert (app["is_tls_inspected"] == ((app["protocol"] == "HTTPS") & app["target_url"].is_not_null())).all()
    http = app.filter(pl.col("protocol") == "HTTP")
    assert http.height and (http["target_url"].str.starts_with(http["destination_fqdn"] + "/")).all()
    assert not http["target_url"].str.contains("://").any()
    for col in ("destination_fqdn", "target_url", "web_category", "is_tls_inspected", "is_explicit_proxy"):
        assert net[col].null_count() == net.height
    icmp = net.filter(pl.col("protocol") == "ICMP")
    assert icmp.height and icmp["source_port"].null_count() == icmp.height
    assert icmp["destination_port"].null_count() == icmp.height and icmp["icmp_type"].null_count() == icmp.height
    assert nat.height and set(nat["action"]) == {"DNAT"} and nat["translated_ip"].null_count() == 0
    assert nat["action_reason"].null_count() == nat.height
    rules = ["policy", "rule_collection_group", "rule_collection", "rule"]
    deny = f.filter(pl.col("action_reason") == "Default Action")
    assert set(deny["action"]) == {"Deny"}
    assert all(deny[c].null_count() == deny.height for c in rules)
    allowed = f.filter(pl.col("action") == "Allow")
    assert allowed["action_reason"].null_count() == allowed.height
    assert all(allowed[c].null_count() == 0 for c in rules)
    sni = f.filter(pl.col("action_reason") == "SNI TLS extension was missing")
    assert sni.height and sni["destination_fqdn"].null_count() == sni.height
    assert sni["destination_port"].null_count() == sni.height and set(sni["protocol"]) == {"HTTPS"}
    fq = app["destination_fqdn"].drop_nulls()
    assert (fq == fq.str.to_lowercase()).all() and not fq.str.ends_with(".").any()
    assert set(f["firewall"]) == {sc.truth["firewall"]} and sc.truth["firewall"] == sc.truth["firewall"].lower()


def test_dns_rows_follow_canonical_semantics(sc):
    d = sc.dns_queries
    fail = d.filter(pl.col("error_message").is_not_null())
    ok = d.filter(pl.col("error_message").is_null())
    assert fail.height and set(fail["error_message"]) == {"i/o timeout"} and set(fail["error_number"]) == {2}
    for col in ("source_ip", "source_port", "query_id", "query_class", "protocol", "request_size", "dnssec_ok",
                "edns0_buffer_size", "response_code", "response_flags", "response_size", "duration_s"):
        assert fail[col].null_count() == fail.height, col
    assert fail["query_name"].null_count() == 0 and set(fail["query_type"]) == {"A"}
    for col in ("source_ip", "source_port", "query_id", "query_type", "query_name", "protocol", "response_code"):
        assert ok[col].null_count() == 0, col
    assert set(ok["protocol"]) <= {"udp", "tcp"} and ok["error_number"].null_count() == ok.height
    assert (ok["duration_s"] == ok["duration_s"].round(9)).all()
    names = d["query_name"]
    assert (names == names.str.to_lowercase()).all() and not names.str.ends_with(".").any()


def test_threat_rows_follow_canonical_semantics(sc):
    t = sc.threats
    ti, idps = t.filter(pl.col("kind") == "threat_intel"), t.filter(pl.col("kind") == "idps")
    assert ti.height and idps.height
    assert set(ti["action"]) <= {"deny", "alert"} and set(idps["action"]) <= {"alert", "drop"}
    assert ti["fqdn"].null_count() == 0 and ti["destination_ip"].null_count() == ti.height
    assert ti["signature_id"].null_count() == ti.height and not ti["is_tls_inspected"].any()
    assert ti["is_tls_inspected"].null_count() == 0
    assert idps["destination_ip"].null_count() == 0 and idps["fqdn"].null_count() == idps.height
    assert idps["signature_id"].null_count() == 0 and idps["severity"].is_between(1, 4).all()
    assert idps["is_tls_inspected"].null_count() == idps.height and idps["target_url"].null_count() == idps.height


# --- ground truth and policy ---------------------------------------------------------------

def _seen(f: pl.DataFrame, item: dict) -> pl.DataFrame:
    col = "destination_fqdn" if item["kind"] == "application" else "destination_ip"
    return f.filter((pl.col(col) == item["destination"]) & (pl.col("protocol") == item["protocol"])
                    & (pl.col("destination_port") == item["port"]))


def test_truth_legitimate_destinations_appear_with_their_initial_verdict(sc):
    """The recommender is scored against this list, so it must agree with the logs."""
    f = sc.flows
    legit = sc.truth["legitimate"]
    assert {x["initially"] for x in legit} == {"allowed", "denied"}
    for item in legit:
        srcs = [s.split("/")[0] for s in item["sources"]]
        rows = _seen(f, item).filter(pl.col("source_ip").is_in(srcs))
        assert rows.height, item
        want = "Deny" if item["initially"] == "denied" else "Allow"
        assert set(rows["action"]) == {want}, item
    bundles = {x["bundle"] for x in legit}
    assert {"docker-hub", "ghcr", "aks-required", "ubuntu-updates", "azure-monitor"} <= bundles
    shards = [x["destination"] for x in legit if x["destination"].endswith(".telemetry.example-saas.io")]
    assert len(shards) >= 3


def test_policy_rule_names_match_the_allowed_flows(sc):
    """Allow rows name exactly the rule that Azure Firewall would report for policy.json."""
    policy_rules = {(g["name"], c["name"], r["name"]) for g in sc.policy for c in g["ruleCollections"]
                    for r in c["rules"]}
    used = set(sc.flows.filter(pl.col("rule").is_not_null())
               .select("rule_collection_group", "rule_collection", "rule").unique().iter_rows())
    assert used <= policy_rules
    unused = set(sc.truth["unused_rules"])
    assert unused and {r for _, _, r in policy_rules} == {r for _, _, r in used} | unused
    assert not unused & {r for _, _, r in used}
    assert set(sc.flows["policy"].drop_nulls()) == {"fw-policy"}
    # Re-deciding every distinct allowed flow from policy.json gives the logged rule.
    dns = sc.truth["dns_name_to_ips"]
    tags = {"AzureCloud.westeurope": ["20.103.0.0/16"]}
    distinct = sc.flows.filter(pl.col("kind") != "nat", pl.col("action_reason").is_null() |
                               (pl.col("action_reason") == "Default Action")).select(
        "kind", "protocol", "source_ip", "destination_ip", "destination_fqdn", "destination_port", "action", "rule"
    ).unique()
    for r in distinct.iter_rows(named=True):
        v = evaluate(sc.policy, kind=r["kind"], protocol=r["protocol"], source_ip=r["source_ip"],
                     destination_port=r["destination_port"], destination_ip=r["destination_ip"],
                     destination_fqdn=r["destination_fqdn"], service_tags=tags, dns=dns)
        assert (v.action, v.rule) == (r["action"], r["rule"]), r


def test_policy_json_has_the_cli_shape(sc, storage_both):
    p = json.loads((storage_both / "policy.json").read_text())
    assert p == sc.policy
    for g in p:
        assert {"name", "priority", "ruleCollections"} <= g.keys()
        for c in g["ruleCollections"]:
            assert c["ruleCollectionType"] in ("FirewallPolicyFilterRuleCollection", "FirewallPolicyNatRuleCollection")
            assert c["action"]["type"] in ("Allow", "Deny", "DNAT")
            for r in c["rules"]:
                assert r["ruleType"] in ("ApplicationRule", "NetworkRule", "NatRule")
    aks = next(r for g in p for c in g["ruleCollections"] for r in c["rules"] if r["name"] == "allow-aks-fqdn-tag")
    assert aks["fqdnTags"] == ["AzureKubernetesService"]


def test_hot_destination_dominates_its_burst(sc):
    """The SNAT analysis must find one destination carrying the configured share in the burst."""
    hot = sc.truth["snat_hot_destination"]
    b0 = datetime.fromisoformat(hot["burst_start"].rstrip("Z"))
    b1 = datetime.fromisoformat(hot["burst_end"].rstrip("Z"))
    assert b1 > b0
    f = sc.flows.with_columns(is_hot=(pl.col("destination_fqdn") == hot["fqdn"]).fill_null(False))
    burst = f.filter(pl.col("time").is_between(b0, b1, closed="left"))
    calm = f.filter(~pl.col("time").is_between(b0, b1, closed="left"))
    share = burst["is_hot"].mean()
    assert share == pytest.approx(hot["share"], abs=0.02)
    assert calm["is_hot"].mean() < share / 2
    top = burst.group_by("destination_fqdn").len().sort("len", descending=True)["destination_fqdn"][0]
    assert top == hot["fqdn"]
    assert burst.filter("is_hot")["source_ip"].n_unique() >= 10
    assert set(burst.filter("is_hot")["action"]) == {"Allow"}
    assert sc.truth["dns_name_to_ips"][hot["fqdn"]] == [hot["ip"]]


def test_compromised_pod_shows_threats_denials_and_tunnelling(sc):
    m = sc.truth["malicious"]
    src = m["compromised_source"]
    t = sc.threats
    assert set(t.filter(pl.col("kind") == "threat_intel")["source_ip"]) == {src}
    assert set(t.filter(pl.col("kind") == "threat_intel")["fqdn"]) == set(m["threat_intel_fqdns"])
    assert set(t.filter(pl.col("kind") == "idps", pl.col("source_ip") == src)["destination_ip"]) \
        == set(m["idps_destination_ips"])
    denied = sc.flows.filter(pl.col("source_ip") == src, pl.col("action") == "Deny")
    seen = set(denied["destination_fqdn"].drop_nulls()) | set(denied["destination_ip"].drop_nulls())
    assert set(m["denied_destinations"]) <= seen
    tun = sc.dns_queries.filter(pl.col("query_name").str.ends_with("." + m["tunnel_domain"]))
    assert tun.height >= 20 and set(tun["source_ip"]) == {src} and set(tun["query_type"]) == {"TXT"}
    assert tun["query_name"].n_unique() == tun.height
    labels = tun["query_name"].str.split(".").list.first()
    assert (labels.str.len_chars() == 40).all()
    assert (tun["response_code"] == "NXDOMAIN").mean() > 0.5


def test_dns_queries_precede_connections(sc):
    """A client resolves a name shortly before connecting to it (network-rule names included)."""
    d = sc.dns_queries.filter(pl.col("query_type") == "A", pl.col("response_code") == "NOERROR")
    first = sc.flows.filter(pl.col("destination_fqdn").is_not_null()).group_by(
        "source_ip", name="destination_fqdn").agg(first=pl.col("time").min())
    q = d.group_by("source_ip", name="query_name").agg(q=pl.col("time").min())
    j = first.join(q, on=["source_ip", "name"], how="left")
    assert j["q"].null_count() == 0
    assert (j["q"] <= j["first"]).all()
    # Clients cache answers: at most one A query per source and name per 5-minute window of use.
    bucket = (pl.col("time").dt.epoch("us") // 300_000_000).alias("b")
    windows = sc.flows.filter(pl.col("destination_fqdn").is_not_null()).group_by(
        "source_ip", name="destination_fqdn").agg(windows=bucket.n_unique())
    asked = d.filter(pl.col("query_name").is_in(windows["name"].implode())).group_by(
        "source_ip", name="query_name").agg(queries=pl.len())
    k = windows.join(asked, on=["source_ip", "name"])
    assert k.height == windows.height and (k["queries"] <= k["windows"]).all()
    assert k["queries"].sum() < sc.flows.filter(pl.col("destination_fqdn").is_not_null()).height / 2
    ntp_ips = set(sc.truth["dns_name_to_ips"]["ntp.ubuntu.com"])
    ntp = sc.flows.filter(pl.col("destination_ip").is_in(list(ntp_ips)))
    ntp_q = d.filter(pl.col("query_name") == "ntp.ubuntu.com")
    assert ntp.height and set(ntp["source_ip"]) == set(ntp_q["source_ip"])


def test_noise_names_are_nxdomain(sc):
    noise = set(sc.truth["noise_names"])
    d = sc.dns_queries.filter(pl.col("query_name").is_in(list(noise)), pl.col("error_message").is_null())
    assert d.height and set(d["response_code"]) == {"NXDOMAIN"}
    assert d["query_name"].str.ends_with(".svc.cluster.local").any()
    assert d["query_name"].str.ends_with(".reddog.microsoft.com").any()
    assert d["query_name"].str.starts_with("wpad.").any()


# --- rendered records --------------------------------------------------------------------------

IP_PORT = r"\d+\.\d+\.\d+\.\d+:\d+"
IP = r"\d+\.\d+\.\d+\.\d+"
RULE = r"Policy: [^.]+\. Rule Collection Group: [^.]+\. Rule Collection: [^.]+\. Rule: [^.]+"
LEGACY_SHAPES = {
    "AzureFirewallApplicationRuleLog": [
        rf"^HTTPS request from {IP_PORT} to [a-z0-9.-]+:443\. Action: Allow\. {RULE}(\. Web Category: \w+)?$",
        rf"^HTTP  request from {IP_PORT} to [a-z0-9.-]+:80\. Url: \S+\. Action: Allow\. {RULE}(\. Web Category: \w+)?$",
        rf"^HTTPS request from {IP_PORT} to [a-z0-9.-]+:443\. Action: Deny\. No rule matched\. Proceeding with default action$",
        rf"^HTTP  request from {IP_PORT} to [a-z0-9.-]+:80\. Url: \S+\. Action: Deny\. No rule matched\. Proceeding with default action$",
        rf"^HTTPS request from {IP_PORT}\. Action: Deny\. Reason: SNI TLS extension was missing\.$",
    ],
    "AzureFirewallNetworkRuleLog": [
        rf"^(TCP|UDP) request from {IP_PORT} to {IP_PORT}\. Action: Deny(\. ?)?$",
        rf"^(TCP|UDP) request from {IP_PORT} to {IP_PORT}\. Action: Allow\.\.? {RULE}$",
        rf"^ICMP request from {IP} to {IP}\. Action: (Deny(\. ?)?|Allow\.\.? {RULE})$",
    ],
    "AzureFirewallNatRuleLog": [rf"^TCP request from {IP_PORT} to {IP_PORT} was DNAT'ed to {IP_PORT}\. {RULE}$"],
    "AzureFirewallThreatIntelLog": [
        rf"^HTTPS? request from {IP_PORT} to [a-z0-9.-]+:\d+\. Action: (Deny|Alert)\. ThreatIntel: [\w ]+$"],
    "AzureFirewallIDSLog": [
        rf"^TCP request from {IP_PORT} to {IP_PORT}\. Action: (alert|drop)\. Signature: \d+\. IDS: .+\. "
        r"Priority: [1-4]\. Classification: .+$"],
    "AzureFirewallDnsProxyLog": [
        rf"^DNS Request: {IP_PORT} - \d+ (A|AAAA|TXT) IN [a-z0-9.-]+\. (udp|tcp) \d+ (true|false) \d+ "
        r"(NOERROR|NXDOMAIN) (qr,rd,ra|qr,aa,rd,ra|-) \d+ \d+\.\d{9}s$",
        rf"^ Error: 2 [a-z0-9.-]+\. A: read udp {IP_PORT}->168\.63\.129\.16:53: i/o timeout$",
    ],
}
TIME_STYLES = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{7}Z|\.\d{6}\+00:00)$")


def test_every_legacy_line_matches_a_reference_shape(sc, storage_both):
    shapes = {op: [re.compile(s) for s in ss] for op, ss in LEGACY_SHAPES.items()}
    used: set[str] = set()
    n = 0
    for path, rec in _records(storage_both):
        if "operationName" not in rec:
            continue
        n += 1
        assert set(rec) == {"category", "operationName", "properties", "resourceId", "time"}
        assert path.parts[len(storage_both.parts)] == "insights-logs-" + rec["category"].lower()
        msg = rec["properties"]["msg"]
        hit = [s.pattern for s in shapes[rec["operationName"]] if s.match(msg)]
        assert hit, msg
        used.update(hit)
    assert n == sc.flows.height + sc.dns_queries.height + sc.threats.height
    assert used == {s for ss in LEGACY_SHAPES.values() for s in ss}, "every shape is exercised"


def test_structured_records_carry_the_table_columns(sc, storage_both):
    counts: dict[str, int] = {}
    styles = set()
    for path, rec in _records(storage_both):
        assert TIME_STYLES.match(rec["time"]), rec["time"]
        styles.add(rec["time"][-1])
        assert rec["resourceId"] == sc.truth["firewall"].upper()
        if "operationName" in rec:
            continue
        counts[rec["category"]] = counts.get(rec["category"], 0) + 1
        assert f"/y=2025/m=07/d=01/h={rec['time'][11:13]}/m=00/PT1H.json" in path.as_posix()
        props = rec["properties"]
        assert all(v is not None for v in props.values())
        if rec["category"] == "AZFWDnsQuery":
            assert props["QueryName"].endswith(".")
            if props["ErrorMessage"]:
                assert props["QueryType"] == "A:" and props["ErrorNumber"] == 2 and props["SourceIp"] == ""
    assert styles == {"Z", "0"}  # 7 digits + Z and +00:00 both occur
    f = sc.flows
    assert counts["AZFWApplicationRule"] == f.filter(pl.col("kind") == "application").height
    assert counts["AZFWNetworkRule"] == f.filter(pl.col("kind") == "network").height
    assert counts["AZFWNatRule"] == f.filter(pl.col("kind") == "nat").height
    assert counts["AZFWDnsQuery"] == sc.dns_queries.height
    assert counts["AZFWThreatIntel"] + counts["AZFWIdpsSignature"] == sc.threats.height


def test_structured_time_is_the_canonical_microsecond(sc, storage_both):
    """The 7th digit is always 0, so both styles parse back to the same microsecond."""
    times = sorted(rec["time"] for _, rec in _records(storage_both) if rec["category"] == "AZFWThreatIntel")
    parsed = sorted(datetime.fromisoformat(t.replace("0Z", "+00:00") if t.endswith("Z") else t)
                    .replace(tzinfo=None) for t in times)
    want = sorted(sc.threats.filter(pl.col("kind") == "threat_intel")["time"].to_list())
    assert parsed == want


def test_eventhub_layout_batches_records(tmp_path):
    s = simulate_to_dir(tmp_path, hours=1, events_per_hour=1200, seed=5, fmt="legacy", layout="eventhub",
                        start=START)
    files = [Path(p) for p in s["files"] if p.endswith(".json") and "/eventhub/" in p]
    assert files and s["counts"]["flows"] == 1200 and s["bytes"] > 0
    total = 0
    for p in files:
        assert p.parent.name in {"AzureFirewallApplicationRule", "AzureFirewallNetworkRule", "AzureFirewallDnsProxy"}
        for line in p.read_text().splitlines():
            body = json.loads(line)
            assert list(body) == ["records"] and 0 < len(body["records"]) <= 500
            total += len(body["records"])
    assert total == sum(s["counts"].values())
    assert (tmp_path / "truth.json").exists() and (tmp_path / "policy.json").exists()


def test_csv_layout_looks_like_log_analytics_exports(sc, tmp_path):
    write(sc, tmp_path, fmt="both", layout="csv")
    names = {p.name for p in tmp_path.glob("*.csv")}
    assert names == {"AZFWApplicationRule.csv", "AZFWNetworkRule.csv", "AZFWNatRule.csv", "AZFWDnsQuery.csv",
                     "AZFWThreatIntel.csv", "AZFWIdpsSignature.csv", "AzureDiagnostics.csv"}
    with open(tmp_path / "AZFWApplicationRule.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sc.flows.filter(pl.col("kind") == "application").height
    header = list(rows[0])
    assert {"TenantId", "TimeGenerated", "Type", "_ResourceId", "Fqdn", "IsTlsInspected"} <= set(header)
    assert header[:2] != ["TenantId", "TimeGenerated"] or header[-1] != "_ResourceId"  # shuffled
    assert {r["IsTlsInspected"] for r in rows} <= {"0", "1"}
    assert {r["_ResourceId"] for r in rows} == {sc.truth["firewall"]}
    with open(tmp_path / "AzureDiagnostics.csv", newline="") as fh:
        diag = list(csv.DictReader(fh))
    assert len(diag) == sc.flows.height + sc.dns_queries.height + sc.threats.height
    assert {"TimeGenerated", "Category", "OperationName", "Resource", "ResourceId", "ResourceGroup",
            "SubscriptionId", "msg_s"} == set(diag[0])


def test_rejects_unknown_format_and_layout(sc, tmp_path):
    with pytest.raises(ValueError):
        write(sc, tmp_path, fmt="xml")
    with pytest.raises(ValueError):
        write(sc, tmp_path, layout="ftp")


# --- policy evaluator ---------------------------------------------------------------------------

def test_wildcards_match_like_azure_firewall():
    assert fqdn_matches("codeload.github.com", "*.github.com")
    assert fqdn_matches("a.b.github.com", "*.github.com")
    assert not fqdn_matches("github.com", "*.github.com")
    assert not fqdn_matches("evilgithub.com", "*.github.com")
    assert fqdn_matches("anything.example", "*")


def test_first_matching_rule_wins(sc):
    """api.github.com is allowed by the '*'-source rule listed before the broad wildcard rule."""
    v = evaluate(sc.policy, kind="application", protocol="HTTPS", source_ip="10.244.5.11",
                 destination_port=443, destination_fqdn="api.github.com")
    assert v.rule == "allow-api-github"
    v = evaluate(sc.policy, kind="application", protocol="HTTPS", source_ip="10.241.0.4",
                 destination_port=443, destination_fqdn="codeload.github.com")
    assert v.action == "Deny" and v.action_reason == "Default Action" and v.rule is None


@pytest.mark.parametrize("layout", ["storage", "eventhub", "csv"])
def test_streaming_simulate_to_dir_equals_generate_then_write(tmp_path, layout):
    """simulate_to_dir writes hour by hour for big runs; it must not change a single byte."""
    kw = dict(hours=2, events_per_hour=600, seed=9, start=START)
    s = simulate_to_dir(tmp_path / "a", fmt="both", layout=layout, **kw)
    write(generate(**kw), tmp_path / "b", fmt="both", layout=layout)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert s["counts"]["flows"] == 1200 and s["bytes"] == sum(Path(p).stat().st_size for p in s["files"])
