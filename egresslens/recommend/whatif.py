"""What-if replay: the window's flows through the current policy plus the proposals (Azure order)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window
from egresslens.recommend.engine import Recommendations, to_policy_rule
from egresslens.recommend.policy import Flow, Rule, evaluate


def distinct_flows(con: duckdb.DuckDBPyConnection, window: Window) -> pl.DataFrame:
    return con.sql(f"""
        SELECT kind, protocol, source_ip, destination_fqdn, destination_ip, destination_port, action, action_reason,
               rule_collection_group, rule_collection, rule, sum(hits)::BIGINT AS hits
        FROM ({FLOW_HOURS_SQL}) WHERE kind <> 'nat' GROUP BY ALL""",
        params={"start": window.start, "end": window.end}).pl()


def replay(con: duckdb.DuckDBPyConnection, window: Window, recs: Recommendations, policy: list[Rule] | None = None,
           service_tags=None, flows: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per distinct flow: logged action, action with the proposals added (broad rules kept), action once
    narrowed/removed rules are gone, and the proposal / rule responsible for the change."""
    flows = distinct_flows(con, window) if flows is None else flows
    proposals = [to_policy_rule(r) for r in recs.items if r.rule is not None and r.kind in ("add-application-rule", "add-network-rule", "narrow-rule")]
    gone = {(r.existing_rule["rule_collection_group"], r.existing_rule["rule_collection"], r.existing_rule["rule"])
            for r in recs.items if r.kind in ("narrow-rule", "remove-rule") and r.existing_rule}
    base = list(policy or [])
    added = sorted(base + proposals, key=lambda r: r.order)
    after = [r for r in added if r.key not in gone]
    tags = service_tags.networks() if service_tags is not None else None
    dns = {ip: set(n) for ip, n in recs.dns_attribution.items()}
    rows: list[dict[str, Any]] = []
    for f in flows.iter_rows(named=True):
        flow = Flow(f["kind"], f["protocol"] or "", f["source_ip"] or "", f["destination_port"], f["destination_ip"], f["destination_fqdn"])
        logged = f["action"]
        default_deny = logged == "Deny" and (f["rule"] is None or f["action_reason"] == "Default Action")
        new_action, by = logged, None
        if default_deny:
            m = evaluate(proposals, flow, service_tags=tags, dns=dns)
            if m is not None:
                new_action, by = "Allow", m.proposed
        final_action, final_by = new_action, by
        logged_key = (f["rule_collection_group"], f["rule_collection"], f["rule"])
        if logged == "Allow" and logged_key in gone:
            m = evaluate(after, flow, service_tags=tags, dns=dns)
            if m is None or m.action != "Allow":
                final_action, final_by = "Deny", "/".join(str(x) for x in logged_key)
        rows.append({**f, "with_proposals": new_action, "changed_by": by, "after_cleanup": final_action,
                     "cut_by": final_by if final_action != new_action else None})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


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
