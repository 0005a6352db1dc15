"""What-if replay: the window's flows through the current policy plus the proposals (Azure order)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window
from egresslens.recommend.engine import Recommendations, to_policy_rule
from egresslens.recommend.policy import (
    APP_PROTOCOLS,
    Flow,
    Rule,
    address_matches,
    rule_matches,
)


def distinct_flows(con: duckdb.DuckDBPyConnection, window: Window) -> pl.DataFrame:
    return con.sql(f"""
        SELECT kind, protocol, source_ip, destination_fqdn, destination_ip, destination_port, action, action_reason,
               rule_collection_group, rule_collection, rule, sum(hits)::BIGINT AS hits
        FROM ({FLOW_HOURS_SQL}) WHERE kind <> 'nat' GROUP BY ALL""",
        params={"start": window.start, "end": window.end}).pl()


def _first_match(rules: list[Rule], flows: pl.DataFrame, tags, dns) -> pl.Series:
    """Index of the first rule (in list order) matching each flow, or null. Columnar: source and
    destination matches are computed once per distinct source IP / destination, as 62-bit masks."""
    if not rules or flows.is_empty():
        return pl.Series("idx", [None] * flows.height, dtype=pl.Int64)
    dst_only = [replace(r, sources=["*"], source_ip_groups=[]) for r in rules]
    chunks = range((len(rules) + 61) // 62)
    srcs = flows.select("source_ip").unique()
    smasks = [[0] * srcs.height for _ in chunks]
    for i, ip in enumerate(srcs["source_ip"].to_list()):
        for j, r in enumerate(rules):
            if address_matches(ip, r.all_sources, None, None):
                smasks[j // 62][i] |= 1 << (j % 62)
    srcs = srcs.with_columns([pl.Series(f"s{c}", smasks[c], dtype=pl.Int64) for c in chunks])
    cols = ["kind", "protocol", "destination_fqdn", "destination_ip", "destination_port"]
    dests = flows.select(cols).unique()
    dmasks = [[0] * dests.height for _ in chunks]
    for i, (kind, proto, fqdn, dip, port) in enumerate(dests.iter_rows()):
        flow = Flow(kind, proto or "", "0.0.0.0", port, dip, fqdn)
        for j, r in enumerate(dst_only):
            if r.rule_type == "nat" or (r.rule_type == "application" and kind != "application" and flow.protocol not in APP_PROTOCOLS):
                continue
            if rule_matches(r, flow, service_tags=tags, dns=dns):
                dmasks[j // 62][i] |= 1 << (j % 62)
    dests = dests.with_columns([pl.Series(f"d{c}", dmasks[c], dtype=pl.Int64) for c in chunks])
    j = (flows.select("source_ip", *cols).with_row_index("_i")
         .join(srcs, on="source_ip", how="left", nulls_equal=True)
         .join(dests, on=cols, how="left", nulls_equal=True).sort("_i"))
    expr = pl.lit(None, dtype=pl.Int64)
    for c in reversed(list(chunks)):
        m = pl.col(f"s{c}") & pl.col(f"d{c}")
        low = (m & (-m)).cast(pl.Float64).log(2).round(0).cast(pl.Int64) + 62 * c
        expr = pl.when(m != 0).then(low).otherwise(expr)
    return j.select(expr.alias("idx"))["idx"]


def replay(con: duckdb.DuckDBPyConnection, window: Window, recs: Recommendations, policy: list[Rule] | None = None,
           service_tags=None, flows: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per distinct flow: logged action, action with the proposals added (broad rules kept), action once
    narrowed/removed rules are gone, and the proposal / rule responsible for the change.

    Flows denied by the default action become allowed when a proposal matches (only allow rules are
    added, so wherever they sit, Azure's first match for such a flow is a proposal). Flows allowed by a
    rule that is narrowed or removed are re-evaluated against the policy without it plus the proposals,
    in Azure's order (network before application, parent policy, group, collection, rule order)."""
    flows = distinct_flows(con, window) if flows is None else flows
    if flows.is_empty():
        return pl.DataFrame()
    proposals = sorted((to_policy_rule(r) for r in recs.items
                        if r.rule is not None and r.kind in ("add-application-rule", "add-network-rule", "narrow-rule")),
                       key=lambda r: r.order)
    gone = {(r.existing_rule["rule_collection_group"], r.existing_rule["rule_collection"], r.existing_rule["rule"])
            for r in recs.items if r.kind in ("narrow-rule", "remove-rule") and r.existing_rule}
    after = [r for r in sorted(list(policy or []) + proposals, key=lambda r: r.order) if r.key not in gone]
    tags = service_tags.networks() if service_tags is not None else None
    dns = {ip: set(n) for ip, n in recs.dns_attribution.items()}
    default_deny = (pl.col("action") == "Deny") & (pl.col("rule").is_null() | (pl.col("action_reason") == "Default Action"))
    gone_df = pl.DataFrame([{"rule_collection_group": g, "rule_collection": c, "rule": r, "_gone": True} for g, c, r in gone],
                           schema={"rule_collection_group": pl.Utf8, "rule_collection": pl.Utf8, "rule": pl.Utf8, "_gone": pl.Boolean})
    flows = flows.join(gone_df, on=["rule_collection_group", "rule_collection", "rule"], how="left", nulls_equal=True)
    flows = flows.with_columns(_gone=pl.col("_gone").fill_null(False) & (pl.col("action") == "Allow"))
    p_ids = pl.Series([r.proposed for r in proposals], dtype=pl.Utf8)
    idx = _first_match(proposals, flows, tags, dns)
    flows = flows.with_columns(_p=idx).with_columns(
        changed_by=pl.when(default_deny & pl.col("_p").is_not_null()).then(
            pl.col("_p").map_elements(lambda i: p_ids[i], return_dtype=pl.Utf8)).otherwise(None))
    flows = flows.with_columns(with_proposals=pl.when(pl.col("changed_by").is_not_null()).then(pl.lit("Allow"))
                               .otherwise(pl.col("action")))
    sub = flows.filter(pl.col("_gone"))
    a_allow = pl.Series([r.action == "Allow" for r in after], dtype=pl.Boolean)
    cut = pl.Series("_cut", [False] * flows.height, dtype=pl.Boolean)
    if sub.height:
        aidx = _first_match(after, sub, tags, dns)
        still = [i is not None and bool(a_allow[i]) for i in aidx.to_list()]
        cut_rows = sub.with_columns(_still=pl.Series(still, dtype=pl.Boolean)).filter(~pl.col("_still"))
        flows = flows.with_row_index("_row")
        cut_keys = set(sub.with_row_index("_k").filter(~pl.Series(still, dtype=pl.Boolean))["_k"].to_list())
        gone_rows = flows.filter(pl.col("_gone"))["_row"].to_list()
        cut_idx = {gone_rows[k] for k in cut_keys}
        cut = pl.Series("_cut", [i in cut_idx for i in range(flows.height)], dtype=pl.Boolean)
        flows = flows.drop("_row")
        del cut_rows
    flows = flows.with_columns(cut).with_columns(
        after_cleanup=pl.when(pl.col("_cut")).then(pl.lit("Deny")).otherwise(pl.col("with_proposals")),
        cut_by=pl.when(pl.col("_cut")).then(pl.concat_str(["rule_collection_group", "rule_collection", "rule"], separator="/"))
        .otherwise(None))
    return flows.drop("_p", "_gone", "_cut")


