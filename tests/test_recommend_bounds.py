"""recommend on many distinct names: what each kind of `investigate` item lists is capped (the busiest
first, then one "and N more" item counted exactly), proposals are the same as uncapped, and an allow rule
that carried more flow groups than are judged one by one is reviewed, not narrowed or called unused."""

from __future__ import annotations

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
