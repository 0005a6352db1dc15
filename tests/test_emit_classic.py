"""A classic firewall (rules that are properties of the firewall itself) in Terraform and Bicep: Terraform as
`azurerm_firewall_network_rule_collection` / `azurerm_firewall_application_rule_collection` resources (read
with python-hcl2, formatted as `terraform fmt` writes them), Bicep as the firewall resource's
`networkRuleCollections` / `applicationRuleCollections` (read with the literal reader below); every name from
the hostile corpus comes out as the same text, never as syntax."""

from __future__ import annotations

import re

import hcl2
import pytest
from hostile import TEXTS, assert_no_raw_controls
from test_emitters_say_what_they_leave_out import hclwrite_format
from test_escape import _bicep_unescape, _hcl_unescape
from test_hostile import assert_safe_bicep, assert_safe_terraform
from test_recommend_engine import WINDOW

from egresslens.recommend import emit_bicep, emit_terraform
from egresslens.recommend.engine import Recommendations
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation

FW = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-hub/providers/Microsoft.Network/azureFirewalls/fw-classic"
POLICY = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-hub/providers/Microsoft.Network/firewallPolicies/fwp"


def _rec(rule: ProposedRule, rid: str, policy: str = "fw-classic", policy_id: str = FW, kind: str | None = None,
         existing: dict | None = None) -> Recommendation:
    kind = kind or ("add-application-rule" if rule is not None and rule.rule_type == "ApplicationRule"
                    else "add-network-rule")
    return Recommendation(id=rid, kind=kind, title="t", rule=rule, evidence=Evidence(), confidence="high", risk="low",
                          rationale="r", window={"start": "s", "end": "e", "hours": 1.0}, policy=policy,
                          policy_id=policy_id, existing_rule=existing)


def _app(name: str, collection: str, prio: int, group: str = "egresslens-proposed", **kw) -> ProposedRule:
    return ProposedRule(rule_type="ApplicationRule", rule_collection_group=group, rule_collection_group_priority=500,
                        rule_collection=collection, rule_collection_priority=prio, name=name,
                        source_addresses=kw.pop("sources", ["10.244.1.0/24"]),
                        protocols=kw.pop("protocols", ["Https:443"]), **kw)


def _net(name: str, collection: str, prio: int, group: str = "egresslens-proposed", **kw) -> ProposedRule:
    return ProposedRule(rule_type="NetworkRule", rule_collection_group=group, rule_collection_group_priority=500,
                        rule_collection=collection, rule_collection_priority=prio, name=name,
                        source_addresses=kw.pop("sources", ["10.244.1.0/24"]), ip_protocols=kw.pop("protocols", ["TCP"]),
                        destination_ports=kw.pop("ports", ["5432"]), **kw)


def _classic_recs() -> Recommendations:
    items = [
        _rec(_app("allow-api", "allow-app-pods", 300, target_fqdns=["api.partner-example.com", "*.blob.core.windows.net"],
                  protocols=["Http:80", "Https:443"]), "a1"),
        _rec(_app("allow-aks", "allow-app-pods", 300, fqdn_tags=["AzureKubernetesService"]), "a2"),
        _rec(_net("allow-db", "allow-net-pods", 300, destination_fqdns=["orders-db.pg-example-hosting.net"]), "n1"),
        # a collection of the same name in another group is the same collection on a classic firewall; its
        # priority is taken by the collection above: it moves to the next free one of its type
        _rec(_net("allow-ntp", "allow-net-pods", 300, group="other", protocols=["UDP"], ports=["123"],
                  destination_addresses=["185.125.190.56"]), "n2"),
        _rec(_net("allow-icmp", "allow-icmp", 300, protocols=["ICMP"], ports=["*"], destination_addresses=["1.1.1.1"],
                  source_ip_groups=[FW.rsplit("/", 2)[0] + "/ipGroups/ipg-pods"], sources=[]), "n3"),
        _rec(None, "rm1", kind="remove-rule", existing={"rule_collection_group": None, "rule_collection": "legacy",
                                                        "rule": "allow-smtp", "rule_type": "network"}),
    ]
    return Recommendations(items, WINDOW)


# -- Terraform ---------------------------------------------------------------------------------------

def _plain(value):
    """python-hcl2's reading with string literals as their text (it keeps the quotes) and block markers dropped."""
    if isinstance(value, str) and len(value) > 1 and value[0] == value[-1] == '"':
        return _hcl_unescape(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k != "__is_block__"}
    return value


