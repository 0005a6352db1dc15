"""Recommendations for many firewalls: each firewall's traffic judged against the rules it really
evaluates, proposals sent to the policy it uses, and a need every firewall under a common parent
shares proposed once, in that parent.

    recs = recommend_fleet(con, window, estate)            # every firewall in the window, each on its own
    recs = recommend_fleet(con, window, estate, firewall="fw-weu")

With one firewall in the store (or `firewall` given) this is :func:`egresslens.recommend.recommend`
with that firewall's rules, and the same output.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from egresslens import fleet
from egresslens.analyse import Window
from egresslens.recommend.config import Config
from egresslens.recommend.engine import Recommendations, recommend, sort_items
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation, rec_id, safe_name
from egresslens.recommend.parents import parent_changes


def rules_for(estate, store_firewall: str | None, given=None):  # noqa: ANN001, ANN201
    """The rules a firewall (as the store names it) evaluates: from the estate when it knows the
    firewall, else the estate's single picture, else `given` (a RuleSet or list of rules), else None."""
    if estate:
        if store_firewall is not None:
            rs = estate.rules_for_firewall(store_firewall)
            if rs is not None:
                return rs
        rs = estate.default_rules()
        if rs is not None:
            return rs
    return given


def recommend_fleet(con, window: Window, estate=None, *, firewall: str | None = None, policy=None,  # noqa: ANN001
                    config: Config | None = None, service_tags=None, what_if: bool = False) -> Recommendations:
    """Recommendations per firewall (see the module). `firewall`: the store's value (see
    :func:`egresslens.fleet.resolve`); `policy`: rules to use where the estate says nothing."""
    config = config or Config()
    names = [firewall] if firewall else fleet.firewalls(con, window)
    if len(names) <= 1:
        fw = names[0] if names else None
        rules = rules_for(estate, fw, policy)
        with fleet.scoped(con, firewall):  # one firewall named: its traffic only (and its assessment)
            recs = recommend(con, window, policy=rules, config=config, service_tags=service_tags)
            if what_if:
                _what_if(con, window, recs, rules, service_tags)
        _tag(recs.items, fw, rules)
        if fw is not None:  # a parent that serves this firewall only: its rules are this traffic's to judge
            more, held = parent_changes([(fw, rules, recs)], estate, names)
            recs.items += more
            recs.warnings += held
            sort_items(recs.items, recs.summaries)
        recs.firewalls = [_summary(fw, rules, recs.items)] if fw else []
        return recs
    # one assessment of every firewall's traffic: a name withheld behind one firewall taints whoever reached it
    # behind another, and every firewall's report names the same compromised sources
    from egresslens.recommend.engine import allowed_names
    from egresslens.suspicion import assess

    rules_of = {fw: rules_for(estate, fw, policy) for fw in names}
    susp = assess(con, window=window, config=config.suspicion,
                  references=sorted({n for rules in rules_of.values() for n in allowed_names(rules)}))
    parts: list[tuple[str, Any, Recommendations]] = []
    for fw in names:
        rules = rules_of[fw]
        with fleet.scoped(con, fw):
            recs = recommend(con, window, policy=rules, config=config, service_tags=service_tags, suspicion=susp)
            if what_if:
                _what_if(con, window, recs, rules, service_tags)
        _tag(recs.items, fw, rules)
        recs.summaries = {rec_id(i, fw) for i in recs.summaries}
        for r in recs.items:
            r.id = rec_id(r.id, fw)
        parts.append((fw, rules, recs))
    items = [r for _, _, recs in parts for r in recs.items]
    items = _promote_shared(items, parts, estate, config)
    on_parents, held = parent_changes(parts, estate, names)  # a parent's rules, judged by all it serves
    items += on_parents
    warnings = [f"{fleet.label(fw)}: {w}" for fw, _, recs in parts for w in recs.warnings] + held
    out = Recommendations(items, window, list(dict.fromkeys(warnings)), _stats(parts, items),
                          [{**s, "firewall": fw} for fw, _, recs in parts for s in recs.rule_scores],
                          {ip: n for _, _, recs in parts for ip, n in recs.dns_attribution.items()}, susp,
                          {ip: a for _, _, recs in parts for ip, a in recs.attribution.items()})
    out.firewalls = [_summary(fw, rules, [r for r in items if r.firewall == fw or fw in r.firewalls])
                     for fw, rules, _ in parts]
    out.summaries = set().union(*(recs.summaries for _, _, recs in parts))
    sort_items(out.items, out.summaries)
    return out


def _what_if(con, window, recs, rules, service_tags) -> None:  # noqa: ANN001
    from egresslens.recommend import whatif

    whatif.apply(recs, whatif.replay(con, window, recs, rules, service_tags))


