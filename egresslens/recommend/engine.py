"""The recommendation engine: store + window (+ policy) -> recommendations with evidence.

Hot path: DuckDB groups the window's flows (raw `flows` or hourly `flow_rollups`, via
`egresslens.analyse.FLOW_HOURS_SQL`) to distinct (source group, destination, protocol, port,
action, rule) first; Python logic then runs over those groups (thousands, not millions of rows).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window, newest_hour_may_be_incomplete
from egresslens.recommend.catalogue import match_bundles
from egresslens.recommend.config import Config
from egresslens.recommend.detect import Danger, dns_anomalies, threats
from egresslens.recommend.model import Evidence, ProposedRule, Recommendation
from egresslens.recommend.netaggr import ServiceTags, aggregate_ips
from egresslens.recommend.policy import APP_PROTOCOLS, Rule
from egresslens.recommend.sources import assign_groups, group_label, sources_for
from egresslens.recommend.wildcards import InvalidName, propose_wildcards, validate_fqdn

NETWORK_RULE_BUDGET = 20_000
MAX_RCGS = 60
_APP_PROTO_NAME = {"HTTP": "Http", "HTTPS": "Https", "MSSQL": "Mssql"}


@dataclass
class Recommendations:
    items: list[Recommendation]
    window: Window
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    rule_scores: list[dict[str, Any]] = field(default_factory=list)
    dns_attribution: dict[str, list[str]] = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[Recommendation]:
        return [r for r in self.items if r.kind == kind]

    def proposed_rules(self) -> list[Rule]:
        """The add/narrow proposals as policy rules (for the what-if replay)."""
        return [to_policy_rule(r) for r in self.items if r.rule is not None and r.kind != "remove-rule"]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.items]

    def to_polars(self) -> pl.DataFrame:
        rows = []
        for r in self.items:
            rule = r.rule
            rows.append({
                "id": r.id, "kind": r.kind, "title": r.title, "confidence": r.confidence, "risk": r.risk,
                "rule_collection_group": rule.rule_collection_group if rule else None,
                "rule_collection": rule.rule_collection if rule else None,
                "rule_collection_priority": rule.rule_collection_priority if rule else None,
                "rule_name": rule.name if rule else None,
                "rule_type": rule.rule_type if rule else None,
                "sources": rule.source_addresses if rule else [],
                "destinations": (rule.target_fqdns + [f"tag:{t}" for t in rule.fqdn_tags] + rule.destination_fqdns
                                 + rule.destination_addresses) if rule else r.evidence.destinations[:20],
                "ports": (rule.protocols if rule.rule_type == "ApplicationRule" else
                          [f"{'/'.join(rule.ip_protocols)}:{p}" for p in rule.destination_ports]) if rule else [],
                "hits": r.evidence.hits, "distinct_sources": r.evidence.distinct_sources,
                "first_seen": r.evidence.first_seen, "last_seen": r.evidence.last_seen,
                "days_seen": r.evidence.days_seen, "permissiveness": r.permissiveness,
                "bundle": r.bundle, "rationale": r.rationale,
            })
        schema = {"sources": pl.List(pl.Utf8), "destinations": pl.List(pl.Utf8), "ports": pl.List(pl.Utf8),
                  "permissiveness": pl.Float64, "rule_collection_priority": pl.Int64}
        return pl.DataFrame(rows, schema_overrides=schema) if rows else pl.DataFrame(
            schema={"id": pl.Utf8, "kind": pl.Utf8, "title": pl.Utf8, "hits": pl.Int64})

    def rule_scores_polars(self) -> pl.DataFrame:
        return pl.DataFrame(self.rule_scores) if self.rule_scores else pl.DataFrame()


def to_policy_rule(rec: Recommendation) -> Rule:
    r = rec.rule
    assert r is not None
    protos = []
    for p in r.protocols:
        t, _, n = p.partition(":")
        protos.append((t.upper(), int(n)))
    return Rule(
        rule_type="application" if r.rule_type == "ApplicationRule" else "network",
        name=r.name, rule_collection_group=r.rule_collection_group, rcg_priority=r.rule_collection_group_priority,
        rule_collection=r.rule_collection, collection_priority=r.rule_collection_priority, action=r.action, index=0,
        sources=list(r.source_addresses), ip_protocols=[p.upper() for p in r.ip_protocols],
        destination_addresses=list(r.destination_addresses), destination_fqdns=list(r.destination_fqdns),
        destination_ports=list(r.destination_ports), app_protocols=protos, target_fqdns=list(r.target_fqdns),
        fqdn_tags=list(r.fqdn_tags), proposed=rec.id,
    )


def _iso(t: Any) -> str | None:
    return t.isoformat(sep=" ", timespec="seconds") if isinstance(t, datetime) else (str(t) if t is not None else None)


def _safe_name(text: str, limit: int = 80) -> str:
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "rule"
    return out[:limit]


def _rid(*parts: Any) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


class _Ctx:
    def __init__(self, con, window, config, policy, service_tags):
        self.con = con
        self.window = window
        self.config = config
        self.policy = policy
        self.service_tags = service_tags
        self.params = {"start": window.start, "end": window.end}
        self.items: list[Recommendation] = []
        self.warnings: list[str] = []
        self.evidence_keys: list[dict[str, Any]] = []  # (rec id, sgroup, kind, protocol, fqdn, ip, port)
        self.window_info = {"start": _iso(window.start), "end": _iso(window.end), "hours": window.hours,
                            "description": window.describe()}
        self.coll_prio: dict[str, int] = {}

    def add(self, rec: Recommendation) -> None:
        self.items.append(rec)


def recommend(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    policy: list[Rule] | None = None,
    config: Config | None = None,
    service_tags: ServiceTags | None = None,
) -> Recommendations:
    """Recommendations for the window. ``policy``: rules from :func:`egresslens.recommend.policy.load_policy`."""
    config = config or Config()
    ctx = _Ctx(con, window, config, policy, service_tags)
    if newest_hour_may_be_incomplete(window):
        ctx.warnings.append("the newest hour of the window may be incomplete (logs arrive minutes late)")

    # 1. what must never be allowed
    danger = Danger()
    threats(con, window, danger)
    tunnel_findings = dns_anomalies(con, window, config, danger)

    # 2. distinct sources -> groups
    src_rows = con.execute(f"SELECT DISTINCT source_ip FROM ({FLOW_HOURS_SQL}) WHERE source_ip IS NOT NULL",
                           ctx.params).fetchall()
    mapping, group_cidrs = assign_groups([r[0] for r in src_rows], config)
    ctx.group_cidrs = group_cidrs
    srcmap = pl.DataFrame({"source_ip": list(mapping), "sgroup": list(mapping.values()),
                           "flagged": [ip in danger.sources for ip in mapping]},
                          schema={"source_ip": pl.Utf8, "sgroup": pl.Utf8, "flagged": pl.Boolean})
    con.register("_rec_srcmap", srcmap.to_arrow())
    try:
        groups = con.sql(f"""
            SELECT m.sgroup, f.kind, f.protocol, f.destination_fqdn, f.destination_ip, f.destination_port, f.action,
                   hash(m.sgroup, f.kind, f.protocol, f.destination_fqdn, f.destination_ip, f.destination_port) AS gkey,
                   f.action_reason, f.rule_collection_group, f.rule_collection, f.rule,
                   sum(f.hits)::BIGINT AS hits, approx_count_distinct(f.source_ip)::BIGINT AS sources,
                   min(f.first_seen) AS first_seen, max(f.last_seen) AS last_seen,
                   approx_count_distinct(f.hour)::BIGINT AS hours,
                   (approx_count_distinct(f.hour::DATE))::BIGINT AS days,
                   bool_or(m.flagged) AS any_flagged, bool_and(m.flagged) AS all_flagged
            FROM ({FLOW_HOURS_SQL}) f JOIN _rec_srcmap m USING (source_ip)
            GROUP BY ALL""", params=ctx.params).pl()
        ctx.stats_rows = groups.height
        dns_map = _attribute_ips(ctx, danger) if groups.filter(
            (pl.col("kind") == "network") & (pl.col("action") == "Deny")).height else {}
        ctx.dns_map = dns_map
        _denied_application(ctx, groups, danger)
        _denied_network(ctx, groups, danger, dns_map)
        scores = _existing_rules(ctx, groups, danger)
        _suggest_ip_groups(ctx)
        _limits(ctx)
        for f in tunnel_findings:
            _investigate(ctx, f"DNS tunnelling-like traffic under {f['parent']}", f["reason"],
                         Evidence(hits=f["queries"], destinations=f["examples"]), "high", key=("tunnel", f["parent"]))
        _fill_evidence(ctx)
    finally:
        con.unregister("_rec_srcmap")
    stats = {"flow_groups": ctx.stats_rows, "source_groups": len(set(mapping.values())),
             "by_kind": {k: sum(1 for r in ctx.items if r.kind == k) for k in
                         ("add-application-rule", "add-network-rule", "narrow-rule", "remove-rule", "investigate")}}
    order = {"add-application-rule": 0, "add-network-rule": 1, "narrow-rule": 2, "remove-rule": 3, "investigate": 4}
    ctx.items.sort(key=lambda r: (order[r.kind], -(r.evidence.hits or 0), r.id))
    return Recommendations(ctx.items, window, ctx.warnings, stats, scores,
                           {ip: sorted(n) for ip, n in dns_map.items()})


# ------------------------------------------------------------------ helpers

def _investigate(ctx: _Ctx, title: str, reason: str, ev: Evidence, risk: str, key: tuple, rows=None) -> Recommendation:
    rid = _rid("investigate", *key)
    rec = Recommendation(id=rid, kind="investigate", title=title, rule=None, evidence=ev, confidence="high",
                         risk=risk, rationale=reason, window=ctx.window_info,
                         rollout=["review before allowing anything; no allow rule is proposed"])
    ctx.add(rec)
    for row in rows or []:
        ctx.evidence_keys.append({**row, "rec_id": rid})
    return rec


def _key_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    return df.select("gkey").to_dicts()


def _priority(ctx: _Ctx) -> int:
    if ctx.config.priority:
        return int(ctx.config.priority)
    if ctx.policy:
        return min(65000, max(r.rcg_priority for r in ctx.policy) + 100)
    return 64000


def _collection_priority(ctx: _Ctx, name: str) -> int:
    if name not in ctx.coll_prio:
        ctx.coll_prio[name] = 100 + 100 * len(ctx.coll_prio)
    return ctx.coll_prio[name]


def _triage(ctx: _Ctx, df: pl.DataFrame, danger: Danger, dest_col: str, extra_danger=None) -> pl.DataFrame:
    """Split off what must not be allowed; returns the allowable candidates."""
    cfg = ctx.config
    keep = []
    noise: dict[str, list[dict]] = defaultdict(list)
    for row in df.iter_rows(named=True):
        dest = row[dest_col]
        reason = None
        risk = "high"
        if dest_col == "destination_fqdn":
            try:
                validate_fqdn(dest)
            except InvalidName as exc:
                reason = f"invalid or hostile name rejected before emitting: {exc}"
            reason = reason or danger.name_reason(dest)
        else:
            reason = danger.ips.get(dest) or (extra_danger(dest) if extra_danger else None)
        if not reason and row["action_reason"] not in (None, "Default Action") and row["rule"]:
            reason = f"denied explicitly by rule {row['rule_collection_group']}/{row['rule_collection']}/{row['rule']}; an allow would have to override a deliberate deny"
            risk = "medium"
        if not reason and row["all_flagged"]:
            reason = "only sources with threat-intel/IDPS hits reached this destination"
        if reason:
            ev = Evidence(hits=row["hits"], distinct_sources=row["sources"], destinations=[str(dest)])
            _investigate(ctx, f"Do not allow {dest!r} ({row['protocol']}:{row['destination_port']}) from {row['sgroup']}",
                         reason, ev, risk, key=(row["sgroup"], dest, row["protocol"], row["destination_port"]),
                         rows=[{"gkey": row["gkey"]}])
            continue
        keep.append(row)
    if not keep:
        return df.clear()
    cand = pl.DataFrame(keep, schema=df.schema)
    # evidence thresholds per (destination, protocol, port) across source groups
    agg = cand.group_by(dest_col, "protocol", "destination_port").agg(
        pl.col("hits").sum().alias("t_hits"), pl.col("hours").max().alias("t_hours"))
    cand = cand.join(agg, on=[dest_col, "protocol", "destination_port"], how="left", nulls_equal=True)
    weak = cand.filter((pl.col("t_hits") < cfg.min_hits) | (pl.col("t_hours") < cfg.min_hours))
    for row in weak.iter_rows(named=True):
        noise[str(row[dest_col])].append(row)
    for dest, rows in noise.items():
        ev = Evidence(hits=sum(r["hits"] for r in rows), distinct_sources=sum(r["sources"] for r in rows),
                      destinations=[dest])
        _investigate(ctx, f"Too little evidence to allow {dest} ({rows[0]['protocol']}:{rows[0]['destination_port']})",
                     f"below the evidence thresholds (min {cfg.min_hits} hits and {cfg.min_hours} distinct hours in the window): "
                     "one-off traffic is not turned into allow rules", ev, "low",
                     key=("noise", dest, rows[0]["protocol"], rows[0]["destination_port"]),
                     rows=[{"gkey": r["gkey"]} for r in rows])
    return cand.filter((pl.col("t_hits") >= cfg.min_hits) & (pl.col("t_hours") >= cfg.min_hours)).drop("t_hits", "t_hours")


# ------------------------------------------------------------------ denied application traffic

def _denied_application(ctx: _Ctx, groups: pl.DataFrame, danger: Danger) -> None:
    df = groups.filter((pl.col("kind") == "application") & (pl.col("action") == "Deny")
                       & pl.col("destination_fqdn").is_not_null() & pl.col("protocol").is_in(list(APP_PROTOCOLS))
                       & pl.col("destination_port").is_not_null())
    if df.is_empty():
        return
    cand = _triage(ctx, df, danger, "destination_fqdn")
    if cand.is_empty():
        return
    names = sorted(set(cand["destination_fqdn"].to_list()))
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
    wild, explicit, rejected = propose_wildcards(rest, min_siblings=ctx.config.wildcard_min_siblings)
    for pattern, members in wild.items():
        targets.append(("wildcard", pattern, members, None, {}))
    for n in explicit:
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
        clusters[(sg, protos, bundle if ttype in ("tag", "bundle") else None)].append(t)
    rcg = ctx.config.rule_collection_group
    rcg_prio = _priority(ctx)
    for (sg, protos, bundle), ts in sorted(clusters.items(), key=lambda kv: (group_label(kv[0][0]), sorted(kv[0][1]), kv[0][2] or "")):
        label = group_label(sg)
        coll = _safe_name(f"allow-app-{label}")
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
        first = tags[0] if tags else (fqdns[0] if fqdns else "rule")
        name = _safe_name(f"allow-{bundle or first.removeprefix('*.')}" + (f"-and-{len(fqdns) + len(tags) - 1}-more" if len(fqdns) + len(tags) > 1 and not bundle else ""))
        rule = ProposedRule(
            rule_type="ApplicationRule", rule_collection_group=rcg, rule_collection_group_priority=rcg_prio,
            rule_collection=coll, rule_collection_priority=_collection_priority(ctx, coll), name=name,
            source_addresses=sources_for(sg, ctx.group_cidrs), source_group=label,
            protocols=sorted(protos), target_fqdns=fqdns, fqdn_tags=sorted(tags))
        wild_n = sum(1 for f in fqdns if f.startswith("*."))
        risk = "medium" if wild_n or tags else "low"
        conf = "high"
        rid = _rid("app", sorted(sg), sorted(protos), fqdns, tags)
        what = ", ".join(([f"FQDN tag {t}" for t in tags] + fqdns)[:6]) + (" …" if len(fqdns) + len(tags) > 6 else "")
        rationale = f"denied {', '.join(sorted(protos))} traffic from {label} to {len(set(all_names))} name(s)"
        if bundle:
            rationale += f"; the names belong to the documented bundle '{bundle}', proposed in its canonical form"
        if wild_n:
            rationale += f"; {wild_n} wildcard(s) derived from shard-like sibling names (see derived_from)"
        rec = Recommendation(id=rid, kind="add-application-rule", title=f"Allow {label} to reach {what}", rule=rule,
                             evidence=Evidence(destinations=sorted(set(all_names)), derived_from=derived, notes=notes),
                             confidence=conf, risk=risk, rationale=rationale, window=ctx.window_info,
                             rollout=["add the rule in a new rule collection group after the existing ones",
                                      "watch the deny log for these names drop to zero"], bundle=bundle)
        ctx.add(rec)
        names_set = set(all_names)
        for row in cand.filter(pl.col("destination_fqdn").is_in(list(names_set)) & pl.col("sgroup").is_in(list(sg))).pipe(_key_rows):
            ctx.evidence_keys.append({**row, "rec_id": rid})


# ------------------------------------------------------------------ denied network traffic

def _attribute_ips(ctx: _Ctx, danger: Danger) -> dict[str, set[str]]:
    """Destination IP -> the name its sources resolved just before connecting, consistently.

    Uses raw `flows` and `dns_queries`: each denied network connection is paired with the same
    source's latest successful DNS query at most ``dns_max_gap_s`` before it (ASOF join). An IP is
    attributed to a name when that name accounts for >= ``dns_min_recall`` of the paired
    connections, in at least two distinct hours. Hourly rollups carry no timing, so IPs seen only
    in rollups are not attributed (they fall back to CIDRs / service tags).
    """
    cfg = ctx.config
    rows = ctx.con.execute("""
        WITH c AS (SELECT source_ip, time, destination_ip FROM flows
                   WHERE time >= $start AND time < $end AND kind = 'network' AND action = 'Deny'
                     AND destination_ip IS NOT NULL AND source_ip IS NOT NULL),
        q AS (SELECT source_ip, time AS qtime, query_name FROM dns_queries
              WHERE time >= $start - INTERVAL 1 MINUTE AND time < $end AND response_code = 'NOERROR'
                AND query_name IS NOT NULL AND source_ip IN (SELECT DISTINCT source_ip FROM c)),
        j AS (SELECT c.destination_ip, q.query_name, c.time FROM c ASOF JOIN q
              ON c.source_ip = q.source_ip AND c.time >= q.qtime
              WHERE c.time - q.qtime <= to_microseconds(CAST($gap * 1000000 AS BIGINT))),
        n AS (SELECT destination_ip, query_name, count(*) AS n, count(DISTINCT date_trunc('hour', time)) AS hours
              FROM j GROUP BY ALL),
        t AS (SELECT destination_ip, sum(n) AS total FROM n GROUP BY 1)
        SELECT n.destination_ip, n.query_name, n.n, n.hours, t.total FROM n JOIN t USING (destination_ip)
        WHERE n.n >= $recall * t.total AND n.hours >= 2""",
        {**ctx.params, "recall": cfg.dns_min_recall, "gap": cfg.dns_max_gap_s}).fetchall()
    out: dict[str, set[str]] = {}
    for ip, name, _n, _hours, _total in rows:
        out.setdefault(ip, set()).add(name)
    return out


def _denied_network(ctx: _Ctx, groups: pl.DataFrame, danger: Danger, dns_map: dict[str, set[str]]) -> None:
    df = groups.filter((pl.col("kind") == "network") & (pl.col("action") == "Deny") & pl.col("destination_ip").is_not_null())
    if df.is_empty():
        return

    def name_danger(ip: str) -> str | None:
        for n in dns_map.get(ip, ()):
            r = danger.name_reason(n)
            if r:
                return f"{ip} resolves from {n}: {r}"
        return None

    cand = _triage(ctx, df, danger, "destination_ip", name_danger)
    if cand.is_empty():
        return
    cfg = ctx.config
    # (ip, protocol, port) -> source groups
    per: dict[tuple[str, int | None], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for ip, g, proto, port in cand.select("destination_ip", "sgroup", "protocol", "destination_port").iter_rows():
        per[(proto, port)][ip].add(g)
    # -> clusters by (source groups, protocol) with per-destination ports
    clusters: dict[tuple[frozenset, str], dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for (proto, port), ips in per.items():
        by_sg: dict[frozenset, list[str]] = defaultdict(list)
        for ip, gs in ips.items():
            by_sg[frozenset(gs)].append(ip)
        for sg, iplist in by_sg.items():
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
                clusters[(sg, proto)][(t, v, tuple(sorted(i)))].add("*" if port is None else str(port))
    rcg = cfg.rule_collection_group
    rcg_prio = _priority(ctx)
    for (sg, proto), dest_ports in sorted(clusters.items(), key=lambda kv: (group_label(kv[0][0]), kv[0][1])):
        # merge destinations sharing the same port set into one rule
        by_ports: dict[frozenset, list] = defaultdict(list)
        for d, ports in dest_ports.items():
            by_ports[frozenset(ports)].append(d)
        label = group_label(sg)
        coll = _safe_name(f"allow-net-{label}")
        for ports, dests in sorted(by_ports.items(), key=lambda kv: sorted(kv[0])):
            port_list = sorted(ports, key=lambda p: (p == "*", int(p) if p.isdigit() else 0))
            fq = sorted(v for t, v, _ in dests if t == "fqdn")
            addrs = sorted(v for t, v, _ in dests if t != "fqdn")
            ips = sorted({ip for _t, _v, i in dests for ip in i})
            derived = {v: sorted(i) for t, v, i in dests if t in ("fqdn", "tag") or "/" in v}
            first = (fq + addrs)[0]
            name = _safe_name(f"allow-{proto.lower()}-{'-'.join(port_list[:3])}-{first}")
            rule = ProposedRule(
                rule_type="NetworkRule", rule_collection_group=rcg, rule_collection_group_priority=rcg_prio,
                rule_collection=coll, rule_collection_priority=_collection_priority(ctx, coll), name=name,
                source_addresses=sources_for(sg, ctx.group_cidrs), source_group=label, ip_protocols=[proto],
                destination_addresses=addrs, destination_fqdns=fq, destination_ports=port_list)
            notes = []
            if fq:
                notes.append("FQDNs in network rules need DNS proxy enabled on the firewall (and clients using it as DNS server)")
                notes.extend(f"{n} attributed from DNS: {', '.join(derived[n][:5])} were contacted by sources that "
                             "resolved this name in the same hours" for n in fq)
            if any(t == "tag" for t, _v, _i in dests):
                notes.append("service tags from the supplied Service Tags file; Microsoft updates their prefixes")
            rid = _rid("net", sorted(sg), proto, port_list, fq, addrs)
            what = ", ".join((fq + addrs)[:6]) + (" …" if len(fq) + len(addrs) > 6 else "")
            rec = Recommendation(
                id=rid, kind="add-network-rule", title=f"Allow {label} to {what} on {proto} {','.join(port_list)}",
                rule=rule, evidence=Evidence(destinations=ips, derived_from=derived, notes=notes),
                confidence="high" if fq or all("/" not in a for a in addrs) else "medium",
                risk="medium" if any("/" in a for a in addrs) or any(t == "tag" for t, _v, _i in dests) else "low",
                rationale=f"denied {proto} traffic from {label} to {len(ips)} address(es) on port(s) {', '.join(port_list)}",
                window=ctx.window_info, rollout=["add the rule in a new rule collection group after the existing ones"])
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
    import ipaddress
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# ------------------------------------------------------------------ existing rules

def _existing_rules(ctx: _Ctx, groups: pl.DataFrame, danger: Danger) -> list[dict[str, Any]]:
    """Narrow or remove allow rules; permissiveness score for every rule."""
    from egresslens.recommend.existing import analyse_existing

    return analyse_existing(ctx, groups, danger)


def _suggest_ip_groups(ctx: _Ctx) -> None:
    counts: dict[tuple[str, ...], list[Recommendation]] = defaultdict(list)
    for r in ctx.items:
        if r.rule is not None and r.kind.startswith("add-") and len(r.rule.source_addresses) > 1:
            counts[tuple(r.rule.source_addresses)].append(r)
    for srcs, recs in counts.items():
        if len(recs) >= ctx.config.ip_group_min_uses:
            name = _safe_name(f"ipg-{recs[0].rule.source_group}")
            for r in recs:
                r.rule.source_ip_group = name
                r.evidence.notes.append(f"source set {', '.join(srcs[:4])} is used by {len(recs)} proposed rules: "
                                        f"create IP Group {name} (counts as one source in the 20,000 budget)")


def _limits(ctx: _Ctx) -> None:
    combos = 0
    for r in ctx.items:
        if r.rule is not None and r.rule.rule_type == "NetworkRule" and r.kind.startswith("add-"):
            srcs = 1 if r.rule.source_ip_group else max(1, len(r.rule.source_addresses))
            combos += srcs * max(1, len(r.rule.destination_addresses) + len(r.rule.destination_fqdns))
    existing = 0
    for r in ctx.policy or []:
        if r.rule_type == "network":
            existing += max(1, len(r.sources) + len(r.source_ip_groups)) * max(
                1, len(r.destination_addresses) + len(r.destination_fqdns) + len(r.destination_ip_groups))
    if combos + existing > NETWORK_RULE_BUDGET:
        ctx.warnings.append(f"network rules would use {combos + existing} unique source x destination combinations "
                            f"(limit {NETWORK_RULE_BUDGET}); use IP Groups for source sets")
    if ctx.policy:
        n = len({r.rule_collection_group for r in ctx.policy if not r.parent})
        if n + 1 > MAX_RCGS:
            ctx.warnings.append(f"the policy already has {n} rule collection groups (limit {MAX_RCGS}): "
                                f"put the proposals into an existing group instead of {ctx.config.rule_collection_group}")


# ------------------------------------------------------------------ evidence

def _fill_evidence(ctx: _Ctx) -> None:
    """Exact evidence per recommendation: one more pass over the window, joined on the mapped keys."""
    if not ctx.evidence_keys:
        return
    keys = pl.DataFrame(ctx.evidence_keys, schema={"gkey": pl.UInt64, "rec_id": pl.Utf8}).unique()
    ctx.con.register("_rec_keys", keys.to_arrow())
    try:
        rows = ctx.con.execute(f"""
            WITH f AS (SELECT f.*, hash(m.sgroup, f.kind, f.protocol, f.destination_fqdn, f.destination_ip,
                                        f.destination_port) AS gkey
                       FROM ({FLOW_HOURS_SQL}) f JOIN _rec_srcmap m USING (source_ip) WHERE f.action = 'Deny'),
            j AS (SELECT k.rec_id, f.* FROM f JOIN _rec_keys k USING (gkey))
            SELECT rec_id, sum(hits)::BIGINT, approx_count_distinct(source_ip)::BIGINT, min(first_seen), max(last_seen),
                   approx_count_distinct(hour::DATE)::BIGINT, approx_count_distinct(hour)::BIGINT,
                   max_by({{'hour': hour, 'source_ip': source_ip, 'protocol': protocol,
                          'destination': coalesce(destination_fqdn, destination_ip), 'port': destination_port,
                          'hits': hits}}, hits, {int(ctx.config.sample_events)})
            FROM j GROUP BY rec_id""", ctx.params).fetchall()
    finally:
        ctx.con.unregister("_rec_keys")
    by_id = {r.id: r for r in ctx.items}
    for rid, hits, srcs, first, last, days, hours, samples in rows:
        rec = by_id.get(rid)
        if rec is None:
            continue
        ev = rec.evidence
        ev.hits, ev.distinct_sources, ev.first_seen, ev.last_seen = int(hits), int(srcs), _iso(first), _iso(last)
        ev.days_seen, ev.hours_seen = int(days), int(hours)
        ev.sample_events = [{**s, "hour": _iso(s["hour"])} for s in samples]
        if rec.kind.startswith("add-"):
            rec.what_if = {"deny_to_allow_hits": int(hits), "deny_to_allow_sources": int(srcs), "allow_to_deny_hits": 0}
