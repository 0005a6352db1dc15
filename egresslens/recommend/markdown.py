"""Markdown report for humans (the default format)."""

from __future__ import annotations

from egresslens.escape import markdown as _md
from egresslens.escape import markdown_code as _code
from egresslens.recommend.model import by_urgency, with_port

_HEAD = {  # most urgent first (model.URGENCY)
    "investigate": "Investigate (never allowed)",
    "narrow-rule": "Narrow existing rules",
    "remove-rule": "Remove existing rules",
    "add-application-rule": "Add application rules",
    "add-network-rule": "Add network rules",
}


def emit(recs, what_if: bool = False) -> str:
    out = ["# EgressLens recommendations", "", f"Observation window: {recs.window.describe()}", ""]
    for w in recs.warnings:
        out.append(f"> **Warning:** {_md(w)}")
    if recs.warnings:
        out.append("")
    counts = recs.stats.get("by_kind", {})
    out.append("| kind | count |\n|---|---|")
    out.extend(f"| {k} | {counts.get(k, 0)} |" for k in _HEAD)
    out.append("")
    for kind, head in _HEAD.items():
        items = by_urgency(recs.by_kind(kind))
        if not items:
            continue
        out += [f"## {head}", ""]
        for r in items:
            out.append(f"### {_md(r.title)}")
            out.append("")
            out.append(f"- id {_code(r.id)} · confidence **{r.confidence}** · risk **{r.risk}**"
                       + (f" · permissiveness {r.permissiveness}" if r.permissiveness is not None else "")
                       + (f" · bundle {_code(r.bundle)}" if r.bundle else ""))
            out.append(f"- why: {_md(r.rationale)}")
            if r.rule is not None:
                p = r.rule
                out.append(f"- rule: {_code(p.rule_collection_group)} (priority {p.rule_collection_group_priority}) / "
                           f"{_code(p.rule_collection)} (priority {p.rule_collection_priority}) / {_code(p.name)} — {p.rule_type}")
                out.append(f"- sources: {', '.join(_code(s) for s in p.source_addresses)}"
                           + (f" (suggested IP Group {_code(p.source_ip_group)})" if p.source_ip_group else ""))
                if p.rule_type == "ApplicationRule":
                    dests = [f"tag {_code(t)}" for t in p.fqdn_tags] + [_code(f) for f in p.target_fqdns]
                    out.append(f"- destinations: {', '.join(dests)} on {', '.join(p.protocols)}")
                else:
                    dests = [_code(a) for a in p.destination_addresses] + [_code(f) for f in p.destination_fqdns]
                    out.append(f"- destinations: {', '.join(dests)} on {'/'.join(p.ip_protocols)} {', '.join(p.destination_ports)}")
            if r.existing_rule:
                e = r.existing_rule
                out.append(f"- existing rule: {_code(e['rule_collection_group'])}/{_code(e['rule_collection'])}/{_code(e['rule'])}: "
                           f"sources {', '.join(map(_code, e['sources']))}; destinations {', '.join(map(_code, e['destinations'][:10]))}; "
                           f"ports {', '.join(map(_code, e['ports']))}")
            ev = r.evidence
            out.append(f"- evidence: {ev.hits} hits from {ev.distinct_sources} source(s), first {ev.first_seen}, last {ev.last_seen}, "
                       f"{ev.days_seen} day(s) / {ev.hours_seen} hour(s) seen in the window")
            for pattern, names in ev.derived_from.items():
                out.append(f"  - {_code(pattern)} derived from {', '.join(_code(n) for n in names[:8])}"
                           + (f" and {len(names) - 8} more" if len(names) > 8 else ""))
            for n in ev.notes[:10]:
                out.append(f"  - note: {_md(n)}")
            if ev.per_name:
                out += ["", "  | destination | hits | sources | hours | first seen | last seen | support | compromised sources also asking |",
                        "  |---|---|---|---|---|---|---|---|"]
                out.extend(f"  | {_code(e['name'], in_table=True)} | {e['hits']} | {e['sources']} | {e['hours']} "
                           f"| {_md(e['first_seen'])} | {_md(e['last_seen'])} | {e['support']} "
                           f"| {', '.join(_code(ip, in_table=True) for ip in e['compromised_also']) or '-'} |"
                           for e in ev.per_name)
                out.append("")
            if ev.sample_events:
                out.append("  - samples: " + "; ".join(
                    f"{s.get('hour')} {_code(s.get('source_ip'))} → {with_port(_code(s.get('destination')), s.get('port'))} ({s.get('hits')} hits)"
                    for s in ev.sample_events))
            if r.still_allowed:
                out.append("- still allowed after the change: " + "; ".join(
                    f"{_code(s['source_group'])} → {with_port(_code(s['destination']), s['port'])} ({s['hits']})" for s in r.still_allowed[:10])
                    + (f" and {len(r.still_allowed) - 10} more" if len(r.still_allowed) > 10 else ""))
            if r.would_be_denied:
                out.append("- would be denied after the change: " + "; ".join(
                    f"{with_port(_code(s['destination']), s['port'])} ({s['hits']}: {_md(s.get('reason'))})" for s in r.would_be_denied[:10]))
            if r.rollout:
                out.append("- rollout: " + " → ".join(_md(x) for x in r.rollout))
            if what_if and r.what_if:
                out.append(f"- what-if: {r.what_if}")
            out.append("")
    kept = recs.stats.get("kept_required") or []
    if kept:
        out += ["## Kept whole (required platform egress)", ""] + [f"- {_md(k)}" for k in kept] + [""]
    if recs.rule_scores:
        out += ["## Permissiveness of existing rules", "", "| rule | type | hits | permissiveness |", "|---|---|---|---|"]
        for s in recs.rule_scores:
            cell = "/".join(_code(s[k], in_table=True) for k in ("rule_collection_group", "rule_collection", "rule"))
            out.append(f"| {cell} | {_md(s['rule_type'])} "
                       f"| {s['hits']} | {s['permissiveness'] if s['permissiveness'] is not None else 'n/a (no policy)'} |")
        out.append("")
    return "\n".join(out) + "\n"
