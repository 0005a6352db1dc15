"""The recommendation engine: store + window (+ policy) -> recommendations with evidence.

Hot path: DuckDB groups the window's flows (raw `flows` or hourly `flow_rollups`, via
`egresslens.analyse.FLOW_HOURS_SQL`; raw rows are grouped once per run into a temp table) to
distinct (source group, destination, protocol, port, action, rule) first; Python logic then runs
over those groups (thousands, not millions of rows).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import (
    FLOW_RAW_HOURS_SQL,
    Window,
    coverage,
    distinct_count,
    flow_hours_sql,
    newest_hour_may_be_incomplete,
)
from egresslens.recommend import bounds
from egresslens.recommend.application import denied_application
from egresslens.recommend.config import Config
from egresslens.recommend.context import Context, investigate
from egresslens.recommend.existing import analyse_existing
from egresslens.recommend.model import Evidence, Recommendation, iso, safe_name
from egresslens.recommend.netaggr import ServiceTags
from egresslens.recommend.network import attribute_ips, denied_network, name_danger
from egresslens.recommend.policy import Rule, covers_addresses, net_size
from egresslens.recommend.sources import assign_groups
from egresslens.suspicion import SUGGESTED_ACTION, Suspicion, assessment

NETWORK_RULE_BUDGET = 20_000
# The one behaviour for compromised sources in rules (docs/suspicion.md)
COMPROMISED_IN_RULES = ("while under investigation this address is cut out of the sources of every proposed rule, "
                        "and nothing only compromised sources asked for is proposed")
RAW_HOURS = "_rec_raw_hours"  # temp table: the window's raw flows grouped by hour, once per run
FLOW_HOURS = f"({flow_hours_sql(RAW_HOURS)})"  # FLOW_HOURS_SQL over it (needs the window's $start, $end)
MAX_RCGS = 60


@dataclass
class Recommendations:
    items: list[Recommendation]
    window: Window
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    rule_scores: list[dict[str, Any]] = field(default_factory=list)
    dns_attribution: dict[str, list[str]] = field(default_factory=dict)  # attributed IPs only
    suspicion: Suspicion | None = None
    # per destination IP a DNS query preceded at least once: the best name, its share of all the IP's
    # connections, counts, and whether that is a clear enough majority to attribute the IP
    attribution: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per firewall: its name, the policy it uses (and that policy's parents) and its proposals by kind
    firewalls: list[dict[str, Any]] = field(default_factory=list)
    summaries: set[str] = field(default_factory=set)  # ids of the "and N more" investigate items
    # (policy, group, collection, rule) of each rule inherited from a parent policy -> what this traffic says of it
    parent_verdicts: dict[tuple, dict[str, Any]] = field(default_factory=dict)

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
        sources=list(r.source_addresses), source_ip_groups=list(r.source_ip_groups),
        ip_group_members={k: list(v) for k, v in r.source_ip_group_members.items()},
        ip_protocols=[p.upper() for p in r.ip_protocols],
        destination_addresses=list(r.destination_addresses), destination_fqdns=list(r.destination_fqdns),
        destination_ports=list(r.destination_ports), app_protocols=protos, target_fqdns=list(r.target_fqdns),
        fqdn_tags=list(r.fqdn_tags), proposed=rec.id,
    )


def recommend(
    con: duckdb.DuckDBPyConnection,
    window: Window,
    policy: list[Rule] | None = None,
    config: Config | None = None,
    service_tags: ServiceTags | None = None,
    suspicion: Suspicion | None = None,
) -> Recommendations:
    """Recommendations for the window. ``policy``: rules from :func:`egresslens.recommend.policy.load_policy`.
    ``suspicion``: the window's assessment when the caller already has it (a fleet assesses every firewall's
    traffic once, so a name withheld behind one firewall taints whoever reached it behind another)."""
    config = config or Config()
    ctx = Context(con, window, config, policy, service_tags)
    if newest_hour_may_be_incomplete(window):
        ctx.warnings.append("the newest hour of the window may be incomplete (logs arrive minutes late)")
    ctx.warnings += list(getattr(policy, "warnings", None) or [])  # what reading the policy could not resolve

    # 1. what must never be allowed, and which sources are compromised: the one suspicion model (look-alikes
    # of the names the policy allows are withheld too)
    susp = assessment(con, window, config.suspicion, given=suspicion, references=allowed_names(policy))
    ctx.susp = susp
    # the hours that hold data for this run's traffic (a fleet's assessment spans every firewall)
    cover = coverage(con, window) if susp is suspicion or susp.coverage is None else susp.coverage
    ctx.set_coverage(cover)
    if not cover.complete:
        ctx.warnings.append(f"{cover.describe()}: hits, support, 'unused' and 'first seen' speak for those hours only")

    # 2. the window's hourly flow groups, once (every later pass reads them); distinct sources -> groups
    con.execute(f"CREATE OR REPLACE TEMP TABLE {RAW_HOURS} AS {FLOW_RAW_HOURS_SQL}", ctx.params).fetchall()
    try:
        return _recommend(ctx, susp)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {RAW_HOURS}")


def _recommend(ctx: Context, susp: Suspicion) -> Recommendations:
    con, config, window = ctx.con, ctx.config, ctx.window
    src_rows = con.execute(f"SELECT DISTINCT source_ip FROM {FLOW_HOURS} WHERE source_ip IS NOT NULL",
                           ctx.params).fetchall()
    mapping, group_cidrs = assign_groups([r[0] for r in src_rows], config)
    ctx.group_cidrs = group_cidrs
    srcmap = pl.DataFrame({"source_ip": list(mapping), "sgroup": list(mapping.values()),
                           "compromised": [susp.is_compromised(ip) for ip in mapping],
                           "since": [susp.first_contact(ip) for ip in mapping]},
                          schema={"source_ip": pl.Utf8, "sgroup": pl.Utf8, "compromised": pl.Boolean,
                                  "since": pl.Datetime("us")})
    con.register("_rec_srcmap", srcmap.to_arrow())
    try:
        # every flow group of the window stays in DuckDB; Python sees what `bounds` selects. Distinct
        # sources and hours: HyperLogLog sketches are fast over few groups, but a sketch per group of a
        # million (a day of a million names) overruns the memory budget, where exact counts spill.
        distinct = distinct_count(con, FLOW_HOURS, ctx.params)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE {bounds.GROUPS} AS
            SELECT m.sgroup, m.compromised, f.kind, f.protocol, f.destination_fqdn, f.destination_ip, f.destination_port,
                   f.action, hash(m.sgroup, m.compromised, f.kind, f.protocol, f.destination_fqdn, f.destination_ip,
                                  f.destination_port) AS gkey,
                   f.action_reason, f.rule_collection_group, f.rule_collection, f.rule,
                   sum(f.hits)::BIGINT AS hits, {distinct}f.source_ip)::BIGINT AS sources,
                   min(f.first_seen) AS first_seen, max(f.last_seen) AS last_seen,
                   {distinct}f.hour)::BIGINT AS hours, {distinct}f.hour::DATE)::BIGINT AS days,
                   -- hits in hours at or after the source's first contact with something withheld
                   coalesce(sum(f.hits) FILTER (WHERE f.last_seen >= m.since), 0)::BIGINT AS post_hits,
                   min(m.since) AS since
            FROM {FLOW_HOURS} f JOIN _rec_srcmap m USING (source_ip)
            GROUP BY ALL""", ctx.params).fetchall()
        ctx.stats_rows, has_net = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE kind = 'network') FROM {bounds.GROUPS}").fetchall()[0]
        _tainted_requests(ctx)
        dns_map, ctx.dns_detail = attribute_ips(ctx) if has_net else ({}, {})
        ctx.dns_map = dns_map
        denied = bounds.denied_groups(ctx, name_danger(ctx, dns_map))
        denied_application(ctx, denied)
        denied_network(ctx, denied, dns_map)
        del denied
        allowed, broad = bounds.allowed_groups(ctx)
        scores = analyse_existing(ctx, allowed, broad)  # narrow or remove allow rules
        del allowed
        _suggest_ip_groups(ctx)
        _limits(ctx)
        _suspicion_items(ctx, susp)
        _fill_evidence(ctx)
    finally:
        con.unregister("_rec_srcmap")
        for t in (bounds.GROUPS, bounds.TAINT):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    stats = {"flow_groups": ctx.stats_rows, "source_groups": len(set(mapping.values())),
             "by_kind": {k: sum(1 for r in ctx.items if r.kind == k) for k in
                         ("add-application-rule", "add-network-rule", "narrow-rule", "remove-rule", "investigate")},
             "kept_required": ctx.kept_required, "coverage": ctx.coverage.to_json()}
    sort_items(ctx.items, ctx.summaries)
    return Recommendations(ctx.items, window, ctx.warnings, stats, scores,
                           {ip: sorted(n) for ip, n in dns_map.items()}, susp, ctx.dns_detail, summaries=ctx.summaries,
                           parent_verdicts=ctx.parent_verdicts)


