"""Rules of a parent policy, judged by every firewall that inherits them.

A child policy cannot change its parent's rules, so each firewall's run only says what its own traffic
makes of every inherited rule (`Recommendations.parent_verdicts`: shadowed, unused, narrower than it, or
as it is). Here those verdicts meet: a parent's rule that every firewall under the parent leaves unused
(or finds shadowed) is proposed for removal from the parent, and one broader than the traffic of all of
them is narrowed to what they use together, once, in the parent.

A parent may serve firewalls the store has no logs for. A change is proposed only when the estate says
which firewalls the parent serves (its child policies, `childPolicies`, and theirs, each with its
firewalls) and every one of them has traffic in the window; otherwise the output says what would have
been proposed and why it is not.
"""

from __future__ import annotations

import copy
from typing import Any

from egresslens import fleet
from egresslens.recommend.model import Recommendation, rec_id
from egresslens.recommend.policy import ip_group_name

REMOVE = {"shadowed", "unused"}


def _tree(estate, pol) -> tuple[list[Any], list[str]]:  # noqa: ANN001 - estate.Estate, estate.PolicyDoc
    """The firewalls a policy serves (its own and its descendants'), and what keeps that list from being known
    (a policy whose children were not read, a child policy not given)."""
    fws: list[Any] = []
    unknown: list[str] = []
    stack, seen = [pol], set()
    while stack:
        p = stack.pop()
        if p.key in seen:
            continue
        seen.add(p.key)
        fws += [estate.firewalls.get(k) for k in p.firewalls if estate.firewalls.get(k) is not None]
        if p.children is None:
            unknown.append(f"the child policies of {p.name} were not read")
        for k in sorted(set(p.children or []) | {k for k, q in estate.policies.items() if q.parent == p.key}):
            child = estate.policies.get(k)
            if child is None:
                unknown.append(f"its child policy {fleet.label(k)} was not given")
            else:
                stack.append(child)
    return fws, unknown


def parent_changes(parts, estate, observed: list[str]) -> tuple[list[Recommendation], list[str]]:  # noqa: ANN001
    """Proposals on parent policies, and warnings for those held back. `parts`: (store firewall, rules,
    recommendations) of every firewall judged; `observed`: the firewalls with traffic in the window."""
    if not estate:
        return [], []
    ancestors = {p.key: p for _, rules, _ in parts for p in getattr(rules, "chain", [])[:-1]}
    items: list[Recommendation] = []
    warnings: list[str] = []
    for key, pol in sorted(ancestors.items()):
        judged = [(fw, recs) for fw, rules, recs in parts if key in [p.key for p in getattr(rules, "chain", [])[:-1]]]
        rule_keys = sorted({k for _, recs in judged for k in recs.parent_verdicts if k[0] == pol.name},
                           key=lambda k: tuple(str(x) for x in k))
        proposals = [p for k in rule_keys
                     if (p := _combine(k, [recs.parent_verdicts.get(k) for _, recs in judged], pol,
                                       [fw for fw, _ in judged])) is not None]
        if not proposals:
            continue
        served, unknown = _tree(estate, pol)
        unlogged = sorted(f.name for f in served
                          if not any(fleet.matches(o, f.id or f.name) for o in observed))
        if not served:
            unknown.append(f"no firewall is known to use {pol.name} or its children")
        if unknown or unlogged:
            why = "; ".join(unknown + ([f"it also serves {', '.join(unlogged)}, with no logs in the window"]
                                       if unlogged else []))
            kinds = {}
            for p in proposals:
                kinds[p.kind] = kinds.get(p.kind, 0) + 1
            said = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            warnings.append(f"parent policy {pol.name}: its rules were judged by the traffic of "
                            f"{', '.join(sorted(fleet.label(fw) for fw, _ in judged))} ({said} would follow), but "
                            f"nothing is proposed on it: {why} (read it with --policy-id, or give "
                            "`az network firewall policy show` of it and its children, and the logs of every "
                            "firewall it serves)")
            continue
        items += proposals
    return items, warnings


def _combine(key: tuple, verdicts: list[dict | None], pol, firewalls: list[str]) -> Recommendation | None:  # noqa: ANN001
    """One proposal on the parent from every firewall's verdict on its rule `key`, or None."""
    if not verdicts or any(v is None for v in verdicts):
        return None
    kinds = {v["verdict"] for v in verdicts}
    names = ", ".join(sorted(fleet.label(f) for f in firewalls))
    if kinds <= REMOVE:
        base = next(v for v in verdicts if v["verdict"] == ("shadowed" if kinds == {"shadowed"} else "unused"))["rec"]
        rec = copy.deepcopy(base)
        rec.evidence.hits = sum(v["hits"] for v in verdicts)
        why = ("shadowed in the policy of" if kinds == {"shadowed"} else
               "unused by the traffic of" if kinds == {"unused"} else "unused or shadowed for")
        rec.rationale = f"{why} every firewall that inherits {pol.name} ({names}): {rec.rationale}"
        rec.evidence.notes.append(f"a rule of the parent policy {pol.name}: removed there once, for every child")
    elif kinds <= REMOVE | {"narrow"} and "narrow" in kinds:
        rec = _narrowed([v["rec"] for v in verdicts if v["verdict"] == "narrow"], pol, names)
        if rec is None:
            return None
    else:
        return None
    rec.id = rec_id("parent", rec.kind, *key)
    rec.policy, rec.policy_id, rec.firewall, rec.firewalls = pol.name, pol.id, None, sorted(firewalls)
    return rec


