"""Bicep `Microsoft.Network/firewallPolicies/ruleCollectionGroups` resources."""

from __future__ import annotations

import re

from egresslens.escape import bicep_string, comment
from egresslens.recommend.emit_common import DNS_PROXY, groups, left_out, needs_dns_proxy, targets, unique_priorities

API = "2023-09-01"


def _list(values, indent: str) -> str:
    if not values:
        return "[]"
    return "[\n" + "".join(f"{indent}  {bicep_string(v)}\n" for v in values) + f"{indent}]"


def _ident(name: str, i: int) -> str:
    return "rcg" + str(i) + "_" + (re.sub(r"[^A-Za-z0-9_]", "_", name)[:40])


def emit(recs) -> str:
    all_targets = targets(recs)
    out = [f"// EgressLens recommendations. Observation window: {recs.window.describe()}", ""] + left_out(recs, "//")
    offset = 0
    for n, t in enumerate(all_targets):
        one = len(all_targets) == 1
        param, res = ("firewallPolicyName", "policy") if one else (f"firewallPolicyName{n}", f"policy{n}")
        if t.classic:
            out.append(comment(f"classic firewall {t.name}: classic rules are properties of the firewall resource; "
                               "apply them with the az output (or move the firewall to a policy)", "//"))
            out.append("")
            continue
        default = f" = {bicep_string(t.name)}" if t.name and t.resource_id else ""
        out += [f"param {param} string{default}", "",
                f"resource {res} 'Microsoft.Network/firewallPolicies@{API}' existing = {{", f"  name: {param}", "}", ""]
        lines, offset = _target(t, res, offset)
        out += lines
    return "\n".join(out) + "\n"


def _target(recs, res: str, offset: int) -> tuple[list[str], int]:
    gs, rejected, removes = groups(recs)
    out = [comment(m, "//") for m in rejected]
    prev = None
    for i, g in enumerate(gs, start=offset):
        ident = _ident(g.name, i)
        out.append(f"resource {ident} 'Microsoft.Network/firewallPolicies/ruleCollectionGroups@{API}' = {{")
        out.append(f"  parent: {res}")
        out.append(f"  name: {bicep_string(g.name)}")
        if prev:
            out.append(f"  dependsOn: [\n    {prev}\n  ]")
        out.append("  properties: {")
        out.append(f"    priority: {int(g.priority)}")
        out.append("    ruleCollections: [")
        for c in unique_priorities(g):
            out.append("      {")
            out.append("        ruleCollectionType: 'FirewallPolicyFilterRuleCollection'")
            out.append(f"        name: {bicep_string(c.name)}")
            out.append(f"        priority: {int(c.priority)}")
            out.append("        action: {\n          type: 'Allow'\n        }")
            out.append("        rules: [")
            ind = "            "
            for r in c.rules:
                if needs_dns_proxy(r):
                    out.append("          " + comment(DNS_PROXY, "//"))
                out.append("          {")
                out.append(f"{ind}ruleType: {bicep_string(r.rule_type)}")
                out.append(f"{ind}name: {bicep_string(r.name)}")
                if r.source_ip_groups:
                    out.append(f"{ind}sourceIpGroups: {_list(r.source_ip_groups, ind)}")
                if r.source_addresses or not r.source_ip_groups:
                    out.append(f"{ind}sourceAddresses: {_list(r.source_addresses, ind)}")
                if r.rule_type == "ApplicationRule":
                    protos = []
                    for p in r.protocols:
                        t, _, n = p.partition(":")
                        protos.append(f"{ind}  {{\n{ind}    protocolType: {bicep_string(t)}\n{ind}    port: {int(n)}\n{ind}  }}\n")
                    out.append(f"{ind}protocols: [\n{''.join(protos)}{ind}]")
                    out.append(f"{ind}targetFqdns: {_list(r.target_fqdns, ind)}")
                    out.append(f"{ind}fqdnTags: {_list(r.fqdn_tags, ind)}")
                else:
                    out.append(f"{ind}ipProtocols: {_list(r.ip_protocols, ind)}")
                    out.append(f"{ind}destinationAddresses: {_list(r.destination_addresses, ind)}")
                    out.append(f"{ind}destinationFqdns: {_list(r.destination_fqdns, ind)}")
                    out.append(f"{ind}destinationPorts: {_list(r.destination_ports, ind)}")
                out.append("          }")
            out.append("        ]")
            out.append("      }")
        out.append("    ]")
        out.append("  }")
        out.append("}")
        out.append("")
        prev = ident
    for r in removes:
        e = r.existing_rule
        out.append(comment(f"remove-rule: {e['rule_collection_group']}/{e['rule_collection']}/{e['rule']} (disable first, then delete)", "//"))
    return out, offset + len(gs)
