"""Network rules for denied TCP/UDP/ICMP traffic: DNS-attributed FQDNs, service tags, aggregated CIDRs."""

from __future__ import annotations

import ipaddress
from collections import defaultdict

import polars as pl

from egresslens.analyse import frame
from egresslens.recommend.context import Context, collection_priority, rcg_priority
from egresslens.recommend.model import (
    Evidence,
    ProposedRule,
    Recommendation,
    rec_id,
    safe_name,
)
from egresslens.recommend.netaggr import aggregate_ips
from egresslens.recommend.sources import group_label, sources_for
from egresslens.recommend.triage import (
    compromised_cut,
    held_without_sources,
    per_name_evidence,
    solo_destinations,
    taint_covered,
    triage,
)
from egresslens.recommend.wildcards import InvalidName, validate_fqdn


def attribute_ips(ctx: Context) -> tuple[dict[str, set[str]], dict[str, dict]]:
    """Destination IP -> the name its sources resolved just before connecting, by a clear majority.

    Uses raw `flows` and `dns_queries`. Each network connection (allowed or denied) is paired with
    the same source's latest successful query at most ``dns_max_gap_s`` before it (ASOF join); an
    address's candidate is the name paired with it most often.

    A client resolves a name, connects, then reuses its DNS cache: the connections that must follow
    a fresh query are the **fresh** ones, a source's first connection after ``dns_cache_s`` without
    one to the same address (or, for an address whose candidate precedes at least
    ``dns_group_min_share`` of those, to any address sharing that candidate: one answer serves
    several round-robin addresses). An IP is attributed to its candidate when the candidate was
    resolved just before at least ``dns_min_recall`` of **all** its fresh connections (one with no
    query just before it counts against the name), in at least two distinct hours; otherwise it is
    unattributed, however well the few paired connections agree. Hourly rollups carry no timing, so
    IPs seen only in rollups are not attributed (they fall back to CIDRs / service tags).

    Returns (attributed IP -> {name}, IP -> its candidate: name, share, connections, fresh, total,
    hours, attributed) for every IP a query preceded at least once.
    """
    cfg = ctx.config
    fresh = "(gap IS NULL OR gap > to_microseconds(CAST($cache * 1000000 AS BIGINT)))"
    df = frame(ctx.con, f"""
        WITH c AS (SELECT source_ip, time, destination_ip FROM flows
                   WHERE time >= $start AND time < $end AND kind = 'network'
                     AND destination_ip IS NOT NULL AND source_ip IS NOT NULL),
        q AS (SELECT source_ip, time AS qtime, query_name FROM dns_queries
              WHERE time >= $start - INTERVAL 1 MINUTE AND time < $end AND response_code = 'NOERROR'
                AND query_name IS NOT NULL AND source_ip IN (SELECT DISTINCT source_ip FROM c)),
        j AS (SELECT c.source_ip, c.destination_ip, c.time,
                     CASE WHEN c.time - q.qtime <= to_microseconds(CAST($gap * 1000000 AS BIGINT)) THEN q.query_name END
                       AS query_name
              FROM c ASOF LEFT JOIN q ON c.source_ip = q.source_ip AND c.time >= q.qtime),
        cand AS (SELECT destination_ip, query_name AS cand FROM j WHERE query_name IS NOT NULL
                 GROUP BY destination_ip, query_name
                 QUALIFY row_number() OVER (PARTITION BY destination_ip ORDER BY count(*) DESC, query_name) = 1),
        a AS (SELECT j.*, cand.cand,
                     j.time - lag(j.time) OVER (PARTITION BY j.source_ip, j.destination_ip ORDER BY j.time) AS gap
              FROM j JOIN cand USING (destination_ip)),
        own AS (SELECT destination_ip, count(*) FILTER (WHERE query_name = cand) / count(*) AS share
                FROM a WHERE {fresh} GROUP BY destination_ip),
        b AS (SELECT a.source_ip, a.destination_ip, a.time, a.query_name, a.cand,
                     a.time - lag(a.time) OVER (PARTITION BY a.source_ip, CASE WHEN own.share >= $group
                                                THEN a.cand ELSE a.destination_ip END ORDER BY a.time) AS gap
              FROM a JOIN own USING (destination_ip))
        SELECT destination_ip, any_value(cand) AS name,
               count(*) FILTER (WHERE {fresh} AND query_name = cand)::BIGINT AS n,
               count(DISTINCT date_trunc('hour', time)) FILTER (WHERE {fresh} AND query_name = cand)::BIGINT AS hours,
               count(*) FILTER (WHERE {fresh})::BIGINT AS fresh, count(*)::BIGINT AS total
        FROM b GROUP BY destination_ip""",
        {**ctx.params, "gap": cfg.dns_max_gap_s, "cache": cfg.dns_cache_s, "group": cfg.dns_group_min_share})
    names: dict[str, set[str]] = {}
    detail: dict[str, dict] = {}
    for ip, name, n, hours, n_fresh, total in df.iter_rows():
        ok = n >= cfg.dns_min_recall * n_fresh and hours >= 2
        detail[ip] = {"name": name, "share": n / n_fresh, "connections": int(n), "fresh": int(n_fresh),
                      "total": int(total), "hours": int(hours), "attributed": ok, "min_share": cfg.dns_min_recall}
        if ok:
            names[ip] = {name}
    return names, detail


