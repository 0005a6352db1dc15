"""Reading your estate from exports: every shape Azure and `az` write, the bounds, and IP Groups and
classic rules evaluated exactly as the same rules written out literally in a policy."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.cli import app
from egresslens.estate import MAX_DEPTH, PolicyError, load_files, load_policy, parse_documents, parse_policy
from egresslens.estate import parse as parse_mod
from egresslens.estate import rules as rules_mod
from egresslens.recommend import recommend
from egresslens.recommend.policy import Flow, Rule, _covers, evaluate, shadowed_by

from test_recommend_engine import WINDOW, _app, _flows, _net, _store

ARM = Path(__file__).parent / "fixtures" / "arm"
SUB = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-net/providers/Microsoft.Network"


def _rule(name, **kw):
    return {"ruleType": "NetworkRule", "name": name, "ipProtocols": ["TCP"], "sourceAddresses": ["10.1.0.0/16"],
            "destinationAddresses": ["198.51.100.0/24"], "destinationPorts": ["443"], **kw}


def _group(name, prio, rules, coll="c", action="Allow"):
    return {"name": name, "priority": prio, "ruleCollections": [{
        "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": coll, "priority": 100,
        "action": {"type": action}, "rules": rules}]}


# -- shapes ----------------------------------------------------------------------------------------

def test_published_examples_read_by_shape():
    e = load_files([ARM / "azureFirewalls-get-with-ip-groups.json", ARM / "ipGroups-list.json"])
    rs = e.rules_for_firewall("azurefirewall")
    assert rs.classic and rs.target == "azurefirewall"
    by = {r.name: r for r in rs}
    assert [r.name for r in rs] == ["DNAT-HTTPS-traffic", "L4-traffic", "L4-traffic-with-FQDN", "rule1"]  # DNAT, network, app
    assert by["rule1"].all_sources == ["13.64.39.16/32", "40.74.146.80/31", "40.74.147.32/28"]  # ipGroups1 by name
    assert by["L4-traffic"].all_destination_addresses[:1] == ["14.64.39.16/32"]
    assert by["L4-traffic"].ip_protocols == ["TCP"] and by["L4-traffic"].destination_ports == ["443-444", "8443"]
    assert by["L4-traffic-with-FQDN"].unresolved_ip_groups  # ipGroups3 is not in the list: said, never guessed
    assert any("ipGroups3" in w for w in e.warnings)

    e = load_files([ARM / "firewallPolicies-get.json", ARM / "ruleCollectionGroups-list.json"])
    rs = e.default_rules()
    assert rs.target == "firewallPolicy" and rs.dns_proxy is True and [r.name for r in rs] == ["network-rule-1"]
    rs = load_policy(ARM / "ruleCollectionGroups-with-web-categories-list.json")
    assert rs[0].web_categories == ["Hacking"] and rs[0].action == "Deny"
    rs = load_policy(ARM / "ruleCollectionGroups-with-ip-groups-get.json")
    assert rs[0].source_ip_groups and rs[0].unresolved_ip_groups
    hub = load_files([ARM / "azureFirewalls-put-in-hub.json"])
    assert hub.firewall("azurefirewall").policy.endswith("/firewallpolicies/policy1")


def test_parent_chain_from_policy_show_and_arm_export(tmp_path):
    parent_id, child_id = f"{SUB}/firewallPolicies/fwp-base", f"{SUB}/firewallPolicies/fwp-weu"
    fw_id = f"{SUB}/azureFirewalls/fw-weu"
    (tmp_path / "base.json").write_text(json.dumps([{**_group("base", 100, [_rule("deny-all", destinationPorts=["*"])],
                                                               action="Deny"),
                                                      "id": f"{parent_id}/ruleCollectionGroups/base"}]))
    (tmp_path / "child.json").write_text(json.dumps([{**_group("apps", 100, [_rule("allow-443")]),
                                                       "id": f"{child_id}/ruleCollectionGroups/apps"}]))
    (tmp_path / "policy.json").write_text(json.dumps({   # `az network firewall policy show`, flattened
        "id": child_id, "name": "fwp-weu", "basePolicy": {"id": parent_id}, "dnsSettings": {"enableProxy": False},
        "firewalls": [{"id": fw_id}]}))
    e = load_files([tmp_path / "base.json", tmp_path / "child.json", tmp_path / "policy.json"])
    rs = e.rules_for_firewall("fw-weu")
    assert [(r.name, r.depth) for r in rs] == [("deny-all", 1), ("allow-443", 0)]  # the parent's group first
    assert rs.dns_proxy is False and rs.target == "fwp-weu"
    flow = Flow("network", "TCP", "10.1.2.3", 443, "198.51.100.7")
    assert evaluate(rs, flow).name == "deny-all"

    arm = {"resources": [
        {"type": "Microsoft.Network/firewallPolicies", "name": "fwp-weu", "properties": {"dnsSettings": {"enableProxy": True}}},
        {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
         "name": "[concat(parameters('firewallPolicies_fwp_weu_name'), '/apps')]", "properties": _group("x", 200, [_rule("r")])},
        {"type": "Microsoft.Network/publicIPAddresses", "name": "pip"}]}
    rs = parse_policy(arm)
    assert rs[0].rule_collection_group == "apps" and rs.dns_proxy is True and rs.target == "fwp-weu"


def test_parent_and_groups_in_one_file_and_legacy_two_files(tmp_path):
    rs = parse_policy({"parent": [_group("base", 100, [_rule("p")])], "groups": [_group("apps", 100, [_rule("c")])]})
    assert [(r.name, r.parent) for r in rs] == [("p", True), ("c", False)]
    (tmp_path / "c.json").write_text(json.dumps([_group("apps", 100, [_rule("c")])]))
    (tmp_path / "p.json").write_text(json.dumps([_group("base", 100, [_rule("p")])]))
    assert [r.name for r in load_policy(tmp_path / "c.json", tmp_path / "p.json")] == ["p", "c"]


# -- bounds and bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("doc,needle", [
    ({"resources": "x"}, "resources is a str, not a list"),
    (["a", "b"], "item 1 is a str, not an object"),
    ("just text", "not a policy export"),
    ([_group("g", 100, [_rule("r", destinationPorts=["a-b"])])], "'a-b' is not a port"),
    ([_group("g", 100, [_rule("r", destinationPorts=["70000"])])], "'70000' is not a port"),
    ([_group("g", "high", [_rule("r")])], "priority 'high' is not a number"),
    ([_group("g", 100, [_rule("r", ipProtocols=["GRE"])])], "'GRE' is not TCP, UDP, ICMP or Any"),
    ([_group("g", 100, [_rule("r", sourceAddresses={"a": 1})])], "sourceAddresses is a dict, not a list"),
    ([_group("g", 100, [{"ruleType": "Bogus", "name": "r"}])], "unknown ruleType 'Bogus'"),
    ([{"name": "g", "ruleCollections": "x"}], "ruleCollections is a str, not a list"),
])
def test_malformed_policies_are_one_sentence(doc, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy(doc)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_deep_nesting_huge_files_and_too_many_rules_are_refused(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(PolicyError, match=f"deeper than {MAX_DEPTH} levels"):
        load_policy(deep)
    tricky = tmp_path / "tricky.json"  # brackets inside names are text, not nesting
    tricky.write_text(json.dumps([_group("[[[[" * 40 + '\\"', 100, [_rule("{{{{" * 40)])]))
    assert load_policy(tricky)[0].name.startswith("{{{{")
    monkeypatch.setattr(parse_mod, "MAX_FILE_BYTES", 100)
    with pytest.raises(PolicyError, match="above 0 MiB are refused"):
        load_policy(tricky)
    monkeypatch.setattr(parse_mod, "MAX_FILE_BYTES", 1 << 30)
    monkeypatch.setattr(rules_mod, "MAX_RULES", 3)
    with pytest.raises(PolicyError, match="more than 3 rules"):
        parse_policy([_group("g", 100, [_rule(f"r{i}") for i in range(4)])])
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe[")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)


@pytest.mark.parametrize("content", [
    '{"resources":"x"}', '["a","b"]', "[" * 10_000 + "]" * 10_000,
    json.dumps([_group("g", 100, [_rule("r", destinationPorts=["a-b"])])])])
@pytest.mark.parametrize("command", ["recommend", "report"])
def test_cli_exit_3_with_one_sentence(tmp_path, content, command):
    db = tmp_path / "s.duckdb"
    _store(_flows(_app("10.1.0.4", "a.example.com"))).execute(f"ATTACH '{db}' AS f; COPY FROM DATABASE memory TO f")
    pol = tmp_path / "p.json"
    pol.write_text(content)
    args = [command, "--db", str(db), "--policy", str(pol)] + (["-o", str(tmp_path / "r.html")] if command == "report" else [])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == exitcodes.INPUT_ERROR, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.output


# -- IP Groups and classic rules evaluate like literal addresses ---------------------------------------

SPOKE = ["10.1.0.0/24", "10.1.1.0-10.1.1.255"]


def _ip_group_estate(tmp_path, literal: bool):
    pol_id = f"{SUB}/firewallPolicies/fwp"
    ipg_id = f"{SUB}/ipGroups/ipg-spoke"
    src = {"sourceAddresses": SPOKE} if literal else {"sourceIpGroups": [ipg_id]}
    rules = [
        {"ruleType": "ApplicationRule", "name": "spoke-web", **src, "protocols": [{"protocolType": "Https", "port": 443}],
         "targetFqdns": ["*.example.com"]},
        {"ruleType": "ApplicationRule", "name": "spoke-api", **src, "protocols": [{"protocolType": "Https", "port": 443}],
         "targetFqdns": ["api.example.com"]},  # shadowed by spoke-web
        {"ruleType": "NetworkRule", "name": "spoke-db", **src, "ipProtocols": ["TCP"],
         "destinationAddresses": ["203.0.113.10"], "destinationPorts": ["5432"]},  # unused
    ]
    (tmp_path / "rcg.json").write_text(json.dumps([{**_group("apps", 300, rules), "id": f"{pol_id}/ruleCollectionGroups/apps"}]))
    (tmp_path / "ipg.json").write_text(json.dumps([{"id": ipg_id, "name": "ipg-spoke", "ipAddresses": SPOKE}]))
    return load_files([tmp_path / "rcg.json", tmp_path / "ipg.json"]).default_rules()


def _summary(recs):
    return sorted((r.kind, (r.existing_rule or {}).get("rule"), tuple(r.rule.target_fqdns) if r.rule else ())
                  for r in recs.items)


def test_rule_sourced_from_an_ip_group_is_judged_as_the_same_rule_with_literal_addresses(tmp_path):
    allowed = dict(action="Allow", action_reason=None, rule_collection_group="apps", rule_collection="c", rule="spoke-web")
    rows = (_app("10.1.0.4", "a.example.com", **allowed) + _app("10.1.1.9", "b.example.com", **allowed)
            + _app("10.1.0.4", "api.example.com", **allowed))
    results = []
    for literal in (True, False):
        (tmp_path / str(literal)).mkdir()
        rs = _ip_group_estate(tmp_path / str(literal), literal)
        con = _store(_flows(rows))
        recs = recommend(con, WINDOW, policy=rs)
        results.append(_summary(recs))
        kinds = {(r.kind, (r.existing_rule or {}).get("rule")) for r in recs.items}
        assert ("remove-rule", "spoke-api") in kinds and ("remove-rule", "spoke-db") in kinds  # shadowed, unused
        assert evaluate(rs, Flow("application", "HTTPS", "10.1.1.200", 443, None, "x.example.com")).name == "spoke-web"
        assert evaluate(rs, Flow("application", "HTTPS", "10.1.2.1", 443, None, "x.example.com")) is None
    assert results[0] == results[1]


def test_a_proposal_that_an_existing_ip_group_fits_names_the_group_instead_of_its_addresses(tmp_path):
    from egresslens.recommend import emit_az, whatif

    pol_id = f"{SUB}/firewallPolicies/fwp"
    groups = [{"id": f"{SUB}/ipGroups/ipg-spoke", "name": "ipg-spoke", "ipAddresses": SPOKE},  # exactly the spoke
              {"id": f"{SUB}/ipGroups/ipg-corp", "name": "ipg-corp", "ipAddresses": ["10.0.0.0/8"]},  # far too wide
              {"id": f"{SUB}/ipGroups/ipg-other", "name": "ipg-other", "ipAddresses": ["10.9.0.0/24"]}]
    rules = [_rule("hub", sourceIpGroups=[f"{SUB}/ipGroups/ipg-corp"])]
    (tmp_path / "rcg.json").write_text(json.dumps([{**_group("net", 300, rules), "id": f"{pol_id}/ruleCollectionGroups/net"}]))
    (tmp_path / "ipg.json").write_text(json.dumps(groups))
    rs = load_files([tmp_path / "rcg.json", tmp_path / "ipg.json"]).default_rules()
    con = _store(_flows(_app("10.1.0.4", "new.example.com") + _app("10.1.1.9", "new.example.com")
                        + _app("10.7.0.4", "other.example.com")))
    recs = recommend(con, WINDOW, policy=rs)
    whatif.apply(recs, whatif.replay(con, WINDOW, recs, rs))
    (add,) = [r for r in recs.by_kind("add-application-rule") if r.rule.target_fqdns == ["new.example.com"]]
    assert add.rule.source_ip_groups == [f"{SUB}/ipGroups/ipg-spoke"] and add.rule.source_addresses == []
    assert any("existing IP Group ipg-spoke" in n for n in add.evidence.notes)
    assert add.what_if["deny_to_allow_hits"] == 12  # the what-if replays the group's members
    # sources no group holds closely enough keep their addresses (ipg-corp holds 10.7.0.0/24, and 65,536 times more)
    (other,) = [r for r in recs.by_kind("add-application-rule") if r.rule.target_fqdns == ["other.example.com"]]
    assert other.rule.source_ip_groups == [] and other.rule.source_addresses == ["10.7.0.0/24"]
    script = emit_az.emit(recs)
    assert "--source-ip-groups" in script and "ipg-spoke" in script and "10.1.1.0/24" not in script


def test_classic_firewall_gives_the_proposals_of_the_same_rules_in_a_policy():
    def coll(kind, name, prio, rules):
        return {"name": name, "properties": {"priority": prio, "action": {"type": "Allow"}, "rules": rules}}
    app_rule = {"name": "any-web", "sourceAddresses": ["*"], "protocols": [{"protocolType": "Https", "port": 443}],
                "targetFqdns": ["*"]}
    net_rule = {"name": "unused", "sourceAddresses": ["10.1.0.0/24"], "destinationAddresses": ["198.51.100.25"],
                "destinationPorts": ["25"], "protocols": ["TCP"]}
    classic = parse_documents([("fw.json", {"id": f"{SUB}/azureFirewalls/fw-classic", "name": "fw-classic",
                                            "type": "Microsoft.Network/azureFirewalls", "properties": {
                                                "applicationRuleCollections": [coll("app", "c", 200, [app_rule])],
                                                "networkRuleCollections": [coll("net", "n", 100, [net_rule])]}})]
                              ).rules_for_firewall("fw-classic")
    policy = parse_policy([_group("g", 300, [{"ruleType": "ApplicationRule", **app_rule}], coll="c"),
                           _group("g2", 200, [{"ruleType": "NetworkRule", **{k: v for k, v in net_rule.items() if k != "protocols"},
                                               "ipProtocols": ["TCP"]}], coll="n")])
    out, narrowed = [], []
    for rs, group in ((classic, None), (policy, "g")):
        allowed = dict(action="Allow", action_reason=None, rule_collection_group=group, rule_collection="c", rule="any-web")
        con = _store(_flows(_app("10.1.0.4", "a.example.com", **allowed) + _app("10.1.0.4", "b.example.com", **allowed)
                            + _net("10.1.0.4", "203.0.113.5", 8443)))
        recs = recommend(con, WINDOW, policy=rs)
        out.append(sorted((r.kind, (r.existing_rule or {}).get("rule"),
                           tuple(r.rule.target_fqdns + r.rule.destination_addresses) if r.rule else ()) for r in recs.items))
        narrowed += [r.rule for r in recs.by_kind("narrow-rule")]
    assert out[0] == out[1]
    # evaluated before the broad rule: on a classic firewall (no groups) its collection takes a priority above the
    # broad collection's (200); in a policy its own group goes just above the broad rule's group (300)
    assert narrowed[0].rule_collection_priority == 199
    assert (narrowed[1].rule_collection_group_priority, narrowed[1].rule_collection_priority) == (299, 100)
    assert ("narrow-rule", "any-web", ("a.example.com", "b.example.com")) in out[0]
    assert ("remove-rule", "unused", ()) in out[0]


# -- shadowing: the index finds exactly what comparing every pair finds ------------------------------

def _random_rules(seed: int, n: int) -> list[Rule]:
    rnd = random.Random(seed)
    nets = ["*", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.5", "10.1.2.0-10.1.2.127", "192.168.0.0/16",
            "AzureCloud"]
    names = ["*", "*.example.com", "a.example.com", "b.example.com", "*.b.example.com", "x.b.example.com", "other.net"]
    ports = ["*", "443", "80", "8000-8100", "8080", "1-1024"]
    groups = []
    for i in range(n):
        if rnd.random() < 0.5:
            r = {"ruleType": "ApplicationRule", "name": f"a{i}", "sourceAddresses": rnd.sample(nets[:-1], rnd.randint(1, 2)),
                 "protocols": [{"protocolType": rnd.choice(["Https", "Http"]), "port": rnd.choice([443, 80])}],
                 "targetFqdns": rnd.sample(names, rnd.randint(1, 2))}
        else:
            r = {"ruleType": "NetworkRule", "name": f"n{i}", "ipProtocols": rnd.sample(["TCP", "UDP", "Any"], 1),
                 "sourceAddresses": rnd.sample(nets[:-1], rnd.randint(1, 2)),
                 "destinationAddresses": rnd.sample(nets, rnd.randint(1, 2)), "destinationPorts": rnd.sample(ports, rnd.randint(1, 2))}
        groups.append(_group(f"g{i % 5}", 100 + i % 5, [r], coll=f"c{i}"))
    return parse_policy(groups)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_shadow_index_agrees_with_every_pair(seed):
    rules = _random_rules(seed, 60)
    brute = {}
    for i, b in enumerate(rules):
        if b.rule_type == "nat":
            continue
        first = next((a for a in rules[:i] if _covers(a, b)), None)
        if first is not None:
            brute[b.key] = first.key
    assert {k: v.key for k, v in shadowed_by(rules).items()} == brute


# -- DNS proxy settings ----------------------------------------------------------------------------

def _proxy_store():
    """Two pods reach 203.0.113.10:5432, each connection just after resolving db.partner-example.com."""
    from datetime import timedelta

    rows = [r for s in ("10.244.1.9", "10.244.1.10") for r in _net(s, "203.0.113.10", 5432, n=8, proto="TCP")]
    dns = [{"time": r["time"] - timedelta(seconds=2), "firewall": "fw", "source_ip": r["source_ip"],
            "query_name": "db.partner-example.com", "query_type": "A", "response_code": "NOERROR", "duration_s": 0.002}
           for r in rows]
    return _store(_flows(rows), dns)


NTP = _rule("ntp", ipProtocols=["UDP"], destinationAddresses=[], destinationFqdns=["ntp.ubuntu.com"],
            destinationPorts=["123"])


def test_require_proxy_for_network_rules_is_read_from_policies_and_classic_firewalls():
    e = load_files([ARM / "firewallPolicies-get.json", ARM / "ruleCollectionGroups-list.json"])
    rs = e.default_rules()
    assert rs.dns_proxy is True and rs.require_proxy is False  # Microsoft's published example
    classic = parse_documents([("fw.json", {
        "id": f"{SUB}/azureFirewalls/fw-classic", "name": "fw-classic",
        "properties": {"additionalProperties": {"Network.DNS.EnableProxy": "true",
                                                 "Network.DNS.RequireProxyForNetworkRules": "True"},
                       "networkRuleCollections": [{"name": "c", "properties": {
                           "priority": 100, "action": {"type": "Allow"},
                           "rules": [{"name": "r", "protocols": ["TCP"], "sourceAddresses": ["*"],
                                      "destinationAddresses": ["10.0.0.1"], "destinationPorts": ["443"]}]}}]}})])
    rs = classic.rules_for_firewall("fw-classic")
    assert rs.dns_proxy is True and rs.require_proxy is True
    child = parse_documents([("p.json", [
        {"id": f"{SUB}/firewallPolicies/base", "name": "base", "dnsSettings": {"enableProxy": True,
                                                                              "requireProxyForNetworkRules": True}},
        {"id": f"{SUB}/firewallPolicies/weu", "name": "weu", "basePolicy": {"id": f"{SUB}/firewallPolicies/base"}},
        {**_group("apps", 200, [NTP]), "id": f"{SUB}/firewallPolicies/weu/ruleCollectionGroups/apps"}])])
    rs = child.rules_for_policy(f"{SUB}/firewallPolicies/weu".lower())
    assert rs.dns_proxy is True and rs.require_proxy is True  # a child without DNS settings has its parent's


def test_the_dns_proxy_note_says_when_fqdns_in_network_rules_are_not_supported():
    pol = {"id": f"{SUB}/firewallPolicies/fwp", "name": "fwp",
           "dnsSettings": {"enableProxy": True, "requireProxyForNetworkRules": False}}
    group = {**_group("net", 200, [NTP]), "id": f"{SUB}/firewallPolicies/fwp/ruleCollectionGroups/net"}
    rs = parse_documents([("p.json", pol), ("g.json", [group])]).default_rules()
    recs = recommend(_proxy_store(), WINDOW, policy=rs)
    (warning,) = [w for w in recs.warnings if "requireProxyForNetworkRules" in w]
    assert "fwp does not require DNS proxy for network rules" in warning and "net/c/ntp" in warning
    (add,) = [r for r in recs.by_kind("add-network-rule") if r.rule.destination_fqdns == ["db.partner-example.com"]]
    assert add.rollout[0] == ("set requireProxyForNetworkRules to true on fwp (the policy's DNS settings) before "
                              "adding this rule")
    assert any("requireProxyForNetworkRules off: turn it on first" in n for n in add.evidence.notes)
    assert sum("DNS proxy" in n for n in add.evidence.notes) == 1  # said once, by what knows the settings

    pol["dnsSettings"]["requireProxyForNetworkRules"] = True  # both on: nothing to say
    recs = recommend(_proxy_store(), WINDOW, policy=parse_documents([("p.json", pol), ("g.json", [group])]).default_rules())
    assert not any("requireProxyForNetworkRules" in w or "DNS proxy is off" in w for w in recs.warnings)
    (add,) = [r for r in recs.by_kind("add-network-rule") if r.rule.destination_fqdns]
    assert not any("requireProxyForNetworkRules" in n or "DNS proxy" in n for n in add.evidence.notes)
    assert not any("requireProxy" in s or "DNS proxy" in s for s in add.rollout)


# -- a parent policy's rules, judged by every firewall that inherits them ------------------------------

def _parent_estate(children_known: bool = True) -> list[tuple[str, object]]:
    """fwp-base (a broad web rule and an SMTP rule) inherited by fwp-a (firewall fw-a) and fwp-b (fw-b)."""
    base, kids = f"{SUB}/firewallPolicies/fwp-base", {c: f"{SUB}/firewallPolicies/fwp-{c}" for c in "ab"}
    web = {"ruleType": "ApplicationRule", "name": "allow-web", "sourceAddresses": ["10.0.0.0/8"],
           "protocols": [{"protocolType": "Https", "port": 443}], "targetFqdns": ["*"]}
    smtp = _rule("allow-smtp", sourceAddresses=["10.0.0.0/8"], destinationAddresses=["198.51.100.25"],
                 destinationPorts=["25"])
    policies = [{"id": base, "name": "fwp-base", "threatIntelMode": "Alert", **({"childPolicies": [{"id": k} for k in kids.values()]}
                                                   if children_known else {})}]
    policies += [{"id": k, "name": f"fwp-{c}", "basePolicy": {"id": base}, "childPolicies": [],
                  "firewalls": [{"id": f"{SUB}/azureFirewalls/fw-{c}"}]} for c, k in kids.items()]
    groups = [{**_group("base", 300, [web, smtp], coll="c"), "id": f"{base}/ruleCollectionGroups/base"}]
    groups += [{**_group("own", 200, [_rule(f"allow-{c}")]), "id": f"{k}/ruleCollectionGroups/own"}
               for c, k in kids.items()]
    return [("policies.json", policies), ("groups.json", groups)]


def _parent_store(firewalls: str = "ab"):
    """fw-a's pods reach a.example.com, fw-b's b.example.com, both through fwp-base's allow-web."""
    rows = []
    for c, octet in (("a", 1), ("b", 2)):
        if c in firewalls:
            allowed = dict(action="Allow", action_reason=None, rule_collection_group="base", rule_collection="c",
                           rule="allow-web", policy="fwp-base", firewall=f"{SUB}/azureFirewalls/fw-{c}".lower())
            rows += _app(f"10.{octet}.0.4", f"{c}.example.com", **allowed)
    return _store(_flows(rows))


