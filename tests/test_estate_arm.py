"""Reading the estate from Azure: the azure-core client against a loopback ARM server that answers
with the bodies Microsoft publishes (renamed into one estate), pages with `nextLink`, 429 with
`Retry-After`, 403 and 404."""

from __future__ import annotations

import time

import pytest

from egresslens.estate.arm import read_estate
from egresslens.sources.arm import ArmError

from fakes.arm_server import TOKEN, ArmServer, FakeCredential, fixture, renamed

SUB = "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network"
BASE, CHILD = f"{SUB}/firewallPolicies/fwp-base", f"{SUB}/firewallPolicies/policy1"
HUB_FW, CLASSIC_FW = f"{SUB}/azureFirewalls/fw-hub", f"{SUB}/azureFirewalls/azurefirewall"
IPG1, IPG2 = f"{SUB}/ipGroups/ipGroups1", f"{SUB}/ipGroups/ipGroups2"


def _estate(server: ArmServer) -> None:
    """A secured-hub firewall on policy1, whose parent is fwp-base; a classic firewall; two IP Groups."""
    server.add(renamed(fixture("azureFirewalls-put-in-hub.json"), **{"azureFirewalls/azurefirewall": "azureFirewalls/fw-hub",
                                                                      '"azurefirewall"': '"fw-hub"'}))
    child = renamed(fixture("firewallPolicies-get.json"), firewallPolicy="policy1")
    child["properties"]["basePolicy"] = {"id": BASE}
    server.add(child)
    server.add(renamed(fixture("firewallPolicies-get.json"), firewallPolicy="fwp-base"))
    # the child's groups: the published list, plus the group with IP Groups, with the rule ids spelled right
    groups = renamed(fixture("ruleCollectionGroups-list.json"), firewallPolicy="policy1")["value"]
    ipg = renamed(fixture("ruleCollectionGroups-with-ip-groups-get.json"), firewallPolicy="policy1", ruleGroups="ruleCollectionGroups",
                  **{"/subscriptions/subid/providers/Microsoft.Network/resourceGroup/rg1/ipGroups": f"{SUB}/ipGroups"})
    app = renamed(fixture("ruleCollectionGroups-with-web-categories-list.json"), firewallPolicy="policy1",
                  ruleCollectionGroup1="apps", **{"e747cc13-97d4-4a79-b463-42d7f4e558f2": "subid"})["value"][0]
    app["properties"]["priority"] = 300
    server.add_groups(CHILD, groups + [ipg, app])
    base_groups = renamed(fixture("ruleCollectionGroups-list.json"), firewallPolicy="fwp-base",
                          ruleCollectionGroup1="base-rules")["value"]
    server.add_groups(BASE, base_groups)
    for i, g in enumerate(fixture("ipGroups-list.json")["value"], 1):
        g = dict(g, id=f"{SUB}/ipGroups/ipGroups{i}")
        server.add(g)
    classic = renamed(fixture("azureFirewalls-get-with-ip-groups.json"),
                      **{"/subscriptions/subId/providers/Microsoft.Network/resourceGroup/myResourceGroup/ipGroups": f"{SUB}/ipGroups"})
    server.add(classic)


@pytest.fixture
def arm():
    server = ArmServer(page_size=2).start()
    _estate(server)
    try:
        yield server
    finally:
        server.stop()


def _read(arm, cred=None, **kw):
    return read_estate(credential=cred or FakeCredential(), endpoint=arm.endpoint, retry_backoff_factor=0.0, **kw)


