"""Bicep: `Microsoft.Network/firewallPolicies/ruleCollectionGroups` resources for a policy, and for a classic
firewall its `applicationRuleCollections` / `networkRuleCollections` (properties of the firewall resource
itself) as exported variables to add to the declaration that deploys the firewall."""

from __future__ import annotations

import re

from egresslens.escape import bicep_string, comment
from egresslens.recommend.emit_common import (DNS_PROXY, classic_collections, groups, left_out, needs_dns_proxy,
                                              targets, unique_priorities)

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
            out += _classic(t, "" if one else str(n))
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
            for r in c.rules:
                if needs_dns_proxy(r):
                    out.append("          " + comment(DNS_PROXY, "//"))
                out += ["          {"] + _rule(r, "            ") + ["          }"]
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


def _rule(r, ind: str, classic: bool = False) -> list[str]:  # noqa: ANN001 - model.ProposedRule
    """The properties of one rule (a policy's carry `ruleType` and `ipProtocols`, a classic one `protocols`)."""
    out = [] if classic else [f"{ind}ruleType: {bicep_string(r.rule_type)}"]
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
        out.append(f"{ind}{'protocols' if classic else 'ipProtocols'}: {_list(r.ip_protocols, ind)}")
        out.append(f"{ind}destinationAddresses: {_list(r.destination_addresses, ind)}")
        out.append(f"{ind}destinationFqdns: {_list(r.destination_fqdns, ind)}")
        out.append(f"{ind}destinationPorts: {_list(r.destination_ports, ind)}")
    return out


def _classic(t, suffix: str) -> list[str]:  # noqa: ANN001 - emit_common.Target
    """A classic firewall's proposals as the firewall resource's own rule collection lists. Deploying the
    firewall replaces every collection it holds, so they are exported variables for the declaration that
    deploys it, next to the collections it has, never a resource that would drop those."""
    gs, rejected, removes = groups(t)
    cols = classic_collections(gs)
    names = {kind: f"{kind}RuleCollections{suffix}" for kind in ("network", "application")}
    out = [comment(m, "//") for m in rejected]
    out += [comment(f"classic firewall {t.name} ({t.resource_id}): its rule collections are properties of the "
                    "firewall resource, and a deployment of it replaces every collection it holds.", "//"),
            comment("Add these to the declaration that deploys it, after the collections it has:", "//"),
            comment(f"  import {{ {names['network']}, {names['application']} }} from 'egresslens.bicep' (this file)",
                    "//"),
            comment(f"  networkRuleCollections: concat(<its network rule collections>, {names['network']})", "//"),
            comment(f"  applicationRuleCollections: concat(<its application rule collections>, {names['application']})",
                    "//"), ""]
    for kind, rule_type in (("network", "NetworkRule"), ("application", "ApplicationRule")):
        mine = [c for c in cols if c.rule_type == rule_type]
        out += ["@export()", f"var {names[kind]} = [" + ("" if mine else "]")]
        for c in mine:
            out += ["  {", f"    name: {bicep_string(c.name)}", "    properties: {", f"      priority: {int(c.priority)}",
                    "      action: {\n        type: 'Allow'\n      }", "      rules: ["]
            for r in c.rules:
                if needs_dns_proxy(r):
                    out.append("        " + comment(DNS_PROXY, "//"))
                out += ["        {"] + _rule(r, "          ", classic=True) + ["        }"]
            out += ["      ]", "    }", "  }"]
        out += (["]"] if mine else []) + [""]
    for r in removes:
        e = r.existing_rule
        out.append(comment(f"remove-rule: {e['rule_collection']}/{e['rule']} from the firewall's "
                           f"{'application' if e.get('rule_type') == 'application' else 'network'}RuleCollections "
                           "(disable first, then delete)", "//"))
    return out + ([""] if removes else [])
