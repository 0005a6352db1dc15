"""A reviewable shell script of `az network firewall policy rule-collection-group ...` commands.

Every value is one shell word (:func:`egresslens.escape.shell`), every log-derived comment one line
(:func:`egresslens.escape.comment`); names were validated before.
"""

from __future__ import annotations

import re

from egresslens.escape import comment
from egresslens.escape import shell as quote
from egresslens.recommend.emit_common import (DNS_PROXY, classic_collections, groups, left_out, needs_dns_proxy,
                                              targets, unique_priorities)


def _sources(rule) -> list[str]:
    """Source addresses and IP Groups; `*` only when the rule names neither."""
    args = ["--source-ip-groups", *map(quote, rule.source_ip_groups)] if rule.source_ip_groups else []
    if rule.source_addresses or not rule.source_ip_groups:
        args += ["--source-addresses", *map(quote, rule.source_addresses or ["*"])]
    return args


def _rule_args(rule, name_flag: str = "--name") -> list[str]:
    return [name_flag, quote(rule.name), "--rule-type", quote(rule.rule_type)] + _rule_body(rule)


def _rule_body(rule, classic: bool = False) -> list[str]:
    """Sources, protocols and destinations of one rule (classic network rules name `--protocols`)."""
    args = _sources(rule)
    if rule.rule_type == "ApplicationRule":
        args += ["--protocols", *(quote(p.replace(":", "=")) for p in rule.protocols)]
        if rule.target_fqdns:
            args += ["--target-fqdns", *map(quote, rule.target_fqdns)]
        if rule.fqdn_tags:
            args += ["--fqdn-tags", *map(quote, rule.fqdn_tags)]
    else:
        args += ["--protocols" if classic else "--ip-protocols", *map(quote, rule.ip_protocols)]
        if rule.destination_addresses:
            args += ["--destination-addresses", *map(quote, rule.destination_addresses)]
        if rule.destination_fqdns:
            args += ["--destination-fqdns", *map(quote, rule.destination_fqdns)]
        args += ["--destination-ports", *map(quote, rule.destination_ports)]
    return args


def filter_collections(g, base: str, where: str, draft: bool = False) -> list[str]:
    """`add-filter-collection` and `rule add` commands of one group (`draft`: into the policy's draft)."""
    verb = "az network firewall policy rule-collection-group " + ("draft " if draft else "")
    out = []
    for c in unique_priorities(g):
        first, *rest = c.rules
        out += [comment(DNS_PROXY) for r in c.rules if needs_dns_proxy(r)][:1]
        out.append(f"{verb}collection add-filter-collection {base} {where} --name {quote(c.name)} "
                   f"--collection-priority {int(c.priority)} --action Allow " + " ".join(_rule_args(first, "--rule-name")))
        for r in rest:
            out.append(f"{verb}collection rule add {base} {where} --collection-name {quote(c.name)} "
                       + " ".join(_rule_args(r)))
    return out


def _classic_rule(rule, base: str, collection, first: bool) -> str:
    """`az network firewall application-rule|network-rule create` of a classic firewall's rule."""
    kind = "application-rule" if rule.rule_type == "ApplicationRule" else "network-rule"
    args = [f"az network firewall {kind} create {base}", "--collection-name", quote(collection.name),
            "--name", quote(rule.name)]
    if first:
        args += ["--priority", str(int(collection.priority)), "--action", "Allow"]
    return " ".join(args + _rule_body(rule, classic=True))


def _ident(name: str | None, n: int) -> str:
    return re.sub(r"[^A-Z0-9]", "_", (name or f"target{n}").upper()) or f"TARGET{n}"


def _section(t, n: int, many: bool) -> list[str]:
    """The variables one target's commands use: from its id when known, else from the environment."""
    if t.resource_id and t.resource_group:
        var = "FIREWALL" if t.classic else "POLICY"
        return [comment(f"{'classic firewall' if t.classic else 'policy'} {t.name or ''}"),
                f"{var}={quote(t.name or '')}", f"RG={quote(t.resource_group)}"]
    if not many:
        return [': "${POLICY:?set POLICY to the firewall policy name}"',
                ': "${RG:?set RG to the resource group of the policy}"']
    ident = _ident(t.name, n)
    return [comment(f"policy {t.name or '(not known)'}"),
            f'POLICY="${{POLICY_{ident}:?set POLICY_{ident} to the policy name}}"',
            f'RG="${{RG_{ident}:?set RG_{ident} to its resource group}}"']


def emit(recs) -> str:
    all_targets = targets(recs)
    many = len(all_targets) > 1
    out = [
        "#!/usr/bin/env bash",
        "# EgressLens recommendations as Azure CLI commands (extension: azure-firewall). Review before running.",
        f"# Observation window: {recs.window.describe()}",
        'set -euo pipefail',
        "",
    ] + left_out(recs)
    for n, t in enumerate(all_targets):
        out += _section(t, n, many)
        out.append("")
        out += _target_commands(t)
    return "\n".join(out) + "\n"


def _target_commands(t) -> list[str]:
    gs, rejected, removes = groups(t)
    out: list[str] = []
    for msg in rejected:
        out.append(comment(msg))
    if t.classic:
        base = '--firewall-name "$FIREWALL" --resource-group "$RG"'
        for c in classic_collections(gs):
            out += [comment(DNS_PROXY) for r in c.rules if needs_dns_proxy(r)][:1]
            for i, r in enumerate(c.rules):
                out.append(_classic_rule(r, base, c, i == 0))
            out.append("")
        for r in removes:
            e = r.existing_rule
            kind = "application-rule" if e.get("rule_type") == "application" else "network-rule"
            out.append(comment(r.rationale)[:400])
            out.append(comment(f"az network firewall {kind} delete {base} --collection-name "
                               f"{quote(e['rule_collection'])} --name {quote(e['rule'])}"))
        return out
    base = '--policy-name "$POLICY" --resource-group "$RG"'
    for g in gs:
        out.append(f"# rule collection group {g.name}")
        out.append(f"az network firewall policy rule-collection-group create {base} --name {quote(g.name)} "
                   f"--priority {int(g.priority)} --only-show-errors >/dev/null 2>&1 || true")
        out += filter_collections(g, base, f"--rcg-name {quote(g.name)}")
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
    return out
