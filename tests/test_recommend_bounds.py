"""recommend on many distinct names: what each kind of `investigate` item lists is capped (the busiest
first, then one "and N more" item counted exactly), proposals are the same as uncapped, and an allow rule
that carried more flow groups than are judged one by one is reviewed, not narrowed or called unused."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from egresslens.recommend import Config, bounds, parse_policy, recommend

from test_recommend_engine import T0, WINDOW, _app, _flows, _store


def _day_of_one_off_names(n: int) -> list[dict]:
    rows = []
    for i in range(n):  # one request each: too little evidence; every 7th an invalid (hostile) name
        name = f"x_{i}-.bad" if i % 7 == 0 else f"{i:05x}.shard.example-cdn.net"
        rows.append({"time": T0 + timedelta(minutes=i % 600), "kind": "application", "protocol": "HTTPS",
                     "source_ip": "10.1.0.5", "destination_fqdn": name, "destination_port": 443})
    rows += _app("10.1.0.5", "api.example.com", n=8)  # well supported: proposed
    return _flows(rows)


def _titles(recs, word):
    return [r.title for r in recs.items if r.kind == "investigate" and word in r.title]


def test_investigate_items_are_capped_and_the_rest_counted_exactly():
    con = _store(_day_of_one_off_names(700))
    capped = recommend(con, WINDOW, config=Config(max_investigate=10))
    full = recommend(con, WINDOW, config=Config(max_investigate=10_000))
    noise_full, refused_full = _titles(full, "Too little evidence"), _titles(full, "Do not allow")
    assert len(noise_full) == 600 and len(refused_full) == 100
    noise = _titles(capped, "Too little evidence")
    refused = _titles(capped, "Do not allow")
    assert len(noise) == 11 and "Too little evidence to allow 590 more application destination(s)" in noise
    assert len(refused) == 11 and any(t.startswith("Do not allow 90 more application destination(s)") for t in refused)
    more = next(r for r in capped.items if "590 more" in r.title)
    assert more.evidence.hits == 590 and more is [r for r in capped.items if r.kind == "investigate"
                                                   and "evidence" in r.title][-1]  # listed after the itemised ones
    # what is proposed does not depend on the cap
    adds = lambda rs: sorted((r.title, r.rule.target_fqdns) for r in rs.items if r.kind.startswith("add-"))  # noqa: E731
    assert adds(capped) == adds(full) and adds(full)[0][1] == ["api.example.com"]


def test_an_allow_rule_carrying_more_groups_than_judged_one_by_one_is_reviewed(monkeypatch):
    rows = [{"time": T0 + timedelta(minutes=i), "kind": "application", "protocol": "HTTPS", "source_ip": "10.1.0.5",
             "destination_fqdn": f"n{i}.example.org", "destination_port": 443, "action": "Allow", "action_reason": None,
             "rule_collection_group": "g", "rule_collection": "c", "rule": "allow-all"} for i in range(50)]
    policy = parse_policy([{"name": "g", "properties": {"priority": 200, "ruleCollections": [{
        "name": "c", "priority": 100, "ruleCollectionType": "FirewallPolicyFilterRuleCollection",
        "action": {"type": "Allow"}, "rules": [{
            "name": "allow-all", "ruleType": "ApplicationRule", "sourceAddresses": ["*"], "targetFqdns": ["*"],
            "protocols": [{"protocolType": "Https", "port": 443}]}]}]}}])
    con = _store(_flows(rows))
    monkeypatch.setattr(bounds, "MAX_RULE_GROUPS", 20)
    recs = recommend(con, WINDOW, policy=policy)
    review = [r for r in recs.items if r.title.startswith("Review g/c/allow-all")]
    assert len(review) == 1 and "50 distinct destinations" in review[0].title and review[0].evidence.hits == 50
    assert not [r for r in recs.items if r.kind in ("remove-rule", "narrow-rule")]
    assert next(s for s in recs.rule_scores if s["rule"] == "allow-all")["hits"] == 50


def _threat(src: str, fqdn: str) -> dict:
    return {"time": T0, "firewall": "fw", "kind": "threat_intel", "protocol": "HTTPS", "source_ip": src,
            "source_port": 1, "destination_ip": None, "destination_port": 443, "fqdn": fqdn, "target_url": None,
            "action": "deny", "description": "Bot Networks", "signature_id": None, "category": None,
            "severity": None, "is_tls_inspected": False}


def test_a_compromised_source_whose_requests_are_beyond_the_listed_ones_is_still_cut_out_of_a_wildcard():
    """Python keeps the compromised sources' requests only for the destinations it sees (the 100 busiest of
    each kind); a wildcard for clean sources that covers names only a compromised source asked for, all of
    them beyond those 100, still leaves that source out: every compromised address is cut out of every rule."""
    from egresslens.analyse import Window

    window = Window(T0, T0 + timedelta(days=3))
    rows = [r for src in ("10.1.0.5", "10.1.0.6") for i in range(4) for r in _app(src, f"s{i}.shard.partner-example.com")]
    # 10.1.0.4 asks for 120 names of its own, each busier than anything of 10.1.0.7: they fill the 100 listed
    rows += [r for i in range(120) for r in _app("10.1.0.4", f"z{i}.other-example.org", n=12)]
    # 10.1.0.7 asks for 30 names under the clean sources' zone: only compromised, and beyond the listed 100
    rows += [r for i in range(30) for r in _app("10.1.0.7", f"c{i}.shard.partner-example.com")]
    con = _store(_flows(rows), threat_rows=[_threat("10.1.0.4", "evil.bad-example.net"),
                                            _threat("10.1.0.7", "evil.bad-example.net")])
    recs = recommend(con, window, config=Config.from_dict({"sources": {"aks-nodes": ["10.1.0.0/24"]}}))
    assert set(recs.suspicion.compromised) == {"10.1.0.4", "10.1.0.7"}
    tainted = [r for r in recs.items if r.kind == "investigate" and "only compromised source" in r.title]
    assert len(tainted) == 101 and "Do not allow 50 more application destination(s)" in tainted[-1].title
    assert not any("shard.partner-example.com" in r.title for r in tainted[:-1])  # none of 10.1.0.7's is listed
    (wild,) = [r for r in recs.by_kind("add-application-rule") if "*.shard.partner-example.com" in r.rule.target_fqdns]
    inside = [ip for ip in ("10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.7")
              if any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in wild.rule.source_addresses)]
    assert inside == ["10.1.0.5", "10.1.0.6"]
    assert any("10.1.0.7" in n and "cut out" in n for n in wild.evidence.notes)
    for r in recs.items:  # no proposed rule anywhere lets a compromised address through
        if r.rule is not None and r.kind != "remove-rule":
            assert not any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for ip in ("10.1.0.4", "10.1.0.7")
                           for c in r.rule.source_addresses), r.title