def _tag(items: list[Recommendation], fw: str | None, rules) -> None:  # noqa: ANN001
    pol = getattr(rules, "policy", None)
    for r in items:
        r.firewall = fw
        r.policy = getattr(rules, "target", None) or None
        r.policy_id = getattr(pol, "id", None) if pol is not None else getattr(getattr(rules, "firewall", None), "id", None)


def _summary(fw: str | None, rules, items: list[Recommendation]) -> dict[str, Any]:  # noqa: ANN001
    pol = getattr(rules, "policy", None)
    return {"firewall": fw, "name": fleet.label(fw), "policy": getattr(rules, "target", None) or None,
            "policy_id": getattr(pol, "id", None), "parents": [p.name for p in getattr(rules, "chain", [])[:-1]],
            "classic": bool(getattr(rules, "classic", False)), "rules": len(rules) if rules is not None else None,
            "recommendations": {k: sum(1 for r in items if r.kind == k) for k in
                                ("add-application-rule", "add-network-rule", "narrow-rule", "remove-rule", "investigate")}}


def _stats(parts, items) -> dict[str, Any]:  # noqa: ANN001
    return {"flow_groups": sum(recs.stats.get("flow_groups", 0) for _, _, recs in parts),
            "source_groups": sum(recs.stats.get("source_groups", 0) for _, _, recs in parts),
            "firewalls": len(parts),
            "kept_required": [f"{fleet.label(fw)}: {k}" for fw, _, recs in parts for k in recs.stats.get("kept_required", [])],
            "by_kind": {k: sum(1 for r in items if r.kind == k) for k in
                        ("add-application-rule", "add-network-rule", "narrow-rule", "remove-rule", "investigate")}}


# -- needs every firewall under one parent shares ------------------------------------------------------

def _targets(rule: ProposedRule) -> list[str]:
    if rule.rule_type == "ApplicationRule":
        return rule.target_fqdns + [f"tag:{t}" for t in rule.fqdn_tags]
    return rule.destination_addresses + [f"fqdn:{f}" for f in rule.destination_fqdns]


def _ports(rule: ProposedRule) -> tuple:
    if rule.rule_type == "ApplicationRule":
        return ("app", tuple(sorted(rule.protocols)))
    return ("net", tuple(sorted(rule.ip_protocols)), tuple(sorted(rule.destination_ports)))


def _drop_targets(rule: ProposedRule, gone: set[str]) -> None:
    rule.target_fqdns = [t for t in rule.target_fqdns if t not in gone]
    rule.fqdn_tags = [t for t in rule.fqdn_tags if f"tag:{t}" not in gone]
    rule.destination_addresses = [t for t in rule.destination_addresses if t not in gone]
    rule.destination_fqdns = [t for t in rule.destination_fqdns if f"fqdn:{t}" not in gone]


def _observed(rec: Recommendation, targets: set[str]) -> set[str]:
    names = {t.removeprefix("fqdn:") for t in targets}
    for t in targets:
        names.update(rec.evidence.derived_from.get(t, []))
    return names


def _promote_shared(items, parts, estate, config: Config) -> list[Recommendation]:  # noqa: ANN001
    """A target (name, tag or address, with its protocols and ports) that every firewall under a common
    parent policy asks for is proposed once, in that parent; the children's proposals lose it."""
    if not estate:
        return items
    chains = {fw: [p.key for p in getattr(rules, "chain", [])] for fw, rules, _ in parts}
    parents: dict[str, list[str]] = defaultdict(list)
    for fw, chain in chains.items():
        for key in chain[:-1]:  # ancestors only
            parents[key].append(fw)
    for pkey, fws in sorted(parents.items(), key=lambda kv: -len(kv[1])):
        if len(fws) < 2:
            continue
        adds = [r for r in items if r.kind.startswith("add-") and r.rule is not None and r.firewall in fws]
        have: dict[tuple, set[str]] = defaultdict(set)
        for r in adds:
            for t in _targets(r.rule):
                have[(r.rule.rule_type, _ports(r.rule), t)].add(r.firewall)
        shared = {k for k, v in have.items() if v == set(fws)}
        if not shared:
            continue
        items = _move(items, adds, shared, estate.policies[pkey], fws, config)
    return items


