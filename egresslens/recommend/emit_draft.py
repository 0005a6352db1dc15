"""The proposals as a Firewall Policy *draft*: az commands that create a draft of each policy and
put the proposed rule collection groups into it, for review in the portal (Firewall Policy > Draft &
Deployment) and `az network firewall policy deploy`. Nothing reaches the live policy until the draft is
deployed; the script never deploys it.

Drafts exist for policies only (not for classic rules); a policy holds one draft at a time, so the
script says so when `draft create` finds one already.
"""

from __future__ import annotations

from egresslens.escape import comment
from egresslens.escape import shell as quote
from egresslens.recommend.emit_az import _section, filter_collections
from egresslens.recommend.emit_common import groups, left_out, targets


def emit(recs) -> str:
    all_targets = targets(recs)
    many = len(all_targets) > 1
    out = [
        "#!/usr/bin/env bash",
        "# EgressLens recommendations as a Firewall Policy draft (extension: azure-firewall 1.2.3 or later).",
        "# Review the draft in the portal (Firewall Policy > Draft & Deployment) or with",
        '# `az network firewall policy draft show`, then deploy it there or with `az network firewall policy deploy`.',
        f"# Observation window: {recs.window.describe()}",
        "set -euo pipefail",
        "",
    ] + left_out(recs)
    for n, t in enumerate(all_targets):
        if t.classic:
            out += [comment(f"classic firewall {t.name}: drafts exist only for firewall policies; use --format az"), ""]
            continue
        out += _section(t, n, many)
        base = '--policy-name "$POLICY" --resource-group "$RG"'
        out += ["",
                f'az network firewall policy draft create {base} --only-show-errors >/dev/null '
                '|| echo "a draft of $POLICY exists already: the groups below are added to it" >&2']
        gs, rejected, removes = groups(t)
        out += [comment(m) for m in rejected]
        for g in gs:
            out.append(f"# rule collection group {g.name}")
            out.append(f"az network firewall policy rule-collection-group draft create {base} "
                       f"--rule-collection-group-name {quote(g.name)} "
                       f"--priority {int(g.priority)} --only-show-errors >/dev/null")
            out += filter_collections(g, base, f"--rule-collection-group-name {quote(g.name)}", draft=True)
        for r in removes:
            e = r.existing_rule
            out.append(comment(r.rationale)[:400])
            out.append(comment(f"az network firewall policy rule-collection-group draft collection rule remove {base} "
                               f"--rule-collection-group-name {quote(e['rule_collection_group'])} "
                               f"--collection-name {quote(e['rule_collection'])} --name {quote(e['rule'])}"))
        out += ['echo "draft of $POLICY ready: review it, then run: az network firewall policy deploy '
                '--name $POLICY --resource-group $RG" >&2', ""]
    return "\n".join(out) + "\n"
