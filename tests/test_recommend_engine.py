"""Recommendation engine over small hand-made frames and a small simulator scenario."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta

import jsonschema
import polars as pl

from egresslens import store
from egresslens.analyse import Window
from egresslens.recommend import Config, parse_policy, recommend
from egresslens.recommend import emit_json, markdown
from egresslens.recommend.catalogue import match_bundles
from egresslens.recommend.netaggr import aggregate_ips
from egresslens.recommend.wildcards import propose_wildcards, wildcard_problem

T0 = datetime(2026, 1, 1)
WINDOW = Window(T0, T0 + timedelta(days=2))


def _flows(rows):
    base = {"firewall": "fw", "icmp_type": None, "source_port": 40000, "destination_ip": None, "destination_fqdn": None,
            "target_url": None, "action": "Deny", "action_reason": "Default Action", "policy": None,
            "rule_collection_group": None, "rule_collection": None, "rule": None, "web_category": None,
            "translated_ip": None, "translated_port": None, "is_tls_inspected": False, "is_explicit_proxy": False}
    return [{**base, **r} for r in rows]


def _store(flow_rows, dns_rows=(), threat_rows=()):
    con = store.connect_memory()
    for table, rows in (("flows", flow_rows), ("dns_queries", dns_rows), ("threats", threat_rows)):
        if not rows:
            continue
        df = pl.DataFrame(list(rows), infer_schema_length=None)
        con.register("f", df.to_arrow())
        con.execute(f"INSERT INTO {table} BY NAME SELECT *, md5(random()::VARCHAR) AS event_id, 'structured' AS log_format FROM f").fetchall()
        con.unregister("f")
    return con


def _app(src, fqdn, n=6, proto="HTTPS", port=443, action="Deny", **kw):
    return [{"time": T0 + timedelta(hours=i * 3, minutes=1), "kind": "application", "protocol": proto, "source_ip": src,
             "destination_fqdn": fqdn, "destination_port": port, "action": action, **kw} for i in range(n)]


def _net(src, ip, port, n=6, proto="UDP", **kw):
    return [{"time": T0 + timedelta(hours=i * 3, seconds=30), "kind": "network", "protocol": proto, "source_ip": src,
             "destination_ip": ip, "destination_port": port, **kw} for i in range(n)]


def test_wildcards_need_shards_and_never_cross_public_or_multitenant_suffixes():
    wild, explicit, rejected = propose_wildcards(
        ["eu-1.t.example-saas.io", "eu-2.t.example-saas.io", "us-7.t.example-saas.io",
         "www.example.com", "api.example.com", "docs.example.com",
         "st1.blob.core.windows.net", "st2.blob.core.windows.net", "st3.blob.core.windows.net"])
    assert wild == {"*.t.example-saas.io": ["eu-1.t.example-saas.io", "eu-2.t.example-saas.io", "us-7.t.example-saas.io"]}
    assert "www.example.com" in explicit and "st1.blob.core.windows.net" in explicit
    assert "blob.core.windows.net" in rejected
    for parent in ("blob.core.windows.net", "azurewebsites.net", "cloudapp.azure.com", "westeurope.cloudapp.azure.com",
                   "s3.amazonaws.com", "githubusercontent.com", "co.uk", "core.windows.net", "com"):
        assert wildcard_problem(parent) is not None, parent
    assert wildcard_problem("telemetry.example-saas.io") is None


def test_catalogue_prefers_fqdn_tag_and_bundles():
    matches, rest = match_bundles(["x.hcp.westeurope.azmk8s.io", "mcr.microsoft.com", "registry-1.docker.io", "a.example.org"])
    by = {m.bundle.name: m for m in matches}
    assert by["aks-required"].bundle.fqdn_tag == "AzureKubernetesService"
    assert "auth.docker.io" in by["docker-hub"].targets and all(by["docker-hub"].sources.values())
    assert rest == ["a.example.org"]


def test_cidr_aggregation_respects_slack():
    assert aggregate_ips(["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]) == ["10.0.0.0/30", "10.0.0.9"]
    assert aggregate_ips(["10.0.0.1", "10.0.0.200"]) == ["10.0.0.1", "10.0.0.200"]


def test_denied_traffic_becomes_rules_and_dangerous_traffic_investigate():
    rows = (_app("10.1.0.4", "api.partner-example.com") + _app("10.1.0.5", "api.partner-example.com")
            + _app("10.1.0.4", "evil.bad-example.net") + _app("10.1.0.4", "once.example.org", n=1)
            + _net("10.1.0.6", "203.0.113.10", 123) + _net("10.1.0.6", "203.0.113.11", 123)
            + _net("10.1.0.4", "198.51.100.99", 8443, proto="TCP"))
    threats = [{"time": T0, "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": "10.1.0.4",
                "source_port": 1, "destination_ip": None, "destination_port": 443, "fqdn": "evil.bad-example.net",
                "target_url": None, "action": "deny", "description": "Bot Networks", "signature_id": None,
                "category": None, "severity": None, "is_tls_inspected": False}]
    con = _store(_flows(rows), threat_rows=threats)
    recs = recommend(con, WINDOW, config=Config.from_dict({"sources": {"aks-nodes": ["10.1.0.0/24"]}}))
    apps = recs.by_kind("add-application-rule")
    assert len(apps) == 1
    rule = apps[0].rule
    # 10.1.0.4 hit threat intelligence: it is compromised, so the rule is for the clean sources only
    assert rule.target_fqdns == ["api.partner-example.com"] and "10.1.0.5/32" in rule.source_addresses
    assert not any(ipaddress.ip_address("10.1.0.4") in ipaddress.ip_network(c) for c in rule.source_addresses)
    assert ipaddress.ip_network("10.1.0.0/24").num_addresses - 1 == sum(
        ipaddress.ip_network(c).num_addresses for c in rule.source_addresses)
    assert any("compromised source(s) 10.1.0.4" in n for n in apps[0].evidence.notes)
    assert rule.source_group == "aks-nodes" and rule.protocols == ["Https:443"]
    assert apps[0].evidence.hits == 6 and apps[0].evidence.distinct_sources == 1 and apps[0].evidence.days_seen == 1
    assert apps[0].evidence.sample_events
    nets = recs.by_kind("add-network-rule")
    assert len(nets) == 1 and nets[0].rule.destination_ports == ["123"] and nets[0].rule.ip_protocols == ["UDP"]
    assert nets[0].rule.destination_addresses == ["203.0.113.10/31"]  # both addresses of the /31 observed
    inv = " ".join(r.title + r.rationale for r in recs.by_kind("investigate"))
    assert "evil.bad-example.net" in inv and "once.example.org" in inv
    assert "198.51.100.99" in inv  # only the flagged (threat-intel) source went there
    for r in apps + nets:
        assert "evil.bad-example.net" not in r.rule.target_fqdns
    doc = json.loads(emit_json.emit(recs))
    jsonschema.validate(doc, emit_json.schema())
    text = markdown.emit(recs)
    assert "api.partner-example.com" in text and "Investigate" in text
    frame = recs.to_polars()
    assert frame.height == len(recs.items) and "kind" in frame.columns


def test_sources_inferred_never_star():
    con = _store(_flows(_app("10.9.3.7", "api.partner-example.com") + _app("10.9.4.7", "api.partner-example.com")))
    rec = recommend(con, WINDOW).by_kind("add-application-rule")[0]
    assert rec.rule.source_addresses == ["10.9.3.0/24", "10.9.4.0/24"] or rec.rule.source_addresses == ["10.9.3.0/24", "10.9.4.0/24"][::-1]
    assert "*" not in rec.rule.source_addresses


def test_existing_rules_unused_and_narrow():
    policy = [{"name": "g", "priority": 300, "ruleCollections": [{
        "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "c", "priority": 200, "action": {"type": "Allow"},
        "rules": [
            {"ruleType": "ApplicationRule", "name": "any-web", "sourceAddresses": ["*"], "protocols": [{"protocolType": "Https", "port": 443}],
             "targetFqdns": ["*"], "fqdnTags": []},
            {"ruleType": "ApplicationRule", "name": "dup", "sourceAddresses": ["10.1.0.0/24"], "protocols": [{"protocolType": "Https", "port": 443}],
             "targetFqdns": ["x.example.com"], "fqdnTags": []},
            {"ruleType": "NetworkRule", "name": "unused", "ipProtocols": ["TCP"], "sourceAddresses": ["10.1.0.0/24"],
             "destinationAddresses": ["198.51.100.25"], "destinationPorts": ["25"]},
        ]}]}]
    allowed = dict(action="Allow", action_reason=None, rule_collection_group="g", rule_collection="c", rule="any-web")
    con = _store(_flows(_app("10.1.0.4", "a.example.com", **allowed) + _app("10.1.0.4", "b.example.com", **allowed)))
    recs = recommend(con, WINDOW, policy=parse_policy(policy))
    removes = {r.existing_rule["rule"]: r for r in recs.by_kind("remove-rule")}
    assert "unused" in removes and "48-hour" in removes["unused"].rationale
    assert "dup" in removes and "shadowed" in removes["dup"].title.lower()
    narrow = recs.by_kind("narrow-rule")
    assert len(narrow) == 1
    assert narrow[0].rule.target_fqdns == ["a.example.com", "b.example.com"]
    assert narrow[0].rule.source_addresses == ["10.1.0.0/24"]
    assert narrow[0].rule.rule_collection_group_priority < 300
    assert {s["destination"] for s in narrow[0].still_allowed} == {"a.example.com", "b.example.com"}
    assert any("keep the broad rule" in step for step in narrow[0].rollout)
    assert recs.rule_scores[0]["rule"] == "any-web"


def test_what_if_replay_shows_allow_to_deny_for_narrowing():
    from egresslens.recommend import whatif

    policy = [{"name": "g", "priority": 300, "ruleCollections": [{
        "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "c", "priority": 200, "action": {"type": "Allow"},
        "rules": [{"ruleType": "ApplicationRule", "name": "any-web", "sourceAddresses": ["*"],
                   "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["*"], "fqdnTags": []}]}]}]
    allowed = dict(action="Allow", action_reason=None, rule_collection_group="g", rule_collection="c", rule="any-web")
    threats = [{"time": T0, "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": "10.1.0.9",
                "source_port": 1, "destination_ip": None, "destination_port": 443, "fqdn": "c2.bad-example.net",
                "target_url": None, "action": "alert", "description": "C2", "signature_id": None,
                "category": None, "severity": None, "is_tls_inspected": False}]
    rows = (_app("10.1.0.4", "a.example.com", **allowed) + _app("10.1.0.9", "c2.bad-example.net", **allowed)
            + _app("10.1.0.4", "new.partner-example.com"))
    con = _store(_flows(rows), threat_rows=threats)
    pol = parse_policy(policy)
    recs = recommend(con, WINDOW, policy=pol)
    narrow = recs.by_kind("narrow-rule")[0]
    assert [d["destination"] for d in narrow.would_be_denied] == ["c2.bad-example.net"]
    rp = whatif.replay(con, WINDOW, recs, pol)
    by = {r["destination_fqdn"]: r for r in rp.iter_rows(named=True)}
    assert by["new.partner-example.com"]["with_proposals"] == "Allow" and by["new.partner-example.com"]["changed_by"]
    assert by["a.example.com"]["after_cleanup"] == "Allow"
    assert by["c2.bad-example.net"]["after_cleanup"] == "Deny" and by["c2.bad-example.net"]["cut_by"] == "g/c/any-web"
    whatif.apply(recs, rp)
    assert narrow.what_if["allow_to_deny_hits"] == 6


def test_service_tags_and_arm_export(tmp_path):
    from egresslens.recommend import ServiceTags
    from egresslens.recommend import load_policy
    from egresslens.recommend.policy import Flow, evaluate

    tags_file = tmp_path / "tags.json"
    tags_file.write_text(json.dumps({"values": [
        {"name": "AzureCloud", "properties": {"addressPrefixes": ["20.0.0.0/8"]}},
        {"name": "AzureCloud.westeurope", "properties": {"addressPrefixes": ["20.103.0.0/16"]}}]}))
    tags = ServiceTags.load(tags_file)
    con = _store(_flows(_net("10.240.0.4", "20.103.218.77", 1194) + _net("10.240.0.4", "20.103.218.77", 9000, proto="TCP")))
    recs = recommend(con, WINDOW, service_tags=tags)
    nets = recs.by_kind("add-network-rule")
    assert {tuple(r.rule.destination_addresses) for r in nets} == {("AzureCloud.westeurope",)}
    arm = {"resources": [
        {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
         "name": "[concat(parameters('firewallPolicies_fw_policy_name'), '/aks-egress')]",
         "properties": {"priority": 200, "ruleCollections": [{
             "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "aksfwnr", "priority": 100,
             "action": {"type": "Allow"}, "rules": [{"ruleType": "NetworkRule", "name": "apiudp", "ipProtocols": ["UDP"],
                                                    "sourceAddresses": ["10.240.0.0/22"], "destinationAddresses": ["AzureCloud.westeurope"],
                                                    "destinationPorts": ["1194"]}]}]}}]}
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(arm))
    rules = load_policy(path)
    assert rules[0].rule_collection_group == "aks-egress"
    hit = evaluate(rules, Flow("network", "UDP", "10.240.0.4", 1194, "20.103.218.77"), service_tags=tags.networks())
    assert hit is not None and hit.name == "apiudp"
    assert evaluate(rules, Flow("network", "UDP", "10.240.0.4", 1194, "8.8.8.8"), service_tags=tags.networks()) is None


def test_azure_order_network_before_application_and_wildcard_semantics():
    from egresslens.recommend.policy import Flow, evaluate
    from egresslens.recommend.wildcards import fqdn_matches

    policy = parse_policy([
        {"name": "apps", "priority": 100, "ruleCollections": [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
         "name": "a", "priority": 100, "action": {"type": "Allow"}, "rules": [
             {"ruleType": "ApplicationRule", "name": "app", "sourceAddresses": ["*"],
              "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["*.example.com"]}]}]},
        {"name": "nets", "priority": 60000, "ruleCollections": [{"ruleCollectionType": "FirewallPolicyFilterRuleCollection",
         "name": "n", "priority": 100, "action": {"type": "Deny"}, "rules": [
             {"ruleType": "NetworkRule", "name": "deny-443", "ipProtocols": ["TCP"], "sourceAddresses": ["10.0.0.0/8"],
              "destinationAddresses": ["*"], "destinationPorts": ["443"]}]}]}])
    hit = evaluate(policy, Flow("application", "HTTPS", "10.1.1.1", 443, None, "a.example.com"))
    assert hit.name == "deny-443"  # network rules first, whatever the group priority
    assert evaluate(policy, Flow("application", "HTTPS", "192.168.1.1", 443, None, "a.example.com")).name == "app"
    assert evaluate(policy, Flow("application", "HTTPS", "192.168.1.1", 443, None, "example.com")) is None
    assert fqdn_matches("a.b.example.com", "*.example.com") and not fqdn_matches("evilexample.com", "*.example.com")
