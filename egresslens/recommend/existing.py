"""Existing allow rules: unused, shadowed, broader than their use; permissiveness scores."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import polars as pl

from egresslens.recommend.bounds import too_broad
from egresslens.recommend.model import (
    Evidence,
    ProposedRule,
    Recommendation,
    iso,
    rec_id,
    safe_name,
)
from egresslens.recommend.catalogue import Required, required_parts, tag_matches
from egresslens.recommend.netaggr import aggregate_ips
from egresslens.recommend.policy import (
    Rule,
    ip_group_name,
    net_size,
    permissiveness,
    port_count,
    shadowed_by,
)
from egresslens.recommend.sources import cut_addresses, sources_for
from egresslens.recommend.triage import compromised_cut
from egresslens.recommend.wildcards import fqdn_matches, is_valid_fqdn, propose_wildcards


def analyse_existing(ctx, groups: pl.DataFrame, broad: dict[tuple, dict] | None = None) -> list[dict[str, Any]]:
    """Score every allow rule; propose removing unused or shadowed ones and narrowing broad ones. `broad`:
    rules that carried more flow groups than are judged one by one (`bounds.allowed_groups`), by key,
    with their exact counts; they get an investigate item instead."""
    broad = broad or {}
    broad_by_rc = {(c, r): v for (_g, c, r), v in broad.items()}
    allowed = groups.filter(pl.col("action") == "Allow")
    obs: dict[tuple, list[dict]] = defaultdict(list)
    for row in allowed.iter_rows(named=True):
        obs[(row["rule_collection_group"], row["rule_collection"], row["rule"])].append(row)
    by_rc_rule: dict[tuple, list[dict]] = defaultdict(list)
    for (g, c, r), rows in obs.items():
        by_rc_rule[(c, r)].extend(rows)
    scores: list[dict[str, Any]] = []
    if not ctx.policy:
        for (g, c, r), rows in sorted(obs.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            scores.append({"rule_collection_group": g, "rule_collection": c, "rule": r, "rule_type": rows[0]["kind"],
                           "hits": sum(x["hits"] for x in rows), "permissiveness": None})
        return scores
    shadows = shadowed_by(ctx.policy)
    for rule in ctx.policy:
        if rule.rule_type == "nat" or rule.action != "Allow":
            continue
        rows = obs.get(rule.key) or by_rc_rule.get((rule.rule_collection, rule.name)) or []
        big = None if rows else broad.get(rule.key) or broad_by_rc.get((rule.rule_collection, rule.name))
        hits = int(big["hits"]) if big else sum(x["hits"] for x in rows)
        score = permissiveness(rule, ctx.service_tags.tags if ctx.service_tags else None)
        req = required_parts(rule)
        scores.append({"rule_collection_group": rule.rule_collection_group, "rule_collection": rule.rule_collection,
                       "rule": rule.name, "rule_type": rule.rule_type, "hits": hits, "permissiveness": score,
                       "parent_policy": rule.parent, "required": req.note() if req else None})
        existing = {**rule.describe(), "permissiveness": score}
        if rule.parent:  # a child policy cannot change its parent's rules: the fleet judges them (recommend.parents)
            ctx.parent_verdicts[parent_key(rule)] = _parent_verdict(ctx, rule, rows, big, hits, shadows, existing,
                                                                    score, req)
            continue
        if req:
            state = ("shadowed by an earlier rule" if rule.key in shadows else f"no hits in {ctx.span()}" if hits == 0
                     else f"{hits} hit(s) in {ctx.span()}")
            ctx.kept_required.append(f"{'/'.join(rule.key)} {req.note()} ({state})")
            if rule.key in shadows or hits == 0:
                continue
        if rule.key in shadows:
            ctx.add(_shadowed(ctx, rule, shadows[rule.key], hits, existing, score))
            continue
        if hits == 0:
            ctx.add(_unused(ctx, rule, existing, score))
            continue
        if big:
            too_broad(ctx, rule, big, req.note() if req else None)
            continue
        rec = _narrow(ctx, rule, rows, existing, score, req)
        if rec is not None:
            ctx.add(rec)
    return sorted(scores, key=lambda s: (-(s["permissiveness"] or 0), str(s["rule_collection_group"]),
                                         str(s["rule_collection"]), str(s["rule"])))


def parent_key(rule: Rule) -> tuple:
    """A parent policy's rule as every child that inherits it names it: (policy, group, collection, rule)."""
    return (rule.policy, rule.rule_collection_group, rule.rule_collection, rule.name)