def test_a_parent_rule_unused_or_broad_for_every_firewall_it_serves_changes_once_in_the_parent():
    from egresslens.recommend import recommend_fleet

    recs = recommend_fleet(_parent_store(), WINDOW, parse_documents(_parent_estate()))
    on_parent = {r.kind: r for r in recs.items if r.policy == "fwp-base" and r.existing_rule}
    assert sorted(on_parent) == ["narrow-rule", "remove-rule"]
    assert [r.existing_rule["rule"] for r in recs.items if r.existing_rule and r.existing_rule["rule"] == "allow-smtp"
            ] == ["allow-smtp"]  # once, not once per firewall
    unused, narrow = on_parent["remove-rule"], on_parent["narrow-rule"]
    assert unused.existing_rule["rule"] == "allow-smtp" and len(unused.firewalls) == 2
    assert unused.policy_id.lower().endswith("/firewallpolicies/fwp-base")
    assert "unused by the traffic of every firewall that inherits fwp-base (fw-a, fw-b)" in unused.rationale
    # narrowed to what both firewalls' traffic uses together: each one's names and sources, nothing more
    assert narrow.existing_rule["rule"] == "allow-web"
    assert narrow.rule.target_fqdns == ["a.example.com", "b.example.com"]
    assert sorted(narrow.rule.source_addresses) == ["10.1.0.0/24", "10.2.0.0/24"]
    assert narrow.rule.rule_collection_group_priority == 299 and len(narrow.firewalls) == 2
    assert not any("nothing is proposed on it" in w for w in recs.warnings)


def test_a_parent_that_serves_firewalls_without_logs_or_unknown_children_is_left_alone_and_says_why():
    from egresslens.recommend import recommend_fleet

    recs = recommend_fleet(_parent_store("a"), WINDOW, parse_documents(_parent_estate()))
    assert not [r for r in recs.items if r.policy == "fwp-base"]
    (held,) = [w for w in recs.warnings if w.startswith("parent policy fwp-base")]
    assert "judged by the traffic of fw-a (1 narrow-rule, 1 remove-rule would follow)" in held
    assert "it also serves fw-b, with no logs in the window" in held

    recs = recommend_fleet(_parent_store(), WINDOW, parse_documents(_parent_estate(children_known=False)))
    assert not [r for r in recs.items if r.policy == "fwp-base"]
    (held,) = [w for w in recs.warnings if w.startswith("parent policy fwp-base")]
    assert "the child policies of fwp-base were not read" in held
