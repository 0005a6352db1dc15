"""Contact taint and ASCII look-alikes: the suspicion model's rules, case by case."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import polars as pl
import pytest

from egresslens.recommend import Config, recommend
from egresslens.suspicion import assess
from test_recommend_engine import T0, WINDOW, _app, _flows, _store

PODS = "10.1.0.0/24"
BEACON, OTHER = "10.1.0.66", "10.1.0.77"
CLEAN = [f"10.1.0.{i}" for i in range(10, 16)]
CFG = Config.from_dict({"sources": {"aks-pods": [PODS]}})
C2 = "sync.cdn-update-example.org"


def _q(t, src, name, code="NOERROR", qtype="A"):
    return {"time": t, "firewall": "fw", "source_ip": src, "query_name": name, "query_type": qtype,
            "response_code": code, "duration_s": 0.002}


def _beacon(start_h: int = 12, hours: int = 10, period_s: int = 60) -> list[dict]:
    """A newly seen name resolved at regular intervals (after a baseline of other names)."""
    base = [_q(T0 + timedelta(minutes=30 * i), CLEAN[0], "api.partner-example.com") for i in range(20)]
    t0 = T0 + timedelta(hours=start_h)
    return base + [_q(t0 + timedelta(seconds=period_s * i + (i % 3) * 0.2), BEACON, C2)
                   for i in range(hours * 3600 // period_s)]


def _at(hour: float, src: str, fqdn: str, n: int = 1, action: str = "Deny", **kw) -> list[dict]:
    return [{"time": T0 + timedelta(hours=hour, minutes=7 * i), "kind": "application", "protocol": "HTTPS",
             "source_ip": src, "destination_fqdn": fqdn, "destination_port": 443, "action": action, **kw}
            for i in range(n)]


def _proposed(recs) -> list:
    return [r for r in recs.items if r.rule is not None and r.kind in ("add-application-rule", "add-network-rule",
                                                                       "narrow-rule")]


# -- contact taint -----------------------------------------------------------------------------------------

def test_a_pod_that_reached_a_beacon_name_a_few_times_is_compromised_from_its_first_contact():
    dns = _beacon() + [_q(T0 + timedelta(hours=h, minutes=13 * h % 50), OTHER, C2) for h in (14, 17, 18)]
    before = _at(2, OTHER, "reports.partner-example.com", n=6) + _at(9, OTHER, "reports.partner-example.com", n=6)
    upload = [r for h in range(19, 40) for r in _at(h, OTHER, "stbkp7f3k2q.blob.core.windows.net", n=4)]
    clean = [r for src in CLEAN for r in _app(src, "api.partner-example.com", n=8)]
    con = _store(_flows(before + upload + clean), dns_rows=dns)
    susp = assess(con, window=WINDOW)
    assert susp.compromised == [BEACON, OTHER]
    row = susp.source(OTHER)
    assert row["kinds"] == ["contact"] and row["first_seen"] == T0 + timedelta(hours=14, minutes=32)
    assert "cdn-update-example.org" in row["evidence"][0]["detail"] and row["hours_seen"] == 3
    recs = recommend(con, WINDOW, config=CFG)
    allowed = {d for r in _proposed(recs) for d in r.rule.target_fqdns}
    assert allowed == {"api.partner-example.com"}  # the upload target has 84 hits in 21 hours: support does not matter
    inv = {r.title: r for r in recs.by_kind("investigate")}
    upload_item = next(r for t, r in inv.items() if "stbkp7f3k2q" in t)
    assert OTHER in upload_item.title and "84 of its 84 hit(s) came after their first contact" in upload_item.rationale
    early = next(r for t, r in inv.items() if "reports.partner-example.com" in t)
    assert "only before their first contact" in early.rationale


def test_contact_counts_by_flow_as_well_as_dns_allowed_or_denied_and_by_address():
    threats = [{"time": T0 + timedelta(hours=1), "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS",
                "source_ip": CLEAN[0], "source_port": 1, "destination_ip": None, "destination_port": 443,
                "fqdn": "update.malware-cdn-example.com", "target_url": None, "action": "deny", "description": "Bot",
                "signature_id": None, "category": None, "severity": None, "is_tls_inspected": False},
               {"time": T0 + timedelta(hours=1), "firewall": "fw", "kind": "idps", "protocol": "TCP",
                "source_ip": CLEAN[1], "source_port": 1, "destination_ip": "185.220.101.47", "destination_port": 4444,
                "fqdn": None, "target_url": None, "action": "drop", "description": "Cobalt Strike", "signature_id": "1",
                "category": None, "severity": 1, "is_tls_inspected": False},
               {"time": T0 + timedelta(hours=1), "firewall": "fw", "kind": "idps", "protocol": "TCP",
                "source_ip": CLEAN[2], "source_port": 1, "destination_ip": "140.82.112.3", "destination_port": 443,
                "fqdn": None, "target_url": None, "action": "alert", "description": "curl User-Agent",
                "signature_id": "2", "category": None, "severity": 4, "is_tls_inspected": False}]
    # an allowed flow to another name of the threat-intel name's owner zone; a flow to the IDPS address;
    # a flow to the address of an informational signature (not withheld: no taint)
    rows = (_at(5, CLEAN[3], "cdn.malware-cdn-example.com", action="Allow", rule="r", rule_collection="c",
                rule_collection_group="g", action_reason=None)
            + [{"time": T0 + timedelta(hours=6), "kind": "network", "protocol": "TCP", "source_ip": CLEAN[4],
                "destination_ip": "185.220.101.47", "destination_port": 4444}]
            + [{"time": T0 + timedelta(hours=6), "kind": "network", "protocol": "TCP", "source_ip": CLEAN[5],
                "destination_ip": "140.82.112.3", "destination_port": 443}])
    con = _store(_flows(rows), threat_rows=threats)
    susp = assess(con, window=WINDOW)
    assert susp.compromised == [CLEAN[0], CLEAN[1], CLEAN[3], CLEAN[4]]  # not the informational signature's
    assert susp.source(CLEAN[3])["kinds"] == ["contact"]
    assert "owner zone of the threat intel update.malware-cdn-example.com" in susp.source(CLEAN[3])["evidence"][0]["detail"]
    assert susp.source(CLEAN[4])["evidence"][0]["subject"] == "185.220.101.47"


def test_every_compromised_address_is_cut_out_of_a_rule_for_a_name_it_never_asked_for():
    dns = _beacon() + [_q(T0 + timedelta(hours=20), OTHER, C2)]
    rows = [r for src in CLEAN for r in _app(src, "api.partner-example.com", n=8)]  # OTHER never asks for it
    recs = recommend(_store(_flows(rows), dns_rows=dns), WINDOW, config=CFG)
    (rule,) = _proposed(recs)
    nets = [ipaddress.ip_network(c) for c in rule.rule.source_addresses]
    for ip in (BEACON, OTHER):
        assert not any(ipaddress.ip_address(ip) in n for n in nets)
    assert all(any(ipaddress.ip_address(ip) in n for n in nets) for ip in CLEAN)
    assert any(OTHER in n and "cut out of the rule while under investigation" in n for n in rule.evidence.notes)
    item = next(r for r in recs.by_kind("investigate") if r.title == f"Compromised source {OTHER}: isolate it")
    assert any("cut out of 1 proposed rule" in n for n in item.evidence.notes)


# -- ASCII look-alikes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("candidate,imitates,how", [
    ("files.pyhtonhosted.org", "pythonhosted.org", "one edit away"),  # swapped pair, reference by use
    ("packages.rnicrosoft.com", "microsoft.com", "confusable"),  # rn/m, reference from the catalogue
    ("registry-1.d0cker.io", "docker.io", "confusable"),  # 0/o
    ("login.microsofton1ine.com", "microsoftonline.com", "confusable"),  # 1/l
    ("mcrmsedge.net", "mcr-msedge.net", "hyphen"),  # a dropped hyphen
    ("archive.ubuntu.org", "ubuntu.com", "another public suffix"),  # swapped suffix
])
def test_an_ascii_look_alike_of_a_reference_name_is_never_allowed_and_says_what_it_imitates(candidate, imitates, how):
    rows = [r for src in CLEAN[:3] for r in _app(src, "files.pythonhosted.org", n=8)]
    rows += _app(CLEAN[4], candidate, n=8)
    con = _store(_flows(rows))
    susp = assess(con, window=WINDOW)
    row = susp.names.filter(pl.col("kind") == "lookalike").row(0, named=True)
    assert row["looks_like"] == imitates and how in row["detail"] and row["never_allow"]
    assert susp.name_reason(candidate).startswith("lookalike: look-alike of")
    recs = recommend(con, WINDOW, config=CFG)
    assert not any(candidate in r.rule.target_fqdns for r in _proposed(recs))
    assert any(candidate in r.title and imitates in r.rationale for r in recs.by_kind("investigate"))


def test_a_look_alike_of_a_name_the_policy_allows_is_withheld():
    policy = [{"name": "g", "priority": 300, "ruleCollections": [{
        "ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "c", "priority": 100,
        "action": {"type": "Allow"}, "rules": [{"ruleType": "ApplicationRule", "name": "widgets",
                                                "sourceAddresses": [PODS], "protocols": [{"protocolType": "Https", "port": 443}],
                                                "targetFqdns": ["api.widgets-example.com"]}]}]}]
    from egresslens.recommend import parse_policy

    con = _store(_flows(_app(CLEAN[0], "api.vvidgets-example.com", n=8)))
    assert assess(con, window=WINDOW).name_reason("api.vvidgets-example.com") is None  # no reference without it
    recs = recommend(con, WINDOW, policy=parse_policy(policy), config=CFG)
    row = recs.suspicion.names.filter(pl.col("kind") == "lookalike").row(0, named=True)
    assert row["subject"] == "vvidgets-example.com" and "allowed by the policy" in row["detail"]
    assert not _proposed(recs)


def test_of_numbered_siblings_tenants_references_and_a_typosquat_only_the_typosquat_is_a_look_alike():
    rows = [r for src in CLEAN[:4] for r in _app(src, "storders01.blob.core.windows.net", n=8)]
    rows += _app(CLEAN[4], "storders02.blob.core.windows.net", n=8)  # numbered sibling
    rows += _app(CLEAN[4], "storders01.file.core.windows.net", n=8)  # the same account, another service
    rows += _app(CLEAN[4], "stodrers01.blob.core.windows.net", n=8)  # a storage account typosquat
    rows += _app(CLEAN[5], "download.docker.com", n=8) + _app(CLEAN[5], "docker.io", n=8)  # both in the catalogue
    rows += [r for src in CLEAN[:3] for r in _app(src, "api.shipping-example.com", n=8)]
    rows += [r for src in CLEAN[3:] for r in _app(src, "api.shippings-example.com", n=8)]  # as used: no imitation
    susp = assess(_store(_flows(rows)), window=WINDOW)
    found = susp.names.filter(pl.col("kind") == "lookalike")
    assert found["subject"].to_list() == ["stodrers01.blob.core.windows.net"]
    assert found["looks_like"].to_list() == ["storders01.blob.core.windows.net"]


def test_a_rule_left_with_no_source_address_is_held_not_proposed_with_empty_sources():
    rows = [r for src in ("pod-a", "pod-b", "pod-c") for r in _app(src, "api.partner-example.com", n=8)]
    recs = recommend(_store(_flows(rows)), WINDOW, config=CFG)
    assert not [r for r in recs.items if r.rule is not None and not r.rule.source_addresses]
    held = [r for r in recs.by_kind("investigate") if r.title.startswith("No source left to allow")]
    assert len(held) == 1 and "api.partner-example.com" in held[0].title


def test_a_name_withheld_behind_one_firewall_taints_whoever_reached_it_behind_another():
    from egresslens.recommend import recommend_fleet

    dns = [{**r, "firewall": "fw-a"} for r in _beacon()]
    dns.append({**_q(T0 + timedelta(hours=20), "10.2.0.77", C2), "firewall": "fw-b"})
    rows = [{**r, "firewall": "fw-b"} for src in [f"10.2.0.{i}" for i in range(10, 16)]
            for r in _app(src, "api.partner-example.com", n=8)]
    rows += [{**r, "firewall": "fw-a"} for r in _app(CLEAN[0], "api.partner-example.com", n=8)]
    recs = recommend_fleet(_store(_flows(rows), dns_rows=dns), WINDOW)
    assert recs.suspicion.compromised == [BEACON, "10.2.0.77"]
    (rule,) = [r for r in _proposed(recs) if r.firewall == "fw-b"]
    nets = [ipaddress.ip_network(c) for c in rule.rule.source_addresses]
    assert not any(ipaddress.ip_address("10.2.0.77") in n for n in nets)
    assert any("10.2.0.77" in n and "cut out" in n for n in rule.evidence.notes)
