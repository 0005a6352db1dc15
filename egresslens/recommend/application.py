"""Application rules for denied HTTP/HTTPS/MSSQL traffic: FQDN tags, catalogue bundles, wildcards, names."""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from egresslens.recommend.catalogue import match_bundles
from egresslens.recommend.context import (
    Context,
    collection_priority,
    key_rows,
    rcg_priority,
)
from egresslens.recommend.model import (
    Evidence,
    ProposedRule,
    Recommendation,
    rec_id,
    safe_name,
)
from egresslens.recommend.policy import APP_PROTOCOLS
from egresslens.recommend.sources import group_label, sources_for
from egresslens.recommend.triage import (
    compromised_cut,
    held_without_sources,
    name_cover,
    per_name_evidence,
    solo_destinations,
    taint_covered,
    triage,
)
from egresslens.recommend.wildcards import propose_wildcards

_APP_PROTO_NAME = {"HTTP": "Http", "HTTPS": "Https", "MSSQL": "Mssql"}


def denied_application(ctx: Context, groups: pl.DataFrame) -> None:
    df = groups.filter((pl.col("kind") == "application") & (pl.col("action") == "Deny")
                       & pl.col("destination_fqdn").is_not_null() & pl.col("protocol").is_in(list(APP_PROTOCOLS))
                       & pl.col("destination_port").is_not_null())
    if df.is_empty():
        return
    cand = triage(ctx, df, "destination_fqdn")
    if cand.is_empty():
        return
    names = sorted(set(cand["destination_fqdn"].to_list()))
    support = per_name_evidence(ctx, cand, "destination_fqdn")
    # per name: source groups and protocol:ports
    name_groups: dict[str, set[str]] = defaultdict(set)
    name_protos: dict[str, set[str]] = defaultdict(set)
    for n, g, p, port in cand.select("destination_fqdn", "sgroup", "protocol", "destination_port").iter_rows():
        name_groups[n].add(g)
        name_protos[n].add(f"{_APP_PROTO_NAME[p]}:{port}")
    # targets: (kind, value) -> derived names
    targets: list[tuple[str, str, list[str], str | None, dict[str, str]]] = []  # (type, value, names, bundle, sources)
    bundle_matches, rest = match_bundles(names)
    for bm in bundle_matches:
        if bm.bundle.fqdn_tag:
            targets.append(("tag", bm.bundle.fqdn_tag, bm.names, bm.bundle.name, {}))
        else:
            targets.append(("bundle", bm.bundle.name, bm.names, bm.bundle.name, bm.sources))
    # a name with low support or a tainted origin never joins a wildcard or a multi-name rule (a documented
    # bundle keeps its canonical form: its rule then excludes the compromised sources, see below)
    solo = solo_destinations(support, {n: frozenset(g) for n, g in name_groups.items()}) & set(rest)
    wild, explicit, rejected = propose_wildcards([n for n in rest if n not in solo],
                                                 min_siblings=ctx.config.wildcard_min_siblings)
    for pattern, members in wild.items():
        targets.append(("wildcard", pattern, members, None, {}))
    for n in sorted(set(explicit) | solo):
        targets.append(("fqdn", n, [n], None, {}))
    if rejected:
        for parent, why in sorted(rejected.items()):
            ctx.warnings.append(f"no wildcard over {parent}: {why}; explicit names proposed instead")

    # cluster targets into rules by (source groups, protocols, bundle)
    clusters: dict[tuple, list] = defaultdict(list)
    for t in targets:
        ttype, value, members, bundle, srcs = t
        sg = frozenset(g for m in members for g in name_groups[m])
        if ttype == "tag":
            protos = frozenset(["Http:80", "Https:443"])
        else:
            protos = frozenset(p for m in members for p in name_protos[m])
        alone = value if ttype == "fqdn" and value in solo else None
        clusters[(sg, protos, bundle if ttype in ("tag", "bundle") else None, alone)].append(t)
    rcg = ctx.config.rule_collection_group
    rcg_prio = rcg_priority(ctx)
    for (sg, protos, bundle, alone), ts in sorted(clusters.items(), key=lambda kv: (
            group_label(kv[0][0]), sorted(kv[0][1]), kv[0][2] or "", kv[0][3] or "")):
        label = group_label(sg)
        coll = safe_name(f"allow-app-{label}")
        fqdns: list[str] = []
        tags: list[str] = []
        derived: dict[str, list[str]] = {}
        notes: list[str] = []
        all_names: list[str] = []
        for ttype, value, members, _b, srcs in ts:
            all_names.extend(members)
            if ttype == "tag":
                tags.append(value)
                derived[f"tag:{value}"] = members
            elif ttype == "bundle":
                fqdns.extend(srcs.keys())
                derived[f"bundle:{value}"] = members
                notes.extend(f"{t}: {s}" for t, s in srcs.items())
            else:
                fqdns.append(value)
                if ttype == "wildcard":
                    derived[value] = members
        fqdns = sorted(set(fqdns))
        # every compromised source that also asked for a name this rule covers is cut out of its sources
        excluded, taint_notes = taint_covered(ctx, "application", name_cover(sorted(set(all_names) | set(fqdns))),
                                              [(p.split(":")[0].upper(), int(p.split(":")[1])) for p in protos])
        notes.extend(taint_notes)
        srcs, cut_notes, cut = compromised_cut(ctx, sources_for(sg, ctx.group_cidrs), noted=excluded)
        notes.extend(cut_notes)
        if not srcs:
            held_without_sources(ctx, label, sorted(set(all_names)), sorted(protos))
            continue
        ctx.record_cut(cut)
        if alone:
            if support[alone]["support"] == "low":
                notes.append(f"{alone} has low support ({support[alone]['hits']} hits in {support[alone]['hours']} "
                             "hour(s)): proposed on its own, review it by itself")
        first = tags[0] if tags else (fqdns[0] if fqdns else "rule")
        name = safe_name(f"allow-{bundle or first.removeprefix('*.')}" + (f"-and-{len(fqdns) + len(tags) - 1}-more" if len(fqdns) + len(tags) > 1 and not bundle else ""))
        rule = ProposedRule(
            rule_type="ApplicationRule", rule_collection_group=rcg, rule_collection_group_priority=rcg_prio,
            rule_collection=coll, rule_collection_priority=collection_priority(ctx, coll), name=name,
            source_addresses=srcs, source_group=label,
            protocols=sorted(protos), target_fqdns=fqdns, fqdn_tags=sorted(tags))
        wild_n = sum(1 for f in fqdns if f.startswith("*."))
        risk = "medium" if wild_n or tags else "low"
        conf = "medium" if alone and support[alone]["support"] == "low" else "high"
        rid = rec_id("app", sorted(sg), sorted(protos), fqdns, tags)
        what = ", ".join(([f"FQDN tag {t}" for t in tags] + fqdns)[:6]) + (" …" if len(fqdns) + len(tags) > 6 else "")
        rationale = f"denied {', '.join(sorted(protos))} traffic from {label} to {len(set(all_names))} name(s)"
        if bundle:
            rationale += f"; the names belong to the documented bundle '{bundle}', proposed in its canonical form"
        if wild_n:
            rationale += f"; {wild_n} wildcard(s) derived from shard-like sibling names (see derived_from)"
        rec = Recommendation(id=rid, kind="add-application-rule", title=f"Allow {label} to reach {what}", rule=rule,
                             evidence=Evidence(destinations=sorted(set(all_names)), derived_from=derived, notes=notes,
                                               per_name=[support[n] for n in sorted(set(all_names))]),
                             confidence=conf, risk=risk, rationale=rationale, window=ctx.window_info,
                             rollout=["add the rule in a new rule collection group after the existing ones",
                                      "watch the deny log for these names drop to zero"], bundle=bundle)
        ctx.add(rec)
        names_set = set(all_names)
        for row in cand.filter(pl.col("destination_fqdn").is_in(list(names_set)) & pl.col("sgroup").is_in(list(sg))).pipe(key_rows):
            ctx.evidence_keys.append({**row, "rec_id": rid})