KIND_ORDER = {"add-application-rule": 0, "add-network-rule": 1, "narrow-rule": 2, "remove-rule": 3, "investigate": 4}


def sort_items(items: list[Recommendation], summaries: set[str] | frozenset[str] = frozenset()) -> None:
    """The output order: by kind, the busiest first within a kind, and each "and N more" item (`summaries`)
    after the items it follows."""
    items.sort(key=lambda r: (KIND_ORDER[r.kind], r.id in summaries, -(r.evidence.hits or 0), r.id))


def allowed_names(policy: list[Rule] | None) -> list[str]:
    """The names the policy allows (references for look-alikes)."""
    return sorted({n for r in policy or [] if r.action == "Allow" for n in r.target_fqdns + r.destination_fqdns})


def _tainted_requests(ctx: Context) -> None:
    """Temp table bounds.TAINT: (kind, destination, protocol, port) -> compromised sources denied there
    (`bounds` reads the rows of the destinations it keeps into ctx.taint)."""
    where = "m.compromised" if ctx.susp is not None and ctx.susp.compromised else "false"
    ctx.con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {bounds.TAINT} AS
        SELECT f.kind, coalesce(f.destination_fqdn, f.destination_ip) AS dest, f.protocol, f.destination_port,
               list(DISTINCT f.source_ip ORDER BY f.source_ip) AS ips
        FROM {FLOW_HOURS} f JOIN _rec_srcmap m USING (source_ip)
        WHERE {where} AND f.action = 'Deny' GROUP BY ALL""", ctx.params).fetchall()


def _suspicion_items(ctx: Context, susp: Suspicion) -> None:
    """Tunnelling zones and compromised sources are always listed, whether or not a flow was denied."""
    for r in susp.tunnel_zones.iter_rows(named=True):
        srcs = r["sources"] or []
        investigate(ctx, f"DNS tunnelling under {r['subject']}",
                    f"{r['detail']}; owner zone {r['domain']} is withheld from every proposal", Evidence(
                        hits=r["queries"] or 0, distinct_sources=len(srcs), first_seen=iso(r["first_seen"]),
                        last_seen=iso(r["last_seen"]), destinations=[r["subject"]] + ([r["domain"]] if r["domain"] else []),
                        notes=[f"queried by {', '.join(srcs)}"] if srcs else []),
                    "high", key=("tunnel", r["subject"]),
                    rollout=[f"add a deny rule for {r['subject']} and *.{r['subject']}", SUGGESTED_ACTION])
    for r in susp.sources.iter_rows(named=True):
        ip = r["source_ip"]
        ev = r["evidence"]
        subjects = sorted({e["subject"] for e in ev if e["subject"]})
        cut = ctx.cut_from.get(ip, 0)
        investigate(ctx, f"Compromised source {ip}: isolate it", susp.evidence_text(ip),
                    Evidence(hits=sum(e["events"] or 0 for e in ev), distinct_sources=1, first_seen=iso(r["first_seen"]),
                             last_seen=iso(r["last_seen"]), days_seen=r["days_seen"], hours_seen=r["hours_seen"],
                             destinations=subjects[:20],
                             notes=[f"{len(ev)} piece(s) of evidence against {len(subjects)} withheld subject(s)",
                                    COMPROMISED_IN_RULES + (f" (cut out of {cut} proposed rule(s) here)" if cut else "")]),
                    "high", key=("compromised", ip),
                    rollout=[SUGGESTED_ACTION] + [f"add a deny rule for {s}" for s in subjects[:10]]
                    + ([f"and {len(subjects) - 10} more withheld subject(s) (see suspicion.sources)"]
                       if len(subjects) > 10 else []))


# ------------------------------------------------------------------ limits

IP_GROUP_SLACK = 4  # an existing IP Group may hold at most this many times the addresses a proposal needs


def _existing_ip_groups(ctx: Context) -> None:
    """A proposal whose sources an existing IP Group holds (and not much more) names the group instead
    of repeating its addresses; the rule then allows the group's members, which the what-if replays."""
    groups = list(getattr(ctx.policy, "all_ip_groups", None) or [])
    if not groups:
        return
    for r in ctx.items:
        if r.rule is None or not r.kind.startswith("add-") or not r.rule.source_addresses or "*" in r.rule.source_addresses:
            continue
        need = net_size(r.rule.source_addresses)
        fits = [g for g in groups if g.addresses and covers_addresses(g.addresses, r.rule.source_addresses)
                and net_size(g.addresses) <= IP_GROUP_SLACK * need]
        if not fits:
            continue
        g = min(fits, key=lambda g: (net_size(g.addresses), g.name))
        r.rule.source_ip_groups = [g.id]
        r.rule.source_ip_group_members = {g.id: list(g.addresses)}
        r.rule.source_addresses = []
        r.evidence.notes.append(f"sources use the existing IP Group {g.name} ({len(g.addresses)} entries), which holds "
                                "every observed source subnet")