def test_firewall_id_reads_policy_parent_groups_pages_and_ip_groups(arm):
    e = _read(arm, firewall_ids=[HUB_FW])
    rs = e.rules_for_firewall(HUB_FW)
    assert rs.target == "policy1" and [p.name for p in rs.chain] == ["fwp-base", "policy1"]
    assert [(r.rule_collection_group, r.name, r.depth) for r in rs] == [
        ("base-rules", "network-rule-1", 1), ("ruleCollectionGroup1", "network-rule-1", 0),
        ("ruleGroup1", "network-rule1", 0), ("apps", "rule1", 0)]
    by = {r.rule_collection_group: r for r in rs}
    assert by["ruleGroup1"].all_sources == ["13.64.39.16/32", "40.74.146.80/31", "40.74.147.32/28"]
    assert by["ruleGroup1"].all_destination_addresses == ["14.64.39.16/32", "41.74.146.80/31", "42.74.147.32/28"]
    assert rs.dns_proxy is True
    paths = arm.paths()
    # three groups at two a page: the child's list took two requests, the second from nextLink
    assert paths.count(f"{CHILD}/ruleCollectionGroups") == 2
    assert any(r["query"].get("$skipToken") == ["2"] for r in arm.requests)
    assert {IPG1, IPG2} <= set(paths)
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in arm.requests)


def test_classic_firewall_and_policy_id(arm):
    e = _read(arm, firewall_ids=[CLASSIC_FW], policy_ids=[BASE])
    rs = e.rules_for_firewall(CLASSIC_FW)
    assert rs.classic and {r.name for r in rs} == {"DNAT-HTTPS-traffic", "L4-traffic", "L4-traffic-with-FQDN", "rule1"}
    assert {r.name: r for r in rs}["rule1"].all_sources[0] == "13.64.39.16/32"
    assert any("ipGroups3" in w for w in e.warnings)  # referenced but absent: 404 would stop, so it is said
    assert e.policy(BASE) is not None and e.rules_for_policy(e.policy(BASE).key)[0].name == "network-rule-1"


def test_throttling_is_retried_after_retry_after_then_said_in_one_sentence(arm):
    arm.throttle[CHILD.lower()] = 1
    t = time.monotonic()
    e = _read(arm, firewall_ids=[HUB_FW])
    assert time.monotonic() - t >= 1.0  # Retry-After: 1 was honoured
    assert e.rules_for_firewall(HUB_FW) is not None and arm.paths().count(CHILD) == 2
    arm.throttle[CHILD.lower()] = -1
    arm.retry_after = "0"
    with pytest.raises(ArmError) as err:
        _read(arm, firewall_ids=[HUB_FW])
    assert "throttling" in str(err.value) and "(429)" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("path,status,needle", [(IPG1, 403, "IP Group (403): the signed-in identity needs the Reader role"),
                                                 (CHILD, 403, "firewall policy (403)"),
                                                 (HUB_FW, 404, "firewall " + HUB_FW + " was not found (404)")])
def test_permission_and_missing_resources(arm, path, status, needle):
    arm.status[path.lower()] = status
    with pytest.raises(ArmError) as err:
        _read(arm, firewall_ids=[HUB_FW])
    assert needle in str(err.value) and TOKEN not in str(err.value) and "\n" not in str(err.value)


def test_a_missing_ip_group_is_said_and_its_rules_left_unjudged(arm):
    arm.status[IPG2.lower()] = 404
    e = _read(arm, firewall_ids=[HUB_FW])
    assert any("ipGroups2" in w and "(404)" in w for w in e.warnings)
    rule = next(r for r in e.rules_for_firewall(HUB_FW) if r.rule_collection_group == "ruleGroup1")
    assert rule.unresolved_ip_groups == [IPG2]


def test_bad_credential_bad_ids_and_foreign_next_link(arm):
    with pytest.raises(ArmError, match="No usable Azure credential"):
        _read(arm, cred=FakeCredential(fail=True), firewall_ids=[HUB_FW])
    with pytest.raises(ArmError, match=r"\(401\)"):
        _read(arm, cred=FakeCredential(token="wrong"), firewall_ids=[HUB_FW])
    with pytest.raises(ValueError, match="--policy-id must look like"):
        _read(arm, policy_ids=[HUB_FW])
    arm.foreign_next_link = True
    with pytest.raises(ArmError, match="another host"):
        _read(arm, firewall_ids=[HUB_FW])
