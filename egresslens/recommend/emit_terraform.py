"""Terraform (azurerm) `azurerm_firewall_policy_rule_collection_group` resources."""

from __future__ import annotations

import re

from egresslens.escape import comment, hcl_string
from egresslens.recommend.emit_common import DNS_PROXY, groups, left_out, needs_dns_proxy, targets, unique_priorities


def _list(values) -> str:
    return "[" + ", ".join(hcl_string(v) for v in values) + "]"


def _ident(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "rcg"
    return ident if ident[0].isalpha() else "rcg_" + ident


def emit(recs) -> str:
    all_targets = targets(recs)
    out = [f"# EgressLens recommendations. Observation window: {recs.window.describe()}", ""] + left_out(recs)
    seen: set[str] = set()
    for n, t in enumerate(all_targets):
        var = "firewall_policy_id" if len(all_targets) == 1 else _ident(f"firewall_policy_id_{t.name or n}")
        if t.classic:
            out.append(comment(f"classic firewall {t.name}: classic rules are properties of the firewall resource; "
                               "apply them with the az output (or move the firewall to a policy)"))
            out.append("")
            continue
        out += [f'variable "{var}" {{'] + _aligned("  ", [("type", "string")] + (
            [("default", hcl_string(t.resource_id))] if t.resource_id else [])) + ["}", ""]
        out += _target(t, var, seen)
    return "\n".join(out) + "\n"


def _target(recs, var: str, seen: set[str]) -> list[str]:
    gs, rejected, removes = groups(recs)
    out = [comment(m) for m in rejected]
    prev = None
    for g in gs:
        ident = _ident(g.name)
        while ident in seen:
            ident += "_x"
        seen.add(ident)
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


def _rule(r, rule_type: str) -> list[str]:  # noqa: ANN001
    """The body of one `rule` block: attributes aligned in runs, a nested `protocols` block between them."""
    head = [("name", hcl_string(r.name))]
    if r.source_ip_groups:
        head.append(("source_ip_groups", _list(r.source_ip_groups)))
    if r.source_addresses or not r.source_ip_groups:
        head.append(("source_addresses", _list(r.source_addresses)))
    if rule_type == "ApplicationRule":
        out = _aligned("      ", head)
        for p in r.protocols:
            t, _, n = p.partition(":")
            out += ["      protocols {"] + _aligned("        ", [("type", hcl_string(t)), ("port", str(int(n)))]) + ["      }"]
        tail = ([("destination_fqdns", _list(r.target_fqdns))] if r.target_fqdns else []) + \
               ([("destination_fqdn_tags", _list(r.fqdn_tags))] if r.fqdn_tags else [])
        return out + _aligned("      ", tail)
    body = head + [("protocols", _list([p.upper() if p.upper() != "ANY" else "Any" for p in r.ip_protocols]))]
    if r.destination_addresses:
        body.append(("destination_addresses", _list(r.destination_addresses)))
    if r.destination_fqdns:
        body.append(("destination_fqdns", _list(r.destination_fqdns)))
    body.append(("destination_ports", _list(r.destination_ports)))
    return _aligned("      ", body)


def recs_days(r) -> str:
    for step in r.rollout:
        m = re.search(r"after (\d+) days", step)
        if m:
            return m.group(1)
    return "30"