def _suggest_ip_groups(ctx: Context) -> None:
    _existing_ip_groups(ctx)
    counts: dict[tuple[str, ...], list[Recommendation]] = defaultdict(list)
    for r in ctx.items:
        if (r.rule is not None and r.kind.startswith("add-") and len(r.rule.source_addresses) > 1
                and not r.rule.source_ip_groups):
            counts[tuple(r.rule.source_addresses)].append(r)
    for srcs, recs in counts.items():
        if len(recs) >= ctx.config.ip_group_min_uses:
            name = safe_name(f"ipg-{recs[0].rule.source_group}")
            for r in recs:
                r.rule.source_ip_group = name
                r.evidence.notes.append(f"source set {', '.join(srcs[:4])} is used by {len(recs)} proposed rules: "
                                        f"create IP Group {name} (counts as one source in the 20,000 budget)")


def _limits(ctx: Context) -> None:
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
    _dns_proxy(ctx)
    if ctx.policy:
        n = len({r.rule_collection_group for r in ctx.policy if not r.parent})
        if n + 1 > MAX_RCGS:
            ctx.warnings.append(f"the policy already has {n} rule collection groups (limit {MAX_RCGS}): "
                                f"put the proposals into an existing group instead of {ctx.config.rule_collection_group}")


def _dns_proxy(ctx: Context) -> None:
    """Network rules with FQDNs need DNS proxy on the firewall (`enableProxy`), and Azure supports FQDNs in
    network rules only when `requireProxyForNetworkRules` is true: say so where either is off (or not known)."""
    proxy = getattr(ctx.policy, "dns_proxy", None)
    require = getattr(ctx.policy, "require_proxy", None)
    classic = bool(getattr(ctx.policy, "classic", False))
    target = getattr(ctx.policy, "target", "") or "the policy"
    where = "the firewall's additionalProperties (Network.DNS.EnableProxy)" if classic else "the policy's DNS settings"
    required_where = ("the firewall's additionalProperties (Network.DNS.RequireProxyForNetworkRules)" if classic
                      else "the policy's DNS settings")
    existing = sorted({f"{r.rule_collection_group}/{r.rule_collection}/{r.name}" if r.rule_collection_group
                       else f"{r.rule_collection}/{r.name}" for r in ctx.policy or []
                       if r.rule_type == "network" and r.destination_fqdns})
    listed = ", ".join(existing[:5]) + ("..." if len(existing) > 5 else "")
    if proxy is False and existing:
        ctx.warnings.append(f"DNS proxy is off on {target}, so its network rules with FQDNs ({listed}) resolve names "
                            f"apart from the clients and may miss their traffic: enable DNS proxy in {where}")
    if require is False and existing:
        ctx.warnings.append(f"{target} does not require DNS proxy for network rules (requireProxyForNetworkRules is "
                            f"false), and Azure supports FQDNs in network rules only when it is true: its network "
                            f"rules with FQDNs ({listed}) may match nothing; set it to true in {required_where}")
    steps = ([f"enable DNS proxy on {target} ({where}) before adding this rule"] if proxy is False else []) + (
        [f"set requireProxyForNetworkRules to true on {target} ({required_where}) before adding this rule"]
        if require is False else [])
    for r in ctx.items:
        if r.rule is None or r.rule.rule_type != "NetworkRule" or not r.rule.destination_fqdns:
            continue
        if proxy is True and require is True:
            continue
        off = [s for s, v in (("DNS proxy", proxy), ("requireProxyForNetworkRules", require)) if v is False]
        unknown = [s for s, v in (("DNS proxy", proxy), ("requireProxyForNetworkRules", require)) if v is None]
        r.evidence.notes.append("network rules with FQDNs need DNS proxy on the firewall and requireProxyForNetworkRules"
                                + (f" ({' and '.join(off)} off: turn {'them' if len(off) > 1 else 'it'} on first)" if off
                                   else f" (check that {' and '.join(unknown)} {'are' if len(unknown) > 1 else 'is'} on)"))
        r.rollout[:0] = steps