def _tf(text: str) -> dict:
    return _plain(hcl2.loads(text))


def _resources(doc: dict, kind: str) -> dict[str, dict]:
    return {name: body for r in doc.get("resource", []) for t, v in r.items() if t == kind for name, body in v.items()}


def test_terraform_writes_a_classic_firewall_as_rule_collection_resources():
    text = emit_terraform.emit(_classic_recs())
    assert hclwrite_format(text) == text
    doc = _tf(text)
    variables = {k: v for d in doc["variable"] for k, v in d.items()}
    assert variables["firewall_name"]["default"] == "fw-classic"
    assert variables["resource_group_name"]["default"] == "rg-hub"
    apps = _resources(doc, "azurerm_firewall_application_rule_collection")
    nets = _resources(doc, "azurerm_firewall_network_rule_collection")
    assert not _resources(doc, "azurerm_firewall_policy_rule_collection_group")
    (app,) = apps.values()
    assert app["name"] == "allow-app-pods" and app["priority"] == 300 and app["action"] == "Allow"
    assert app["azure_firewall_name"] == "${var.firewall_name}" and app["resource_group_name"] == "${var.resource_group_name}"
    api, aks = app["rule"]
    assert api["target_fqdns"] == ["api.partner-example.com", "*.blob.core.windows.net"]
    assert api["protocol"] == [{"type": "Http", "port": 80}, {"type": "Https", "port": 443}]
    assert aks["fqdn_tags"] == ["AzureKubernetesService"] and "target_fqdns" not in aks
    by_name = {b["name"]: b for b in nets.values()}
    assert {n: b["priority"] for n, b in by_name.items()} == {"allow-icmp": 300, "allow-net-pods": 301}
    assert [r["name"] for r in by_name["allow-net-pods"]["rule"]] == ["allow-db", "allow-ntp"]
    db = by_name["allow-net-pods"]["rule"][0]
    assert db["destination_fqdns"] == ["orders-db.pg-example-hosting.net"] and db["protocols"] == ["TCP"]
    icmp = by_name["allow-icmp"]["rule"][0]
    assert "source_addresses" not in icmp and icmp["source_ip_groups"][0].endswith("/ipGroups/ipg-pods")
    # one change at a time on a firewall: every collection after the one before it
    deps = [b.get("depends_on") for b in list(nets.values()) + list(apps.values())]
    assert deps.count(None) == 1 and len([d for d in deps if d]) == 2
    assert "needs DNS proxy on the firewall" in text and "remove-rule: legacy/allow-smtp" in text
    assert "apply them with the az output" not in text


def test_a_policy_and_a_classic_firewall_in_one_terraform_file():
    recs = _classic_recs()
    recs.items.append(_rec(_app("allow-api", "allow-app-pods", 300, target_fqdns=["api.partner-example.com"]), "p1",
                           policy="fwp", policy_id=POLICY))
    text = emit_terraform.emit(recs)
    assert hclwrite_format(text) == text
    doc = _tf(text)
    variables = {k for d in doc["variable"] for k in d}
    assert {"firewall_name_fw_classic", "resource_group_name_fw_classic", "firewall_policy_id_fwp"} <= variables
    (group,) = _resources(doc, "azurerm_firewall_policy_rule_collection_group").values()
    assert group["firewall_policy_id"] == "${var.firewall_policy_id_fwp}"
    assert _resources(doc, "azurerm_firewall_application_rule_collection")


# -- Bicep -------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?://[^\n]*\n)?\s*(?:(?P<s>'(?:[^'\\\n]|\\.)*')|(?P<n>-?\d+)|(?P<w>true|false|null)"
                    r"|(?P<k>[A-Za-z_][A-Za-z0-9_]*)\s*:|(?P<p>[\[\]{}]))")


def bicep_value(text: str, pos: int = 0):
    """A Bicep literal (objects, arrays, strings, integers, booleans; one item a line) at `pos`: (value, end)."""
    m = _TOKEN.match(text, pos)
    assert m, f"not a literal at {text[pos:pos + 40]!r}"
    if m["s"]:
        return _bicep_unescape(m["s"]), m.end()
    if m["n"]:
        return int(m["n"]), m.end()
    if m["w"]:
        return {"true": True, "false": False, "null": None}[m["w"]], m.end()
    opener = m["p"]
    assert opener in "[{", opener
    out: list | dict = [] if opener == "[" else {}
    pos = m.end()
    while True:
        close = re.compile(r"(?:\s|//[^\n]*\n)*" + ("\\]" if opener == "[" else "\\}")).match(text, pos)
        if close:
            return out, close.end()
        if opener == "[":
            value, pos = bicep_value(text, pos)
            out.append(value)
        else:
            k = _TOKEN.match(text, pos)
            assert k and k["k"], f"no key at {text[pos:pos + 40]!r}"
            out[k["k"]], pos = bicep_value(text, k.end())