def _parent_verdict(ctx, rule: Rule, rows: list[dict], big, hits: int, shadows, existing: dict, score: float,
                    req: Required | None) -> dict[str, Any]:
    """What this firewall's traffic says of an inherited rule: shadowed, unused, narrower than it (with the
    narrow rule its traffic would keep) or as it is (`keep`: used as written, required, or too busy to judge)."""
    if req:
        return {"verdict": "keep", "hits": hits, "rec": None}
    if rule.key in shadows:
        return {"verdict": "shadowed", "hits": hits, "rec": _shadowed(ctx, rule, shadows[rule.key], hits, existing, score)}
    if hits == 0:
        return {"verdict": "unused", "hits": 0, "rec": _unused(ctx, rule, existing, score)}
    rec = None if big else _narrow(ctx, rule, rows, existing, score, req, record=False)
    return {"verdict": "narrow" if rec is not None else "keep", "hits": hits, "rec": rec}


def _shadowed(ctx, rule: Rule, a: Rule, hits: int, existing: dict, score: float) -> Recommendation:
    days = ctx.config.remove_after_days
    return Recommendation(
        id=rec_id("shadow", *rule.key), kind="remove-rule",
        title=f"Remove shadowed rule {rule.rule_collection_group}/{rule.rule_collection}/{rule.name}",
        rule=None, evidence=Evidence(hits=hits, notes=[f"shadowed by {a.rule_collection_group}/{a.rule_collection}/{a.name}"]),
        confidence="high", risk="low",
        rationale=(f"every flow it could match is matched first by {a.rule_collection_group}/{a.rule_collection}/{a.name} "
                   "(Azure order: network before application, then group, collection and rule order)"),
        window=ctx.window_info, existing_rule=existing, permissiveness=score,
        rollout=["disable the rule", f"delete it after {days} days without side effects"])


def _unused(ctx, rule: Rule, existing: dict, score: float) -> Recommendation:
    days = ctx.config.remove_after_days
    return Recommendation(
        id=rec_id("unused", *rule.key), kind="remove-rule",
        title=f"Remove unused rule {rule.rule_collection_group}/{rule.rule_collection}/{rule.name}",
        rule=None, evidence=Evidence(hits=0, notes=[f"no hits in {ctx.span()}"] + (
            [ctx.coverage.describe()] if ctx.coverage is not None and not ctx.coverage.complete else [])),
        confidence="medium" if ctx.covered_hours < 24 * 30 else "high", risk="low",
        rationale=f"no traffic matched this rule in {ctx.span()} ({ctx.window_info['description']}); "
                  "rules for rare jobs (monthly, quarterly) may need a longer window",
        window=ctx.window_info, existing_rule=existing, permissiveness=score,
        rollout=["disable the rule (or move it to a disabled collection)",
                 f"delete it after {days} days without denies for its traffic"])


def _dest(r: dict) -> tuple:
    return (r["destination_fqdn"], r["destination_ip"], r["protocol"], r["destination_port"])


def _required_name(req: Required | None, name: str | None) -> bool:
    return bool(req and name and (any(tag_matches(t, name) for t in req.tags)
                                  or any(fqdn_matches(name, t) for t in req.targets)))


def _narrow_priority(ctx, rule: Rule) -> int:
    """The narrow rule's collection priority: the broad one's in a policy (its own group, just above the broad rule's
    group, puts it first); on a classic firewall, which has no groups, the nearest free priority above the broad
    collection's among collections of its type."""
    if not getattr(ctx.policy, "classic", False):
        return rule.collection_priority
    taken = {r.collection_priority for r in ctx.policy if r.rule_type == rule.rule_type}
    return next((p for p in range(rule.collection_priority - 1, 99, -1) if p not in taken), rule.collection_priority)


