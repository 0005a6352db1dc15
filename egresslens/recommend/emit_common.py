"""Shared by the az / Terraform / Bicep emitters: rules grouped by RCG and collection, re-validated."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from egresslens.recommend.model import ProposedRule
from egresslens.recommend.wildcards import InvalidName, validate_fqdn


@dataclass
class Collection:
    name: str
    priority: int
    rule_type: str
    rules: list[ProposedRule] = field(default_factory=list)


@dataclass
class Group:
    name: str
    priority: int
    collections: "OrderedDict[tuple[str, str], Collection]" = field(default_factory=OrderedDict)


def checked(rule: ProposedRule) -> ProposedRule:
    """Defence in depth: every name is validated again right before it is written."""
    for n in rule.target_fqdns:
        validate_fqdn(n, allow_wildcard=True)
    for n in rule.destination_fqdns:
        validate_fqdn(n)
    return rule


def groups(recs) -> tuple[list[Group], list[str], list]:
    """(groups with the add/narrow rules, rejected messages, remove-rule recommendations)."""
    out: "OrderedDict[str, Group]" = OrderedDict()
    rejected: list[str] = []
    for r in recs.items:
        if r.rule is None or r.kind not in ("add-application-rule", "add-network-rule", "narrow-rule"):
            continue
        try:
            rule = checked(r.rule)
        except InvalidName as exc:
            # the offending name is not echoed into a generated artefact
            rejected.append(f"recommendation {r.id} skipped: it contains an invalid FQDN ({type(exc).__name__}); see the JSON or Markdown report")
            continue
        g = out.setdefault(rule.rule_collection_group, Group(rule.rule_collection_group, rule.rule_collection_group_priority))
        c = g.collections.setdefault((rule.rule_collection, rule.rule_type),
                                     Collection(rule.rule_collection, rule.rule_collection_priority, rule.rule_type))
        c.rules.append(rule)
    removes = [r for r in recs.items if r.kind == "remove-rule" and r.existing_rule]
    return list(out.values()), rejected, removes


def unique_priorities(g: Group) -> list[Collection]:
    """Collections in priority order; Azure needs distinct priorities within a group."""
    seen: set[int] = set()
    cols = sorted(g.collections.values(), key=lambda c: (c.priority, c.name, c.rule_type))
    for c in cols:
        while c.priority in seen:
            c.priority += 1
        seen.add(c.priority)
    return cols