def _union(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(x for values in lists for x in values))


def _narrowed(recs: list[Recommendation], pol, names: str) -> Recommendation | None:  # noqa: ANN001
    """The narrow rules of every firewall that uses the rule, as one: what any of them keeps stays allowed."""
    out = copy.deepcopy(recs[0])
    rule = out.rule
    for other in recs[1:]:
        o = other.rule
        rule.source_addresses = _union(rule.source_addresses, o.source_addresses)
        rule.source_ip_groups = _union(rule.source_ip_groups, o.source_ip_groups)
        rule.source_ip_group_members.update(o.source_ip_group_members)
        rule.protocols = sorted(set(rule.protocols) | set(o.protocols))
        rule.target_fqdns = sorted(set(rule.target_fqdns) | set(o.target_fqdns))
        rule.fqdn_tags = _union(rule.fqdn_tags, o.fqdn_tags)
        rule.ip_protocols = _union(rule.ip_protocols, o.ip_protocols)
        rule.destination_addresses = sorted(set(rule.destination_addresses) | set(o.destination_addresses))
        rule.destination_fqdns = sorted(set(rule.destination_fqdns) | set(o.destination_fqdns))
        rule.destination_ports = sorted(set(rule.destination_ports) | set(o.destination_ports),
                                        key=lambda p: (not p.isdigit(), int(p) if p.isdigit() else 0, p))
        ev, oe = out.evidence, other.evidence
        ev.hits += oe.hits
        ev.distinct_sources += oe.distinct_sources
        ev.destinations = sorted(set(ev.destinations) | set(oe.destinations))[:50]
        ev.notes = _union(ev.notes, oe.notes)
        ev.first_seen = min(x for x in (ev.first_seen, oe.first_seen) if x) if ev.first_seen or oe.first_seen else None
        ev.last_seen = max(x for x in (ev.last_seen, oe.last_seen) if x) if ev.last_seen or oe.last_seen else None
        ev.days_seen, ev.hours_seen = max(ev.days_seen, oe.days_seen), max(ev.hours_seen, oe.hours_seen)
        out.still_allowed = (out.still_allowed + other.still_allowed)[:200]
        out.would_be_denied = out.would_be_denied + other.would_be_denied
        out.what_if = {k: out.what_if.get(k, 0) + other.what_if.get(k, 0) for k in set(out.what_if) | set(other.what_if)}
        out.risk = "medium" if "medium" in (out.risk, other.risk) else out.risk
    changes = _changes(rule, out.existing_rule or {})
    if not changes and not out.would_be_denied:
        return None  # together the firewalls use all of it
    said = {c for r in recs for c in r.rationale.split(" — based on")[0].split("; ")}  # each firewall's own
    based = out.rationale.partition(" — based on")[2]
    out.rationale = (f"the traffic of every firewall that inherits {pol.name} ({names}) uses less of it together: "
                     + "; ".join(changes or ["drop the destinations listed in would_be_denied"])
                     + (f" — based on{based}" if based else ""))
    out.evidence.notes = changes + [n for n in out.evidence.notes if n not in said] + [
        f"a rule of the parent policy {pol.name}: narrowed there once, for every child"]
    return out


def _changes(rule, existing: dict) -> list[str]:  # noqa: ANN001 - model.ProposedRule, Rule.describe()
    """What the merged narrow rule allows less of than the rule as written: sources, destinations, ports."""
    sources = list(rule.source_addresses) + [f"ipgroup:{ip_group_name(g)}" for g in rule.source_ip_groups]
    dests = rule.target_fqdns + [f"tag:{t}" for t in rule.fqdn_tags] + rule.destination_addresses + rule.destination_fqdns
    if rule.rule_type == "ApplicationRule":
        ports, was_ports = [p.upper() for p in rule.protocols], [p.upper() for p in existing.get("ports", [])]
    else:
        ports = [f"{'/'.join(rule.ip_protocols)}:{p}" for p in rule.destination_ports]
        was_ports = list(existing.get("ports", []))
    out = []
    for what, now, was in (("sources", sources, existing.get("sources", [])),
                           ("destinations", dests, existing.get("destinations", [])), ("ports", ports, was_ports)):
        if set(now) != set(was):
            out.append(f"{what} {', '.join(was)} -> " + (", ".join(now) if len(now) <= 6 else f"{len(now)} observed"))
    return out