def summarise(recs: Recommendations, replayed: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per proposal id: Deny->Allow hits/flows; per narrowed/removed rule: Allow->Deny hits/flows."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"deny_to_allow_hits": 0, "deny_to_allow_flows": 0,
                                                          "allow_to_deny_hits": 0, "allow_to_deny_flows": 0})
    if replayed.is_empty():
        return {}
    for rid, hits, n in replayed.filter(pl.col("changed_by").is_not_null()).group_by("changed_by").agg(
            pl.col("hits").sum(), pl.len()).iter_rows():
        out[rid]["deny_to_allow_hits"] += int(hits)
        out[rid]["deny_to_allow_flows"] += int(n)
    keys = {"/".join(str(x) for x in (r.existing_rule["rule_collection_group"], r.existing_rule["rule_collection"],
                                       r.existing_rule["rule"])): r.id for r in recs.items if r.existing_rule}
    for rule, hits, n in replayed.filter(pl.col("cut_by").is_not_null()).group_by("cut_by").agg(
            pl.col("hits").sum(), pl.len()).iter_rows():
        rid = keys.get(rule, rule)
        out[rid]["allow_to_deny_hits"] += int(hits)
        out[rid]["allow_to_deny_flows"] += int(n)
    return dict(out)


def apply(recs: Recommendations, replayed: pl.DataFrame) -> None:
    """Store the replay's numbers on each recommendation (``what_if``)."""
    s = summarise(recs, replayed)
    for r in recs.items:
        if r.kind == "investigate":
            continue
        r.what_if = {**(r.what_if or {}), **s.get(r.id, {"deny_to_allow_hits": 0, "deny_to_allow_flows": 0,
                                                          "allow_to_deny_hits": 0, "allow_to_deny_flows": 0}),
                     "replayed": True}