def attribution_text(ip: str, detail: dict[str, dict]) -> str:
    """`api.example.com: resolved just before 118 of its 120 fresh connections (98 %; ...)`, or
    `unattributed (best: ...)` when that is no clear majority."""
    d = detail.get(ip)
    if d is None:
        return "unattributed (no DNS query just before its connections)"
    what = (f"{d['name']}: resolved just before {d['connections']} of its {d['fresh']} fresh connection(s) "
            f"({d['share']:.0%}; {d['total']} connection(s) in all) in {d['hours']} hour(s)")
    return what if d["attributed"] else f"unattributed (best: {what}; needs {d['min_share']:.0%} in 2 hours or more)"


def name_danger(ctx: Context, dns_map: dict[str, set[str]]):  # noqa: ANN201
    """`extra_danger` for addresses: refused when one resolves from a name the suspicion model withholds."""
    def danger(ip: str) -> str | None:
        for n in dns_map.get(ip, ()):
            r = ctx.susp.name_reason(n)
            if r:
                return f"{ip} resolves from {n}: {r}"
        return None
    return danger


def denied_network(ctx: Context, groups: pl.DataFrame, dns_map: dict[str, set[str]]) -> None:
    df = groups.filter((pl.col("kind") == "network") & (pl.col("action") == "Deny") & pl.col("destination_ip").is_not_null())
    if df.is_empty():
        return

    cand = triage(ctx, df, "destination_ip", name_danger(ctx, dns_map))
    if cand.is_empty():
        return
    cfg = ctx.config
    support = per_name_evidence(ctx, cand, "destination_ip")
    # addresses with low support or a tainted origin get rules of their own (never merged with others)
    ip_groups: dict[str, set[str]] = defaultdict(set)
    for ip, g in cand.select("destination_ip", "sgroup").iter_rows():
        ip_groups[ip].add(g)
    solo = solo_destinations(support, {ip: frozenset(g) for ip, g in ip_groups.items()})
    # (ip, protocol, port) -> source groups
    per: dict[tuple[str, int | None], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for ip, g, proto, port in cand.select("destination_ip", "sgroup", "protocol", "destination_port").iter_rows():
        per[(proto, port)][ip].add(g)
    # -> clusters by (source groups, protocol) with per-destination ports
    clusters: dict[tuple[frozenset, str], dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for (proto, port), ips in per.items():
        by_sg: dict[frozenset, list[str]] = defaultdict(list)
        for ip, gs in ips.items():
            by_sg[(frozenset(gs), ip if ip in solo else None)].append(ip)
        for (sg, alone), iplist in by_sg.items():
            fqdn_ips = [ip for ip in iplist if len(dns_map.get(ip, ())) == 1]
            other = [ip for ip in iplist if ip not in fqdn_ips]
            dests: list[tuple[str, str, list[str]]] = []  # (type, value, ips)
            names: dict[str, list[str]] = defaultdict(list)
            for ip in fqdn_ips:
                n = next(iter(dns_map[ip]))
                if _valid(n):
                    names[n].append(ip)
                else:
                    other.append(ip)
            for n, ips2 in names.items():
                dests.append(("fqdn", n, ips2))
            if ctx.service_tags is not None:
                tagged: dict[str, list[str]] = defaultdict(list)
                rest = []
                for ip in other:
                    t = ctx.service_tags.tag_for(ip)
                    (tagged[t].append(ip) if t else rest.append(ip))
                for t, ips2 in tagged.items():
                    dests.append(("tag", t, ips2))
                other = rest
            cidrs = aggregate_ips(other, min_fill=cfg.cidr_min_fill, max_prefix=cfg.cidr_max_prefix)
            for c in cidrs:
                covered = [ip for ip in other if _in_cidr(ip, c)]
                dests.append(("cidr", c, covered))
            for t, v, i in dests:
                clusters[(sg, proto, alone)][(t, v, tuple(sorted(i)))].add("*" if port is None else str(port))
    rcg = cfg.rule_collection_group
    rcg_prio = rcg_priority(ctx)
    made: dict[str, Recommendation] = {}
    for (sg, proto, alone), dest_ports in sorted(clusters.items(), key=lambda kv: (group_label(kv[0][0]), kv[0][1], kv[0][2] or "")):
        # merge destinations sharing the same port set into one rule
        by_ports: dict[frozenset, list] = defaultdict(list)
        for d, ports in dest_ports.items():
            by_ports[frozenset(ports)].append(d)
        label = group_label(sg)
        coll = safe_name(f"allow-net-{label}")
        for ports, dests in sorted(by_ports.items(), key=lambda kv: sorted(kv[0])):
            port_list = sorted(ports, key=lambda p: (p == "*", int(p) if p.isdigit() else 0))
            fq = sorted(v for t, v, _ in dests if t == "fqdn")
            addrs = sorted(v for t, v, _ in dests if t != "fqdn")
            ips = sorted({ip for _t, _v, i in dests for ip in i})
            derived = {v: sorted(i) for t, v, i in dests if t in ("fqdn", "tag") or "/" in v}
            first = (fq + addrs)[0]
            covered = set(ips) | set(fq)
            excluded, notes = taint_covered(
                ctx, "network", lambda d: d in covered or any("/" in a and _in_cidr(d, a) for a in addrs),
                [(proto, None if p == "*" else int(p)) for p in port_list])
            srcs, cut_notes, cut = compromised_cut(ctx, sources_for(sg, ctx.group_cidrs), noted=excluded)
            notes.extend(cut_notes)
            if not srcs:
                held_without_sources(ctx, label, fq + addrs, [f"{proto}:{p}" for p in port_list])
                continue
            ctx.record_cut(cut)
            if alone:
                if support[alone]["support"] == "low":
                    notes.append(f"{alone} has low support ({support[alone]['hits']} hits in {support[alone]['hours']} "
                                 "hour(s)): proposed on its own, review it by itself")
            name = safe_name(f"allow-{proto.lower()}-{'-'.join(port_list[:3])}-{first}")
            rule = ProposedRule(
                rule_type="NetworkRule", rule_collection_group=rcg, rule_collection_group_priority=rcg_prio,
                rule_collection=coll, rule_collection_priority=collection_priority(ctx, coll), name=name,
                source_addresses=srcs, source_group=label, ip_protocols=[proto],
                destination_addresses=addrs, destination_fqdns=fq, destination_ports=port_list)
            if fq:  # what DNS proxy they need is said by the engine, which knows the policy's DNS settings
                notes.extend(f"{n} attributed from DNS: {ip} is {attribution_text(ip, ctx.dns_detail)}"
                             for n in fq for ip in derived[n][:5])
            if any(t == "tag" for t, _v, _i in dests):
                notes.append("service tags from the supplied Service Tags file; Microsoft updates their prefixes")
            rid = rec_id("net", sorted(sg), proto, port_list, fq, addrs)
            what = ", ".join((fq + addrs)[:6]) + (" …" if len(fq) + len(addrs) > 6 else "")
            rec = Recommendation(
                id=rid, kind="add-network-rule", title=f"Allow {label} to {what} on {proto} {','.join(port_list)}",
                rule=rule, evidence=Evidence(destinations=ips, derived_from=derived, notes=notes,
                                             per_name=[{**support[ip], "attribution": attribution_text(
                                                 ip, ctx.dns_detail)} for ip in ips if ip in support]),
                confidence="high" if fq or all("/" not in a for a in addrs) else "medium",
                risk="medium" if any("/" in a for a in addrs) or any(t == "tag" for t, _v, _i in dests) else "low",
                rationale=f"denied {proto} traffic from {label} to {len(ips)} address(es) on port(s) {', '.join(port_list)}",
                window=ctx.window_info, rollout=["add the rule in a new rule collection group after the existing ones"])
            same = made.get(rid)
            if same is not None:  # an address proposed on its own that resolves to a name already proposed: one rule
                same.evidence.destinations = sorted(set(same.evidence.destinations) | set(ips))
                for k, v in derived.items():
                    same.evidence.derived_from[k] = sorted(set(same.evidence.derived_from.get(k, [])) | set(v))
                same.evidence.per_name += rec.evidence.per_name
                same.evidence.notes += [n for n in notes if n not in same.evidence.notes and "on its own" not in n]
            else:
                made[rid] = rec
                ctx.add(rec)
            sel = cand.filter(pl.col("destination_ip").is_in(ips) & pl.col("sgroup").is_in(list(sg))
                              & (pl.col("protocol") == proto))
            for gkey, port in sel.select("gkey", "destination_port").iter_rows():
                if (str(port) if port is not None else "*") in ports:
                    ctx.evidence_keys.append({"gkey": gkey, "rec_id": rid})


def _valid(name: str) -> bool:
    try:
        validate_fqdn(name)
        return True
    except InvalidName:
        return False


def _in_cidr(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False

