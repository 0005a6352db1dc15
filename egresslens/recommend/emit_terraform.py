"""Terraform (azurerm) `azurerm_firewall_policy_rule_collection_group` resources."""

from __future__ import annotations

import re

from egresslens.escape import comment, hcl_string
from egresslens.recommend.emit_common import groups, targets, unique_priorities


def _list(values) -> str:
    return "[" + ", ".join(hcl_string(v) for v in values) + "]"


def _ident(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "rcg"
    return ident if ident[0].isalpha() else "rcg_" + ident


def emit(recs) -> str:
    all_targets = targets(recs)
    out = [f"# EgressLens recommendations. Observation window: {recs.window.describe()}"]
    seen: set[str] = set()
    for n, t in enumerate(all_targets):
        var = "firewall_policy_id" if len(all_targets) == 1 else _ident(f"firewall_policy_id_{t.name or n}")
        if t.classic:
            out.append(comment(f"classic firewall {t.name}: classic rules are properties of the firewall resource; "
                               "apply them with the az output (or move the firewall to a policy)"))
            out.append("")
            continue
        out += [f'variable "{var}" {{', "  type = string"]
        if t.resource_id:
            out.append(f"  default = {hcl_string(t.resource_id)}")
        out += ["}", ""]
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
        out.append(f"  name               = {hcl_string(g.name)}")
        out.append(f"  firewall_policy_id = var.{var}")
        out.append(f"  priority           = {int(g.priority)}")
        if prev:
            out.append(f"  depends_on         = [azurerm_firewall_policy_rule_collection_group.{prev}]")
        for c in unique_priorities(g):
            block = "application_rule_collection" if c.rule_type == "ApplicationRule" else "network_rule_collection"
            out.append(f"  {block} {{")
            out.append(f"    name     = {hcl_string(c.name)}")
            out.append(f"    priority = {int(c.priority)}")
            out.append('    action   = "Allow"')
            for r in c.rules:
                out.append("    rule {")
                out.append(f"      name             = {hcl_string(r.name)}")
                if r.source_ip_groups:
                    out.append(f"      source_ip_groups = {_list(r.source_ip_groups)}")
                if r.source_addresses or not r.source_ip_groups:
                    out.append(f"      source_addresses = {_list(r.source_addresses)}")
                if c.rule_type == "ApplicationRule":
                    for p in r.protocols:
                        t, _, n = p.partition(":")
                        out.append(f"      protocols {{\n        type = {hcl_string(t)}\n        port = {int(n)}\n      }}")
                    if r.target_fqdns:
                        out.append(f"      destination_fqdns = {_list(r.target_fqdns)}")
                    if r.fqdn_tags:
                        out.append(f"      destination_fqdn_tags = {_list(r.fqdn_tags)}")
                else:
                    out.append(f"      protocols             = {_list([p.upper() if p.upper() != 'ANY' else 'Any' for p in r.ip_protocols])}")
                    if r.destination_addresses:
                        out.append(f"      destination_addresses = {_list(r.destination_addresses)}")
                    if r.destination_fqdns:
                        out.append(f"      destination_fqdns     = {_list(r.destination_fqdns)}")
                    out.append(f"      destination_ports     = {_list(r.destination_ports)}")
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


def recs_days(r) -> str:
    for step in r.rollout:
        m = re.search(r"after (\d+) days", step)
        if m:
            return m.group(1)
    return "30"
