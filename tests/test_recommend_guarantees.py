"""Required platform rules kept whole, attribution by a clear majority, and wording against the hours that hold data."""

from __future__ import annotations

import random
from datetime import timedelta

from egresslens.analyse import Window
from egresslens.recommend import Config, parse_policy, recommend
from test_recommend_engine import T0, WINDOW, _app, _flows, _store

NODES = ["10.240.0.4", "10.240.0.5"]
CFG = Config.from_dict({"sources": {"aks-nodes": ["10.240.0.0/24"], "pods": ["10.244.1.0/24"]}})
TAG_RULE = ("aks-egress", "aksfwar", "allow-aks")


def _rule(name, rule_type, **kw):
    base = {"ruleType": rule_type, "name": name, "sourceAddresses": kw.pop("sources", ["10.240.0.0/16"])}
    if rule_type == "ApplicationRule":
        base["protocols"] = [{"protocolType": p, "port": n} for p, n in kw.pop("protocols", [("Https", 443)])]
    return {**base, **kw}


def _policy(rules_by_collection: dict[str, list[dict]], group: str = "aks-egress") -> list[dict]:
    return [{"name": group, "priority": 200, "ruleCollections": [
        {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": c, "priority": 100 + i * 100,
         "action": {"type": "Allow"}, "rules": rules} for i, (c, rules) in enumerate(rules_by_collection.items())]}]


def _allowed(src, fqdn, key, n=8, proto="HTTPS", port=443):
    g, c, r = key
    return _app(src, fqdn, n=n, proto=proto, port=port, action="Allow", action_reason=None, rule_collection_group=g,
                rule_collection=c, rule=r, policy="p")


def _touched(recs) -> dict[str, str]:
    return {r.existing_rule["rule"]: r.kind for r in recs.items if r.existing_rule}


def test_the_aks_tag_rule_keeps_http_80_and_https_443_whatever_a_week_without_port_80_shows():
    policy = _policy({"aksfwar": [_rule("allow-aks", "ApplicationRule", fqdnTags=["AzureKubernetesService"],
                                        protocols=[("Http", 80), ("Https", 443)])]})
    rows = [r for n in NODES for f in ("mcr.microsoft.com", "management.azure.com") for r in _allowed(n, f, TAG_RULE)]
    recs = recommend(_store(_flows(rows)), WINDOW, policy=parse_policy(policy), config=CFG)
    assert "allow-aks" not in _touched(recs)
    assert any(k.startswith("aks-egress/aksfwar/allow-aks carries required platform egress (FQDN tag "
                            "AzureKubernetesService on Http:80 + Https:443") for k in recs.stats["kept_required"])


def test_a_rule_mixing_the_tag_with_a_broad_target_is_narrowed_around_the_required_part():
    policy = _policy({"aksfwar": [_rule("allow-aks", "ApplicationRule", fqdnTags=["AzureKubernetesService"],
                                        targetFqdns=["*"], protocols=[("Http", 80), ("Https", 443)])]})
    rows = [r for n in NODES for r in _allowed(n, "mcr.microsoft.com", TAG_RULE)]
    rows += [r for n in NODES for r in _allowed(n, "api.partner-example.com", TAG_RULE)]
    recs = recommend(_store(_flows(rows)), WINDOW, policy=parse_policy(policy), config=CFG)
    (narrow,) = recs.by_kind("narrow-rule")
    assert narrow.rule.fqdn_tags == ["AzureKubernetesService"] and narrow.rule.protocols == ["Http:80", "Https:443"]
    assert "*" not in narrow.rule.target_fqdns and "api.partner-example.com" in narrow.rule.target_fqdns
    assert narrow.rule.source_addresses == ["10.240.0.0/16"]  # the sources of required egress are never narrowed
    assert "keeps the required platform egress whole" in narrow.rationale


def test_required_network_rules_are_neither_narrowed_nor_removed_but_an_any_any_rule_is_narrowed():
    policy = _policy({"aksfwnr": [
        _rule("apiudp", "NetworkRule", ipProtocols=["UDP"], destinationPorts=["1194"],
              destinationAddresses=["AzureCloud.westeurope"]),
        _rule("apintp", "NetworkRule", ipProtocols=["UDP"], destinationPorts=["123"],
              destinationAddresses=["AzureCloud.westeurope"]),
        _rule("any-any", "NetworkRule", ipProtocols=["Any"], destinationPorts=["*"], destinationAddresses=["*"],
              sources=["10.244.0.0/16"])]})
    rows = [{"time": T0 + timedelta(hours=h), "kind": "network", "protocol": "UDP", "source_ip": n,
             "destination_ip": "20.103.218.77", "destination_port": 1194, "action": "Allow", "action_reason": None,
             "rule_collection_group": "aks-egress", "rule_collection": "aksfwnr", "rule": "apiudp"}
            for n in NODES for h in range(10)]
    rows += [{"time": T0 + timedelta(hours=h), "kind": "network", "protocol": "TCP", "source_ip": "10.244.1.7",
              "destination_ip": "51.124.61.203", "destination_port": 5432, "action": "Allow", "action_reason": None,
              "rule_collection_group": "aks-egress", "rule_collection": "aksfwnr", "rule": "any-any"}
             for h in range(10)]
    recs = recommend(_store(_flows(rows)), WINDOW, policy=parse_policy(policy), config=CFG)
    assert _touched(recs) == {"any-any": "narrow-rule"}  # apiudp's /16 is not cut to the nodes' /24, apintp stays
    assert any("apintp" in k and "no hits" in k for k in recs.stats["kept_required"])
    assert {s["rule"]: s["required"] is not None for s in recs.rule_scores} == {
        "apiudp": True, "apintp": True, "any-any": False}