def _move(items, adds, shared, parent, fws, config: Config) -> list[Recommendation]:  # noqa: ANN001
    by_ports: dict[tuple, list[tuple]] = defaultdict(list)
    for k in shared:
        by_ports[(k[0], k[1])].append(k)
    new: list[Recommendation] = []
    prio = min(65000, max([int(g.get("priority") or 100) for g in parent.groups] or [100]) + 100)
    for (rtype, ports), keys in sorted(by_ports.items(), key=lambda kv: str(kv[0])):
        targets = {k[2] for k in keys}
        donors = [r for r in adds if r.rule.rule_type == rtype and _ports(r.rule) == ports
                  and targets & set(_targets(r.rule))]
        sources = sorted({s for r in donors for s in r.rule.source_addresses})
        ev = Evidence(notes=[f"needed behind every firewall that inherits {parent.name}: "
                             + ", ".join(sorted({fleet.label(r.firewall) for r in donors})) + "; proposed once, in "
                             f"{parent.name}, instead of once per child policy"])
        for r in donors:
            moved = targets & set(_targets(r.rule))
            names = _observed(r, moved)
            per = [p for p in r.evidence.per_name if p.get("name") in names]
            hits = sum(p.get("hits", 0) for p in per) if per else r.evidence.hits
            ev.hits += hits
            ev.distinct_sources += sum(p.get("sources", 0) for p in per) if per else r.evidence.distinct_sources
            ev.per_name += per
            ev.destinations = sorted(set(ev.destinations) | (names & set(r.evidence.destinations)))
            for t in moved:
                if t in r.evidence.derived_from:
                    ev.derived_from[t] = sorted(set(ev.derived_from.get(t, [])) | set(r.evidence.derived_from[t]))
            seen = [x for x in (r.evidence.first_seen, ev.first_seen) if x]
            ev.first_seen = min(seen) if seen else None
            seen = [x for x in (r.evidence.last_seen, ev.last_seen) if x]
            ev.last_seen = max(seen) if seen else None
            ev.days_seen, ev.hours_seen = max(ev.days_seen, r.evidence.days_seen), max(ev.hours_seen, r.evidence.hours_seen)
            _drop_targets(r.rule, moved)
            left = _targets(r.rule)
            if left:  # named after what it still allows
                first = left[0].removeprefix("tag:").removeprefix("fqdn:").removeprefix("*.")
                r.rule.name = safe_name(f"allow-{first}" + (f"-and-{len(left) - 1}-more" if len(left) > 1 else ""))
                r.title = f"Allow {r.rule.source_group or 'these sources'} to reach " + ", ".join(left[:6]) + (
                    " …" if len(left) > 6 else "")
            r.evidence.hits = max(0, r.evidence.hits - hits)
            r.evidence.notes.append(f"{', '.join(sorted(moved))} moved to the parent policy {parent.name} "
                                    "(every firewall under it needs them)")
        template = donors[0].rule
        ordered = sorted(targets)
        rule = ProposedRule(
            rule_type=rtype, rule_collection_group=config.rule_collection_group, rule_collection_group_priority=prio,
            rule_collection=safe_name(f"shared-{template.rule_collection}"), rule_collection_priority=template.rule_collection_priority,
            name=safe_name(f"shared-{ordered[0].removeprefix('tag:').removeprefix('fqdn:').removeprefix('*.')}"
                           + (f"-and-{len(ordered) - 1}-more" if len(ordered) > 1 else "")),
            source_addresses=sources, source_group="every firewall of " + parent.name,
            protocols=list(template.protocols), ip_protocols=list(template.ip_protocols),
            destination_ports=list(template.destination_ports),
            target_fqdns=[t for t in ordered if rtype == "ApplicationRule" and not t.startswith("tag:")],
            fqdn_tags=[t.removeprefix("tag:") for t in ordered if t.startswith("tag:")],
            destination_addresses=[t for t in ordered if rtype == "NetworkRule" and not t.startswith("fqdn:")],
            destination_fqdns=[t.removeprefix("fqdn:") for t in ordered if t.startswith("fqdn:")])
        kind = donors[0].kind
        rank = {"low": 0, "medium": 1, "high": 2}
        new.append(Recommendation(
            id=rec_id("shared", parent.key, rtype, ports, ordered), kind=kind,
            title=f"Allow every firewall of {parent.name} to reach " + ", ".join(ordered[:4]) + (" …" if len(ordered) > 4 else ""),
            rule=rule, evidence=ev, confidence=min((r.confidence for r in donors), key=rank.__getitem__),
            risk=max((r.risk for r in donors), key=rank.__getitem__),
            rationale=f"{len(donors)} firewalls ({', '.join(sorted({fleet.label(r.firewall) for r in donors}))}) are denied "
                      f"the same {'names' if rtype == 'ApplicationRule' else 'destinations'}; their common parent "
                      f"{parent.name} holds the rule once and every child inherits it",
            window=donors[0].window, rollout=[f"add the rule to the parent policy {parent.name}: every child inherits it",
                                               "watch the deny logs of every firewall for these destinations drop to zero"],
            bundle=donors[0].bundle, policy=parent.name, policy_id=parent.id,
            firewalls=sorted({r.firewall for r in donors}),
            what_if={"deny_to_allow_hits": ev.hits, "allow_to_deny_hits": 0}))
    kept = [r for r in items if not (r.kind.startswith("add-") and r.rule is not None and not _targets(r.rule))]
    return kept + new
