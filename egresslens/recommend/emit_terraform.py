"""Terraform (azurerm): `azurerm_firewall_policy_rule_collection_group` resources for a policy, and
`azurerm_firewall_application_rule_collection` / `azurerm_firewall_network_rule_collection` resources for a
classic firewall (rules that are properties of the firewall itself)."""

from __future__ import annotations

import re

from egresslens.escape import comment, hcl_string
from egresslens.recommend.emit_common import (DNS_PROXY, classic_collections, groups, left_out, needs_dns_proxy,
                                              targets, unique_priorities)


def _list(values) -> str:
    return "[" + ", ".join(hcl_string(v) for v in values) + "]"


def _ident(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "rcg"
    return ident if ident[0].isalpha() else "rcg_" + ident


def emit(recs) -> str:
    all_targets = targets(recs)
    out = [f"# EgressLens recommendations. Observation window: {recs.window.describe()}", ""] + left_out(recs)
    seen: set[str] = set()
    one = len(all_targets) == 1
    for n, t in enumerate(all_targets):
        if t.classic:
            names = ("firewall_name", "resource_group_name") if one else (
                _ident(f"firewall_name_{t.name or n}"), _ident(f"resource_group_name_{t.name or n}"))
            out += [comment(f"classic firewall {t.name}: its rule collections are resources of their own")]
            out += _variable(names[0], t.name) + _variable(names[1], t.resource_group)
            out += _classic(t, names, seen)
            continue
        var = "firewall_policy_id" if one else _ident(f"firewall_policy_id_{t.name or n}")
        out += _variable(var, t.resource_id)
        out += _target(t, var, seen)
    return "\n".join(out) + "\n"


def _variable(name: str, default: str | None) -> list[str]:
    return [f'variable "{name}" {{'] + _aligned("  ", [("type", "string")] + (
        [("default", hcl_string(default))] if default else [])) + ["}", ""]


def _unique(ident: str, seen: set[str]) -> str:
    while ident in seen:
        ident += "_x"
    seen.add(ident)
    return ident


def _classic(t, names: tuple[str, str], seen: set[str]) -> list[str]:  # noqa: ANN001 - emit_common.Target
    """One `azurerm_firewall_{network,application}_rule_collection` per collection, each after the one before
    (a firewall takes one change at a time)."""
    gs, rejected, removes = groups(t)
    out = [comment(m) for m in rejected]
    prev = None
    for c in classic_collections(gs):
        kind = "application" if c.rule_type == "ApplicationRule" else "network"
        resource = f"azurerm_firewall_{kind}_rule_collection"
        ident = _unique(_ident(f"{t.name or 'firewall'}_{c.name}_{kind}"), seen)
        out.append(f'resource "{resource}" "{ident}" {{')
        out += _aligned("  ", [("name", hcl_string(c.name)), ("azure_firewall_name", f"var.{names[0]}"),
                               ("resource_group_name", f"var.{names[1]}"), ("priority", str(int(c.priority))),
                               ("action", '"Allow"')] + ([("depends_on", f"[{prev}]")] if prev else []))
        for r in c.rules:
            if needs_dns_proxy(r):
                out.append("  " + comment(DNS_PROXY))
            out.append("  rule {")
            out += _rule(r, r.rule_type, classic=True)
            out.append("  }")
        out += ["}", ""]
        prev = f"{resource}.{ident}"
    for r in removes:
        e = r.existing_rule
        out.append(comment(f"remove-rule: {e['rule_collection']}/{e['rule']}: delete the rule block from the resource of "
                           f"its collection after disabling it for {recs_days(r)} days"))
    return out + ([""] if removes else [])


def _target(recs, var: str, seen: set[str]) -> list[str]:
    gs, rejected, removes = groups(recs)
    out = [comment(m) for m in rejected]
    prev = None
    for g in gs:
        ident = _unique(_ident(g.name), seen)
        out.append(f'resource "azurerm_firewall_policy_rule_collection_group" "{ident}" {{')
        out += _aligned("  ", [("name", hcl_string(g.name)), ("firewall_policy_id", f"var.{var}"),
                               ("priority", str(int(g.priority)))]
                        + ([("depends_on", f"[azurerm_firewall_policy_rule_collection_group.{prev}]")] if prev else []))
        for c in unique_priorities(g):
            block = "application_rule_collection" if c.rule_type == "ApplicationRule" else "network_rule_collection"
            out.append(f"  {block} {{")
            out += _aligned("    ", [("name", hcl_string(c.name)), ("priority", str(int(c.priority))),
                                    ("action", '"Allow"')])
            for r in c.rules:
                if needs_dns_proxy(r):
                    out.append("    " + comment(DNS_PROXY))
                out.append("    rule {")
                out += _rule(r, c.rule_type)
                out.append("    }")
            out.append("  }")
        out.append("}")
        out.append("")
        prev = ident
    for r in removes:
        e = r.existing_rule
        out.append(comment(f"remove-rule: {e['rule_collection_group']}/{e['rule_collection']}/{e['rule']}: delete the rule "
                           f"block from its resource after disabling it for {recs_days(r)} days"))
    return out


def _aligned(indent: str, pairs: list[tuple[str, str]]) -> list[str]:
    """`key = value` lines with the `=` aligned, as `terraform fmt` writes consecutive attributes."""
    width = max((len(k) for k, _ in pairs), default=0)
    return [f"{indent}{k.ljust(width)} = {v}" for k, v in pairs]


def _rule(r, rule_type: str, classic: bool = False) -> list[str]:  # noqa: ANN001
    """The body of one `rule` block: attributes aligned in runs, nested protocol blocks between them (a policy's
    `protocols` and `destination_fqdns`, a classic collection's `protocol` and `target_fqdns`)."""
    ind = "    " if classic else "      "
    head = [("name", hcl_string(r.name))]
    if r.source_ip_groups:
        head.append(("source_ip_groups", _list(r.source_ip_groups)))
    if r.source_addresses or not r.source_ip_groups:
        head.append(("source_addresses", _list(r.source_addresses)))
    if rule_type == "ApplicationRule":
        out = _aligned(ind, head)
        block = "protocol" if classic else "protocols"
        for p in r.protocols:
            t, _, n = p.partition(":")
            out += [f"{ind}{block} {{"] + _aligned(ind + "  ", [("type", hcl_string(t)), ("port", str(int(n)))]) + [
                f"{ind}}}"]
        fqdns, tags = ("target_fqdns", "fqdn_tags") if classic else ("destination_fqdns", "destination_fqdn_tags")
        tail = ([(fqdns, _list(r.target_fqdns))] if r.target_fqdns else []) + \
               ([(tags, _list(r.fqdn_tags))] if r.fqdn_tags else [])
        return out + _aligned(ind, tail)
    body = head + [("protocols", _list([p.upper() if p.upper() != "ANY" else "Any" for p in r.ip_protocols]))]
    if r.destination_addresses:
        body.append(("destination_addresses", _list(r.destination_addresses)))
    if r.destination_fqdns:
        body.append(("destination_fqdns", _list(r.destination_fqdns)))
    body.append(("destination_ports", _list(r.destination_ports)))
    return _aligned(ind, body)


def recs_days(r) -> str:
    for step in r.rollout:
        m = re.search(r"after (\d+) days", step)
        if m:
            return m.group(1)
    return "30"