def test_an_address_is_attributed_only_when_its_name_precedes_most_of_its_fresh_connections():
    rnd = random.Random(5)
    pod, db = "10.244.1.9", "51.124.61.203"
    dns, rows = [], []
    for h in range(2, 14):
        t0 = T0 + timedelta(hours=h)
        for i in range(60):  # a beacon resolved every 60 s ...
            dns.append({"time": t0 + timedelta(seconds=60 * i + 3), "firewall": "fw", "source_ip": pod,
                        "query_name": "sync.c2-example.org", "query_type": "A", "response_code": "NOERROR"})
        for i in range(30):  # ... and a bare address called at random times, twice just after a beacon query
            off = 60 * (7 + 30 * i) + 4 if i < 2 else rnd.uniform(0, 3599)
            rows.append({"time": t0 + timedelta(seconds=off), "kind": "network", "protocol": "TCP", "source_ip": pod,
                         "destination_ip": "193.42.33.118", "destination_port": 8443})
        for s in range(3):  # a database: resolved, then connections every 30 s for 5 minutes (cached)
            start = t0 + timedelta(minutes=15 + 15 * s)
            dns.append({"time": start, "firewall": "fw", "source_ip": pod, "query_name": "db.pg-example.net",
                        "query_type": "A", "response_code": "NOERROR"})
            rows += [{"time": start + timedelta(milliseconds=20, seconds=30 * k), "kind": "network", "protocol": "TCP",
                      "source_ip": pod, "destination_ip": db, "destination_port": 5432} for k in range(10)]
    recs = recommend(_store(_flows(rows), dns_rows=dns), WINDOW, config=CFG)
    assert recs.dns_attribution == {db: ["db.pg-example.net"]}
    assert recs.attribution[db]["share"] == 1.0 and recs.attribution[db]["fresh"] == 36
    bare = recs.attribution["193.42.33.118"]
    assert bare["name"] == "sync.c2-example.org" and not bare["attributed"] and bare["share"] < 0.5
    net = next(r for r in recs.by_kind("add-network-rule") if "193.42.33.118" in r.rule.destination_addresses)
    assert net.evidence.per_name[0]["attribution"].startswith("unattributed (best: sync.c2-example.org")


def test_an_unused_rule_over_thirty_days_with_seven_of_data_says_so_and_is_not_high_confidence():
    policy = _policy({"legacy": [_rule("allow-smtp", "NetworkRule", ipProtocols=["TCP"], destinationPorts=["25"],
                                       destinationAddresses=["198.51.100.25"])]}, group="app-egress")
    rows = [{**r, "time": r["time"] + timedelta(days=d)} for d in range(7)
            for r in _app("10.244.1.9", "api.partner-example.com", n=8)]
    con = _store(_flows(rows))
    window = Window(T0 + timedelta(days=7) - timedelta(days=30), T0 + timedelta(days=7))
    recs = recommend(con, window, policy=parse_policy(policy), config=CFG)
    (unused,) = recs.by_kind("remove-rule")
    assert unused.confidence == "medium"
    assert "no traffic matched this rule in the 56 hour(s) with data (of the 720-hour window)" in unused.rationale
    assert any(w.startswith("data in 56 of the 720 hours of the window") for w in recs.warnings)
    assert unused.window["covered_hours"] == 56

    from egresslens.analyse import coverage

    cover = coverage(con, window)
    assert cover.window_hours == 720 and cover.covered_hours == 7 * 8 and not cover.complete
    assert cover.ranges()[0] == (T0, T0 + timedelta(hours=1)) and len(cover.ranges()) == 56


def test_coverage_measures_the_window_as_time_not_as_the_hour_slots_it_touches():
    """A `--since 24h` window ending at the newest record starts a moment before the day's first record, so it
    touches 25 hourly slots: a complete day is still "all 24 hours", and a day that starts half an hour into
    the window says 23.5 of 24."""
    from egresslens.analyse import coverage, resolve_window

    day = [{"time": T0 + timedelta(minutes=i, seconds=30), "kind": "application", "protocol": "HTTPS",
            "source_ip": "10.244.1.9", "destination_fqdn": "api.partner-example.com", "destination_port": 443}
           for i in range(24 * 60)]
    con = _store(_flows(day))
    window = resolve_window(con, since="24h")
    slots = {window.start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=h) for h in range(26)}
    assert len([s for s in slots if s < window.end]) == 25  # the window touches 25 hourly slots
    cover = coverage(con, window)
    assert cover.complete and cover.window_hours == 24 and round(cover.covered_hours, 1) == 24  # 30 s short
    assert cover.describe() == "data in all 24 hours of the window"
    recs = recommend(con, window, config=CFG)
    assert not any("hours of the window" in w for w in recs.warnings)

    late = Window(T0 - timedelta(minutes=30), T0 + timedelta(hours=23, minutes=30))
    cover = coverage(con, late)
    assert not cover.complete and cover.covered_hours == 23.5 and cover.window_hours == 24
    assert cover.describe() == ("data in 23.5 of the 24 hours of the window "
                                "(98%: 2026-01-01 00:00 to 2026-01-01 23:30 UTC)")
    assert cover.to_json()["covered_hours"] == 23.5