# ------------------------------------------------------------------ evidence

def _fill_evidence(ctx: Context) -> None:
    """Exact evidence per recommendation: one more pass over the window, joined on the mapped keys."""
    if not ctx.evidence_keys:
        return
    keys = pl.DataFrame(ctx.evidence_keys, schema={"gkey": pl.UInt64, "rec_id": pl.Utf8}).unique()
    ctx.con.register("_rec_keys", keys.to_arrow())
    try:
        rows = ctx.con.execute(f"""
            WITH f AS (SELECT f.*, hash(m.sgroup, m.compromised, f.kind, f.protocol, f.destination_fqdn,
                                        f.destination_ip, f.destination_port) AS gkey
                       FROM {FLOW_HOURS} f JOIN _rec_srcmap m USING (source_ip) WHERE f.action = 'Deny'),
            j AS (SELECT k.rec_id, f.* FROM f JOIN _rec_keys k USING (gkey))
            SELECT rec_id, sum(hits)::BIGINT, approx_count_distinct(source_ip)::BIGINT, min(first_seen), max(last_seen),
                   approx_count_distinct(hour::DATE)::BIGINT, approx_count_distinct(hour)::BIGINT,
                   max_by({{'hour': hour, 'source_ip': source_ip, 'protocol': protocol,
                          'destination': coalesce(destination_fqdn, destination_ip), 'port': destination_port,
                          'hits': hits}}, {{'h': hits, 't': hour, 's': source_ip, 'd': coalesce(destination_fqdn, destination_ip),
                                          'p': destination_port}}, {int(ctx.config.sample_events)})
            FROM j GROUP BY rec_id""", ctx.params).fetchall()
    finally:
        ctx.con.unregister("_rec_keys")
    by_id = {r.id: r for r in ctx.items}
    for rid, hits, srcs, first, last, days, hours, samples in rows:
        rec = by_id.get(rid)
        if rec is None:
            continue
        ev = rec.evidence
        ev.hits, ev.distinct_sources, ev.first_seen, ev.last_seen = int(hits), int(srcs), iso(first), iso(last)
        ev.days_seen, ev.hours_seen = int(days), int(hours)
        ev.sample_events = [{**s, "hour": iso(s["hour"])} for s in samples]
        if rec.kind.startswith("add-"):
            rec.what_if = {"deny_to_allow_hits": int(hits), "deny_to_allow_sources": int(srcs), "allow_to_deny_hits": 0}
