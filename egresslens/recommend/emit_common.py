"""Shared by the az / Terraform / Bicep emitters: rules grouped by RCG and collection, re-validated."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

from egresslens.escape import comment
from egresslens.recommend.model import ProposedRule, by_urgency
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


def classic_collections(gs: list[Group]) -> list[Collection]:
    """A classic firewall's proposals as its rule collections: a classic firewall has no rule collection
    groups, so collections of the same name and type are one, and priorities are distinct within a type."""
    merged: "OrderedDict[tuple[str, str], Collection]" = OrderedDict()
    for g in gs:
        for c in sorted(g.collections.values(), key=lambda c: (c.priority, c.name, c.rule_type)):
            have = merged.setdefault((c.rule_type, c.name), Collection(c.name, c.priority, c.rule_type))
            have.rules += c.rules
    out: list[Collection] = []
    for rule_type in ("NetworkRule", "ApplicationRule"):  # Azure's order: network collections, then application
        seen: set[int] = set()
        for c in sorted((c for c in merged.values() if c.rule_type == rule_type), key=lambda c: (c.priority, c.name)):
            while c.priority in seen:
                c.priority += 1
            seen.add(c.priority)
            out.append(c)
    return out


@dataclass
class Target:
    """Where a set of proposals goes: a policy (by name, and by id when known) or a classic firewall."""

    name: str | None
    resource_id: str | None
    items: list = field(default_factory=list)

    @property
    def classic(self) -> bool:
        return "/azurefirewalls/" in (self.resource_id or "").lower()

    @property
    def resource_group(self) -> str | None:
        parts = (self.resource_id or "").strip("/").split("/")
        return parts[3] if len(parts) > 3 and parts[2].lower() == "resourcegroups" else None

    @property
    def window(self):  # noqa: ANN201 - the emitters read recs.window from what they are given
        return self._window

    def view(self, window):  # noqa: ANN001, ANN201
        """This target's proposals in the shape the emitters read (`items`, `window`)."""
        self._window = window
        return self


def targets(recs) -> list[Target]:
    """The proposals grouped by the policy (or classic firewall) they go to, in order of first mention;
    recommendations that change nothing (investigate) go with the first target."""
    out: "OrderedDict[tuple, Target]" = OrderedDict()
    for r in recs.items:
        key = (getattr(r, "policy", None), getattr(r, "policy_id", None))
        out.setdefault(key, Target(key[0], key[1])).items.append(r)
    if not out:
        out[(None, None)] = Target(None, None)
    return [t.view(recs.window) for t in out.values()]


MAX_LEFT_OUT = 50  # investigate items named one by one in a generated file's header
DNS_PROXY = ("needs DNS proxy on the firewall (a policy's DNS settings, a classic firewall's additionalProperties) "
             "with requireProxyForNetworkRules, and its clients using the firewall as DNS server: a network rule's "
             "FQDNs are resolved by the proxy")


def needs_dns_proxy(rule: ProposedRule) -> bool:
    return rule.rule_type != "ApplicationRule" and bool(rule.destination_fqdns)


_PLAIN_TITLE = re.compile(r"[A-Za-z0-9 .,:;'()*/_+=-]{1,200}")


def _title(title: str) -> str:
    """The title when it is plain ASCII with names a rule could hold; a name that was refused (shell or HCL
    syntax, look-alike letters, an overlong label) is not echoed into a generated artefact."""
    if _PLAIN_TITLE.fullmatch(title) and not re.search(r"[A-Za-z0-9-]{64}", title):
        return title
    return "(holds a name that is not repeated here: egresslens recommend show ID)"


def left_out(recs, marker: str = "#") -> list[str]:
    """Comment lines saying what a generated file does not write as rules: the recommendations to
    investigate (never allowed), most urgent first, each with its id for `recommend show ID`."""
    inv = [r for r in by_urgency(list(recs.items)) if r.kind == "investigate"]
    if not inv:
        return []
    out = [comment(f"Not written as rules: {len(inv)} recommendation(s) to investigate, never allowed "
                   "(egresslens recommend show ID for the evidence):", marker)]
    out += [comment(f"  {r.id} [{r.risk}] {_title(r.title)}", marker) for r in inv[:MAX_LEFT_OUT]]
    if len(inv) > MAX_LEFT_OUT:
        out.append(comment(f"  and {len(inv) - MAX_LEFT_OUT} more (egresslens recommend --format markdown)", marker))
    return out + [""]