def bicep_exports(text: str) -> dict:
    """Every `@export() var NAME = <literal>` of a Bicep file."""
    return {m[1]: bicep_value(text, m.end())[0] for m in re.finditer(r"^@export\(\)\nvar (\w+) =", text, re.M)}


def test_bicep_writes_a_classic_firewall_as_its_rule_collection_properties():
    text = emit_bicep.emit(_classic_recs())
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")
    assert "resource " not in text  # never a firewall resource that would drop the collections it holds
    exports = bicep_exports(text)
    nets, apps = exports["networkRuleCollections"], exports["applicationRuleCollections"]
    assert [c["name"] for c in nets] == ["allow-icmp", "allow-net-pods"]
    assert [c["properties"]["priority"] for c in nets] == [300, 301]
    assert all(c["properties"]["action"] == {"type": "Allow"} for c in nets + apps)
    db, ntp = nets[1]["properties"]["rules"]
    assert db == {"name": "allow-db", "sourceAddresses": ["10.244.1.0/24"], "protocols": ["TCP"],
                  "destinationAddresses": [], "destinationFqdns": ["orders-db.pg-example-hosting.net"],
                  "destinationPorts": ["5432"]}  # a classic network rule names `protocols`, and no ruleType
    assert ntp["protocols"] == ["UDP"] and ntp["destinationAddresses"] == ["185.125.190.56"]
    icmp = nets[0]["properties"]["rules"][0]
    assert "sourceAddresses" not in icmp and icmp["sourceIpGroups"][0].endswith("/ipGroups/ipg-pods")
    (app,) = apps
    api, aks = app["properties"]["rules"]
    assert api["protocols"] == [{"protocolType": "Http", "port": 80}, {"protocolType": "Https", "port": 443}]
    assert api["targetFqdns"] == ["api.partner-example.com", "*.blob.core.windows.net"] and api["fqdnTags"] == []
    assert aks["fqdnTags"] == ["AzureKubernetesService"]
    assert "concat(<its network rule collections>, networkRuleCollections)" in text
    assert "needs DNS proxy on the firewall" in text and "remove-rule: legacy/allow-smtp" in text


# -- the hostile corpus --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", list(TEXTS.values()), ids=list(TEXTS))
def test_hostile_names_reach_classic_terraform_and_bicep_as_the_same_text(text):
    """Rule and collection names are the user's and, for narrowed rules, come from logs: whatever they hold,
    each comes out of Terraform and Bicep as one string with the same text."""
    recs = Recommendations([
        _rec(_net(text, text, 300, destination_addresses=["203.0.113.10"]), "n1"),
        _rec(_app(text + "-app", text, 400, target_fqdns=["api.partner-example.com"]), "a1"),
        _rec(None, "rm1", kind="remove-rule", existing={"rule_collection_group": None, "rule_collection": text,
                                                        "rule": text, "rule_type": "network"})], WINDOW)
    tf = emit_terraform.emit(recs)
    raw = hcl2.loads(tf)
    for literal in (b["name"] for r in raw["resource"] for v in r.values() for b in v.values()):
        assert literal.startswith('"') and literal.endswith('"')  # one string token, nothing interpolated
    doc = _plain(raw)
    (net,) = _resources(doc, "azurerm_firewall_network_rule_collection").values()
    (app,) = _resources(doc, "azurerm_firewall_application_rule_collection").values()
    assert net["name"] == text and net["rule"][0]["name"] == text and app["name"] == text
    assert app["rule"][0]["name"] == text + "-app"
    bicep = emit_bicep.emit(recs)
    exports = bicep_exports(bicep)
    assert exports["networkRuleCollections"][0]["name"] == text
    assert exports["networkRuleCollections"][0]["properties"]["rules"][0]["name"] == text
    assert exports["applicationRuleCollections"][0]["properties"]["rules"][0]["name"] == text + "-app"
    assert_safe_terraform(tf)
    assert_safe_bicep(bicep)
    assert_no_raw_controls(tf)
    assert_no_raw_controls(bicep)
