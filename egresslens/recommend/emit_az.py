"""A reviewable shell script of `az network firewall policy rule-collection-group ...` commands.

Every value is one shell word (:func:`egresslens.escape.shell`), every log-derived comment one line
(:func:`egresslens.escape.comment`); names were validated before.
"""

from __future__ import annotations

from egresslens.escape import comment
from egresslens.escape import shell as quote
from egresslens.recommend.emit_common import groups, unique_priorities


def _rule_args(rule, name_flag: str = "--name") -> list[str]:
    args = [name_flag, quote(rule.name), "--rule-type", quote(rule.rule_type)]
    if rule.source_ip_groups:
        args += ["--source-ip-groups", *map(quote, rule.source_ip_groups)]
    else:
        args += ["--source-addresses", *map(quote, rule.source_addresses or ["*"])]
    if rule.rule_type == "ApplicationRule":
        args += ["--protocols", *(quote(p.replace(":", "=")) for p in rule.protocols)]
        if rule.target_fqdns:
            args += ["--target-fqdns", *map(quote, rule.target_fqdns)]
        if rule.fqdn_tags:
            args += ["--fqdn-tags", *map(quote, rule.fqdn_tags)]
    else:
        args += ["--ip-protocols", *map(quote, rule.ip_protocols)]
        if rule.destination_addresses:
            args += ["--destination-addresses", *map(quote, rule.destination_addresses)]
        if rule.destination_fqdns:
            args += ["--destination-fqdns", *map(quote, rule.destination_fqdns)]
        args += ["--destination-ports", *map(quote, rule.destination_ports)]
    return args


def emit(recs) -> str:
    gs, rejected, removes = groups(recs)
    base = '--policy-name "$POLICY" --resource-group "$RG"'
    out = [
        "#!/usr/bin/env bash",
        "# EgressLens recommendations as Azure CLI commands (extension: azure-firewall). Review before running.",
        f"# Observation window: {recs.window.describe()}",
        'set -euo pipefail',
        ': "${POLICY:?set POLICY to the firewall policy name}"',
        ': "${RG:?set RG to the resource group of the policy}"',
        "",
    ]
    for msg in rejected:
        out.append(comment(msg))
    for g in gs:
        out.append(f"# rule collection group {g.name}")
        out.append(f"az network firewall policy rule-collection-group create {base} --name {quote(g.name)} "
                   f"--priority {int(g.priority)} --only-show-errors >/dev/null 2>&1 || true")
        for c in unique_priorities(g):
            first, *rest = c.rules
            out.append(f"az network firewall policy rule-collection-group collection add-filter-collection {base} "
                       f"--rcg-name {quote(g.name)} --name {quote(c.name)} --collection-priority {int(c.priority)} "
                       f"--action Allow " + " ".join(_rule_args(first, "--rule-name")))
            for r in rest:
                out.append(f"az network firewall policy rule-collection-group collection rule add {base} "
                           f"--rcg-name {quote(g.name)} --collection-name {quote(c.name)} " + " ".join(_rule_args(r)))
        out.append("")
    if removes:
        out.append("# Removals: disable first (remove the rule and keep this script), delete for good after the waiting period.")
        for r in removes:
            e = r.existing_rule
            out.append(comment(r.rationale)[:400])
            out.append(comment(f"az network firewall policy rule-collection-group collection rule remove {base} "
                               f"--rcg-name {quote(e['rule_collection_group'])} --collection-name {quote(e['rule_collection'])} "
                               f"--name {quote(e['rule'])}"))
        out.append("")
    return "\n".join(out) + "\n"