def _narrow(ctx, rule: Rule, rows: list[dict], existing: dict, score: float, req: Required | None,
            record: bool = True) -> Recommendation | None:
    """The narrow rule this traffic would keep, or None when the rule fits it. `record`: count the compromised
    addresses it cuts out on their investigate items (not for an inherited rule the fleet judges)."""
    cfg = ctx.config
    safe, bad = [], []
    clean = {_dest(r) for r in rows if not r["compromised"]}
    for r in rows:
        reason = ctx.susp.name_reason(r["destination_fqdn"]) or ctx.susp.ip_reason(r["destination_ip"])
        if not reason and r["compromised"] and _dest(r) not in clean and not _required_name(req, r["destination_fqdn"]):
            reason = "used only by compromised sources"
        if r["destination_fqdn"] and not is_valid_fqdn(r["destination_fqdn"]):
            reason = reason or "invalid name"
        (bad if reason else safe).append((r, reason))
    changes: list[str] = []
    groups = {r["sgroup"] for r, _ in safe}
    rule_sources = rule.all_sources  # IP Groups count with their members
    new_sources = sources_for(groups, ctx.group_cidrs) if groups else list(rule_sources)
    keep_groups: list[str] = []
    if not req and ("*" in rule_sources or net_size(rule_sources) > 4 * max(1.0, net_size(new_sources))):
        was = ", ".join(rule.sources + [f"ipgroup:{ip_group_name(g)}" for g in rule.source_ip_groups])
        changes.append(f"sources {was} -> {', '.join(new_sources)} (observed source subnets)")
    else:  # the rule's own sources, IP Groups kept as groups (never `*` for a rule that named its sources);
        # the sources of required platform egress are never narrowed
        new_sources, keep_groups = list(rule.sources), list(rule.source_ip_groups)
    new_sources, cut_notes, cut = compromised_cut(ctx, new_sources)
    in_groups = cut_addresses([m for g in keep_groups for m in rule.ip_group_members.get(g, [])],
                              ctx.susp.compromised)[1] if keep_groups else []
    if in_groups:  # an IP Group is kept as a group: the compromised members are named, not cut
        cut_notes.append(f"compromised source(s) {', '.join(in_groups[:10])} are members of the rule's IP Group(s) "
                         f"{', '.join(ip_group_name(g) for g in keep_groups)}: take them out of the group while under "
                         "investigation, or add a deny rule for them above it")
    # The narrow rule goes into its own group just above the broad rule's group (same rule type, so
    # Azure evaluates it first); the broad rule stays until the narrow one has proven itself.
    proposed = dict(rule_collection_group=safe_name(f"{rule.rule_collection_group}-narrow"),
                    rule_collection_group_priority=max(100, rule.rcg_priority - 1),
                    rule_collection=safe_name(f"{rule.rule_collection}-narrow"),
                    rule_collection_priority=_narrow_priority(ctx, rule), name=safe_name(f"{rule.name}-narrow"),
                    source_addresses=new_sources, source_ip_groups=keep_groups,
                    source_ip_group_members={g: rule.ip_group_members[g] for g in keep_groups if g in rule.ip_group_members})
    if rule.rule_type == "application":
        names = sorted({r["destination_fqdn"] for r, _ in safe if r["destination_fqdn"]})
        broad = any(t == "*" or t.startswith("*.") for t in rule.target_fqdns) or rule.web_categories
        targets = list(rule.target_fqdns)
        tags = list(rule.fqdn_tags)
        if broad and names and len(names) <= cfg.narrow_max_names:
            wild, explicit, _rej = propose_wildcards(names, min_siblings=cfg.wildcard_min_siblings)
            targets = sorted(set(explicit) | set(wild) | (req.targets if req else set()))
            if set(targets) != set(rule.target_fqdns):
                changes.append(f"destinations {', '.join(rule.target_fqdns + rule.web_categories)} -> {len(targets)} observed name(s)")
                tags = [t for t in rule.fqdn_tags]
        protos = sorted({f"{r['protocol'].capitalize() if r['protocol'] != 'MSSQL' else 'Mssql'}:{r['destination_port']}" for r, _ in safe}
                        | (req.protocols if req else set()))
        rule_protos = {f"{p.capitalize() if p != 'MSSQL' else 'Mssql'}:{n}" for p, n in rule.app_protocols}
        if protos and set(protos) < rule_protos:
            changes.append(f"protocols {', '.join(sorted(rule_protos))} -> {', '.join(protos)}")
        else:
            protos = sorted(rule_protos)
        pr = ProposedRule(rule_type="ApplicationRule", protocols=protos, target_fqdns=targets, fqdn_tags=tags, **proposed)
    else:
        ips = sorted({r["destination_ip"] for r, _ in safe if r["destination_ip"]})
        addrs = list(rule.destination_addresses)
        fqdns = list(rule.destination_fqdns)
        plain = [a for a in addrs if a == "*" or "/" in a]
        if plain and ips and net_size(addrs) > 4 * len(ips) and not any(a[:1].isalpha() and a != "*" for a in addrs):
            named = {ip: next(iter(ctx.dns_map[ip])) for ip in ips if len(ctx.dns_map.get(ip, ())) == 1}
            addrs = aggregate_ips([ip for ip in ips if ip not in named], min_fill=cfg.cidr_min_fill, max_prefix=cfg.cidr_max_prefix)
            fqdns = sorted(set(fqdns) | set(named.values()))
            if req:  # the required destinations stay as they are
                addrs = sorted(set(addrs) | {d for d in req.destinations if d in rule.destination_addresses})
                fqdns = sorted(set(fqdns) | {d for d in req.destinations if d in rule.destination_fqdns})
            changes.append(f"destinations {', '.join(rule.destination_addresses)} -> {len(addrs) + len(fqdns)} observed destination(s)")
        ports = sorted({str(r["destination_port"]) for r, _ in safe if r["destination_port"] is not None}
                       | (req.ports if req else set()), key=int)
        old = port_count(rule.destination_ports)
        if ports and old > 4 * len(ports) and old > 1:
            changes.append(f"ports {', '.join(rule.destination_ports)} ({old} ports) -> {', '.join(ports)}")
        else:
            ports = list(rule.destination_ports)
        pr = ProposedRule(rule_type="NetworkRule", ip_protocols=[p.capitalize() if p != "ANY" else "Any" for p in rule.ip_protocols]
                          if False else list(rule.ip_protocols), destination_addresses=addrs, destination_fqdns=fqdns,
                          destination_ports=ports, **proposed)
    if not changes and not bad:
        return None
    if not changes:
        changes.append("drop the destinations listed in would_be_denied")
    if record:
        ctx.record_cut(cut)
    if req:
        changes.append(f"keeps the required platform egress whole ({'; '.join(req.why)})")
    still = sorted(({"source_group": r["sgroup"], "protocol": r["protocol"], "destination": r["destination_fqdn"] or r["destination_ip"],
                     "port": r["destination_port"], "hits": r["hits"]} for r, _ in safe),
                   key=lambda d: (-d["hits"], str(d["source_group"]), str(d["protocol"]), str(d["destination"]), str(d["port"])))
    cut = [{"source_group": r["sgroup"], "protocol": r["protocol"], "destination": r["destination_fqdn"] or r["destination_ip"],
            "port": r["destination_port"], "hits": r["hits"], "reason": why} for r, why in bad]
    hits = sum(r["hits"] for r, _ in safe) + sum(r["hits"] for r, _ in bad)
    ev = Evidence(hits=hits, distinct_sources=sum(r["sources"] for r, _ in safe),
                  destinations=sorted({str(r["destination_fqdn"] or r["destination_ip"]) for r, _ in safe})[:50],
                  notes=changes + cut_notes)
    firsts = [r["first_seen"] for r, _ in safe + bad]
    lasts = [r["last_seen"] for r, _ in safe + bad]
    ev.first_seen, ev.last_seen = iso(min(firsts)), iso(max(lasts))
    ev.days_seen = max(r["days"] for r, _ in safe + bad)
    ev.hours_seen = max(r["hours"] for r, _ in safe + bad)
    return Recommendation(
        id=rec_id("narrow", *rule.key), kind="narrow-rule",
        title=f"Narrow {rule.rule_collection_group}/{rule.rule_collection}/{rule.name}",
        rule=pr, evidence=ev, confidence="medium", risk="medium" if cut else "low",
        rationale="; ".join(changes) + f" — based on {ctx.span()}",
        window=ctx.window_info, existing_rule=existing, permissiveness=score,
        rollout=[f"add {pr.rule_collection_group}/{pr.rule_collection}/{pr.name} above the broad rule (group priority {pr.rule_collection_group_priority})",
                 "keep the broad rule until the narrow rule has carried all its traffic for a full cycle (e.g. 14 days)",
                 f"then disable the broad rule, and delete it after {ctx.config.remove_after_days} days"],
        still_allowed=still[:200], would_be_denied=cut,
        what_if={"deny_to_allow_hits": 0, "allow_to_deny_hits": sum(r["hits"] for r, _ in bad),
                 "allow_to_deny_after_broad_rule_removed": sum(r["hits"] for r, _ in bad)})
