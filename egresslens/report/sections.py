"""The data of each report section, computed in DuckDB/Polars and aggregated before anything is drawn.

Each function returns a :class:`~egresslens.report.model.Section` with its tables, findings, the
(small, aggregated) frames its charts are drawn from, and numbers for the JSON summary. The
analyses themselves (recommendations, SNAT, DNS) come from their own modules; this module only
selects and joins what the morning reader needs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window, distinct_count, frame, run_sql
from egresslens.escape import shell, sql_string
from egresslens.report.model import (
    CODE,
    COMMAND,
    CRITICAL,
    FINDING,
    INT,
    PCT,
    TIME,
    WARNING,
    Section,
    Table,
    counted,
)

STALE_AFTER = timedelta(hours=3)  # newest event older than this when the report is written: a warning
TOP_GROUPS = 8  # source groups drawn one by one; the rest are summed


@dataclass
class Inputs:
    con: duckdb.DuckDBPyConnection
    window: Window
    baseline: Window | None
    generated_at: datetime
    db: str | None = None  # store path, for the drilldown commands
    since: str = "24h"  # the report's --since, or its window as flags ("--start ... --end ...")

    def distinct(self) -> str:
        """`analyse.distinct_count` of the report window's flow hours, computed once."""
        if not hasattr(self, "_distinct"):
            self._distinct = distinct_count(self.con, FLOW_HOURS_SQL, self.params())
        return self._distinct

    def params(self, window: Window | None = None) -> dict[str, Any]:
        w = window or self.window
        return {"start": w.start, "end": w.end}

    def drill(self, kind: str, subject: Any) -> str:
        """The command that opens the drilldown page of one subject of this report (kind: fqdn, destination,
        source or rule; a destination that is not an IP address is an FQDN)."""
        if kind == "destination" and not _is_ip(subject):
            kind = "fqdn"
        db = f" --db {shell(self.db)}" if self.db else ""
        window = self.since if self.since.startswith("--") else f"--since {self.since}"
        return f"egresslens drilldown --kind {kind} {shell(subject)} {window}{db}"


def _is_ip(text: Any) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return True


def _dest(alias: str = "") -> str:
    p = f"{alias}." if alias else ""
    return f"coalesce({p}destination_fqdn, {p}destination_ip)"


# -- data freshness ------------------------------------------------------------------------------

_LAST_EVENTS_SQL = """
SELECT 'flows' AS "table", firewall, max(time) AS last_event,
       count(*) FILTER (WHERE time >= $start AND time < $end) AS rows_in_window FROM flows GROUP BY ALL
UNION ALL SELECT 'flow_rollups', firewall, max(last_seen), count(*) FILTER (WHERE hour >= $start AND hour < $end)
  FROM flow_rollups GROUP BY ALL
UNION ALL SELECT 'dns_queries', firewall, max(time), count(*) FILTER (WHERE time >= $start AND time < $end)
  FROM dns_queries GROUP BY ALL
UNION ALL SELECT 'dns_rollups', firewall, max(last_seen), count(*) FILTER (WHERE hour >= $start AND hour < $end)
  FROM dns_rollups GROUP BY ALL
UNION ALL SELECT 'threats', firewall, max(time), count(*) FILTER (WHERE time >= $start AND time < $end)
  FROM threats GROUP BY ALL
UNION ALL SELECT 'metrics', firewall, max(time), count(*) FILTER (WHERE time >= $start AND time < $end)
  FROM metrics GROUP BY ALL
ORDER BY 1, 2
"""


def _gaps(hourly: pl.DataFrame) -> pl.DataFrame:
    """Runs of hours without any flow event, per firewall, between its first and last hour."""
    out = []
    for fw, hours in hourly.group_by("firewall"):
        seen = set(hours["hour"].to_list())
        h, last = min(seen), max(seen)
        start = None
        while h <= last:
            if h not in seen and start is None:
                start = h
            elif h in seen and start is not None:
                out.append({"firewall": fw[0], "from": start, "to": h, "hours": int((h - start) / timedelta(hours=1))})
                start = None
            h += timedelta(hours=1)
    return pl.DataFrame(out, schema={"firewall": pl.String, "from": pl.Datetime("us"), "to": pl.Datetime("us"),
                                     "hours": pl.Int64}).sort("hours", descending=True)


def freshness(inp: Inputs) -> Section:
    s = Section("freshness", "Data freshness", "Last event per table and firewall, gaps in ingestion, the last "
                "ingest runs and quarantined records.")
    last = frame(inp.con, _LAST_EVENTS_SQL, inp.params())
    hourly = frame(inp.con, f"""SELECT firewall, hour, sum(hits)::BIGINT AS events FROM ({FLOW_HOURS_SQL})
                               GROUP BY ALL ORDER BY firewall, hour""", inp.params())
    gaps = _gaps(hourly) if hourly.height else _gaps(hourly.clear())
    runs = frame(inp.con, """SELECT run_id, started_at, finished_at, source_kind, status, records_read, stored,
                                    duplicates, quarantined, message
                             FROM ingest_runs ORDER BY run_id DESC LIMIT 10""")
    good = inp.con.execute("SELECT max(finished_at) FROM ingest_runs WHERE status = 'completed'").fetchall()[0][0]
    quarantine = frame(inp.con, """SELECT reason, count(*)::BIGINT AS records, max(quarantined_at) AS last_quarantined
                                   FROM quarantine GROUP BY reason ORDER BY records DESC""")
    recent_q = inp.con.execute("SELECT count(*) FROM quarantine WHERE quarantined_at >= ?",
                               [inp.generated_at - (inp.window.end - inp.window.start)]).fetchall()[0][0]
    newest = last["last_event"].max() if last.height else None
    s.facts.append(f"Last good ingest: {good:%Y-%m-%d %H:%M} UTC." if good else "No ingest run has completed yet.")
    if runs.height and runs["status"][0] not in ("completed", "running"):
        s.add(WARNING, f"the last ingest run ({runs['run_id'][0]}, {runs['source_kind'][0]}) ended "
                       f"{runs['status'][0]}: {runs['message'][0] or 'no message'}")
    if newest is None:
        s.add(WARNING, "the store holds no events")
    elif inp.generated_at - newest > STALE_AFTER:
        age = (inp.generated_at - newest).total_seconds() / 3600
        s.add(WARNING, f"the newest event is {age:,.1f} hours old ({newest:%Y-%m-%d %H:%M} UTC)")
    for g in gaps.head(5).iter_rows(named=True):
        s.add(WARNING, f"no flow events from {g['firewall']} for {g['hours']} h from {g['from']:%Y-%m-%d %H:%M} UTC")
    if recent_q:
        s.add(WARNING, f"{recent_q:,} records were quarantined by recent ingest runs (see the reasons below)")
    s.tables += [
        Table("Last event per table and firewall", last, {"last_event": TIME, "rows_in_window": INT}),
        Table("Gaps in ingestion (hours without flow events)", gaps, {"from": TIME, "to": TIME, "hours": INT}),
        Table("Last ingest runs", runs, {"started_at": TIME, "finished_at": TIME, "records_read": INT, "stored": INT,
                                         "duplicates": INT, "quarantined": INT}),
        Table("Quarantined records by reason", quarantine, {"records": INT, "last_quarantined": TIME}),
    ]
    s.data["hourly"] = hourly
    s.summary = {"last_good_ingest": good, "newest_event": newest, "gaps": gaps.height,
                 "quarantined_total": int(quarantine["records"].sum() or 0) if quarantine.height else 0,
                 "quarantined_recent": int(recent_q)}
    return s


# -- egress over time ------------------------------------------------------------------------------

def egress(inp: Inputs) -> Section:
    from egresslens.recommend import Config
    from egresslens.recommend.sources import assign_groups

    s = Section("egress", "Egress over time", "Allowed and denied connections per hour, per source group "
                "(configured groups, else adjacent /24 blocks of the observed sources).")
    ips = [r[0] for r in inp.con.execute(f"SELECT DISTINCT source_ip FROM ({FLOW_HOURS_SQL})",
                                         inp.params()).fetchall()]
    mapping, _ = assign_groups([ip for ip in ips if ip is not None], Config())
    groups = pl.DataFrame({"source_ip": list(mapping), "source_group": list(mapping.values())},
                          schema={"source_ip": pl.String, "source_group": pl.String})
    inp.con.register("_report_groups", groups.to_arrow())
    try:
        hourly = frame(inp.con, f"""
          SELECT f.hour, coalesce(g.source_group, 'no source') AS source_group, f.action,
                 sum(f.hits)::BIGINT AS hits, count(DISTINCT f.source_ip)::BIGINT AS sources
          FROM ({FLOW_HOURS_SQL}) f LEFT JOIN _report_groups g USING (source_ip)
          GROUP BY ALL ORDER BY hour""", inp.params())
    finally:
        inp.con.unregister("_report_groups")
    per_group = (hourly.group_by("source_group").agg(
        pl.col("hits").filter(pl.col("action") == "Allow").sum().alias("allowed"),
        pl.col("hits").filter(pl.col("action") == "Deny").sum().alias("denied"),
        pl.col("sources").max().alias("sources_per_hour"))
        .with_columns(pl.when(pl.col("allowed") + pl.col("denied") > 0)
                      .then(pl.col("denied") / (pl.col("allowed") + pl.col("denied"))).alias("deny_share"))
        # by volume, ties by name: the same order (and the same top groups) on every run
        .sort(pl.col("allowed") + pl.col("denied"), pl.col("source_group"), descending=[True, False]))
    # groups with neither allowed nor denied connections (inbound DNAT, alerts only) are counted, not listed
    others = per_group.filter(pl.col("allowed") + pl.col("denied") == 0).height
    per_group = per_group.filter(pl.col("allowed") + pl.col("denied") > 0)
    top = per_group["source_group"].head(TOP_GROUPS)
    drawn = hourly.with_columns(pl.when(pl.col("source_group").is_in(top.implode())).then(pl.col("source_group"))
                                .otherwise(pl.lit("other groups")).alias("source_group"))
    s.data["by_action"] = hourly.group_by("hour", "action").agg(pl.col("hits").sum()).sort("hour", "action")
    s.data["denied_by_group"] = (drawn.filter(pl.col("action") == "Deny").group_by("hour", "source_group")
                                 .agg(pl.col("hits").sum()).sort("hour", "source_group"))
    allowed = int(per_group["allowed"].sum() or 0)
    denied = int(per_group["denied"].sum() or 0)
    s.facts.append(f"{allowed:,} allowed and {denied:,} denied connections from {per_group.height} source groups.")
    s.tables.append(Table("Per source group", per_group, {"allowed": INT, "denied": INT, "sources_per_hour": INT,
                                                          "deny_share": PCT},
                          note=f"{others} more source groups had neither allowed nor denied connections (DNAT or "
                               "alerts only) and are not listed" if others else ""))
    s.summary = {"allowed": allowed, "denied": denied, "source_groups": per_group.height}
    return s


# -- what changed ----------------------------------------------------------------------------------

def _per_destination(inp: Inputs, window: Window, table: str) -> None:
    """Temp table `table`: allowed and denied hits and sources per (destination, port) of `window`."""
    run_sql(inp.con, f"""
      CREATE OR REPLACE TEMP TABLE {table} AS
      SELECT {_dest()} AS destination, destination_port AS port,
             coalesce(sum(hits) FILTER (WHERE action = 'Allow'), 0)::BIGINT AS allowed,
             coalesce(sum(hits) FILTER (WHERE action = 'Deny'), 0)::BIGINT AS denied,
             {inp.distinct()}source_ip)::BIGINT AS sources
      FROM ({FLOW_HOURS_SQL}) WHERE {_dest()} IS NOT NULL GROUP BY ALL""", inp.params(window))


def _per_rule(inp: Inputs, window: Window) -> pl.DataFrame:
    return frame(inp.con, f"""
      SELECT rule_collection_group, rule_collection, rule, sum(hits)::BIGINT AS hits
      FROM ({FLOW_HOURS_SQL}) WHERE rule IS NOT NULL GROUP BY ALL""", inp.params(window))


# The kinds of change, in the order they are listed, and the condition on the joined (now, before) row.
_CHANGES = {
    "denied now, allowed before": "n.denied > 0 AND coalesce(b.denied, 0) = 0 AND coalesce(b.allowed, 0) > 0",
    "newly denied": "n.denied > 0 AND coalesce(b.denied, 0) = 0 AND coalesce(b.allowed, 0) = 0",
    "newly allowed": "n.allowed > 0 AND coalesce(b.allowed, 0) = 0",
    "newly seen (allowed)": "b.sources IS NULL AND n.denied = 0",
}
MAX_CHANGES = 200  # destinations listed per kind of change (and critical findings one by one); the rest counted


def changes(inp: Inputs) -> Section:
    s = Section("changes", "What changed", "Destinations newly denied, newly allowed and newly seen, and rules "
                "whose hits dropped to zero, against the comparison window just before this one.")
    empty = {"kind": pl.String, "destination": pl.String, "port": pl.Int32, "hits_now": pl.Int64,
             "allowed_before": pl.Int64, "sources": pl.Int64, "drilldown": pl.String}
    if inp.baseline is None:
        s.facts.append("No comparison window was asked for (--compare-to).")
        s.data["counts"] = pl.DataFrame(schema={"change": pl.String, "count": pl.Int64})
        return s
    try:
        _per_destination(inp, inp.window, "_report_now")
        _per_destination(inp, inp.baseline, "_report_before")
        s.facts.append(f"Compared with {inp.baseline.describe()}.")
        if not inp.con.execute("SELECT count(*) FROM (SELECT 1 FROM _report_before LIMIT 1)").fetchall()[0][0]:
            s.facts.append("The store holds no traffic in the comparison window: nothing to compare yet.")
            s.data["counts"] = pl.DataFrame(schema={"change": pl.String, "count": pl.Int64})
            s.tables.append(Table("Changes", pl.DataFrame(schema=empty)))
            return s
        joined = ("FROM _report_now n LEFT JOIN _report_before b ON b.destination = n.destination "
                  "AND b.port IS NOT DISTINCT FROM n.port")
        counts = dict(inp.con.execute(" UNION ALL ".join(
            f"SELECT {sql_string(k)}, count(*) {joined} WHERE {cond}"
            for k, cond in {**_CHANGES, "newly seen": "b.sources IS NULL"}.items())).fetchall())
        # every change kind's busiest destinations (hits now: denied for the denied kinds, else allowed)
        table = frame(inp.con, " UNION ALL ".join(f"""
          (SELECT {sql_string(k)} AS kind, n.destination, n.port,
                  {'n.denied' if 'denied' in k else 'n.allowed'} AS hits_now,
                  coalesce(b.allowed, 0)::BIGINT AS allowed_before, n.sources
           {joined} WHERE {cond} ORDER BY hits_now DESC, n.destination, n.port LIMIT {MAX_CHANGES})"""
                                                       for k, cond in _CHANGES.items()))
    finally:
        for t in ("_report_now", "_report_before"):
            run_sql(inp.con, f"DROP TABLE IF EXISTS {t}")
    order = {k: i for i, k in enumerate(_CHANGES)}
    table = (table.with_columns(pl.col("kind").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
             .sort(["_o", "hits_now", "destination"], descending=[False, True, False]).drop("_o"))
    table = table.with_columns(pl.col("destination").map_elements(lambda d: inp.drill("destination", d),
                                                                  return_dtype=pl.String).alias("drilldown"))
    was_allowed = counts["denied now, allowed before"]
    newly_denied = was_allowed + counts["newly denied"]
    rules_now, rules_before = _per_rule(inp, inp.window), _per_rule(inp, inp.baseline)
    dropped = (rules_before.join(rules_now, on=["rule_collection_group", "rule_collection", "rule"], how="anti",
                                 nulls_equal=True).rename({"hits": "hits_before"}).sort("hits_before", descending=True))
    for r in table.filter(pl.col("kind") == "denied now, allowed before").iter_rows(named=True):
        s.add(CRITICAL, f"{r['destination']}:{r['port']} is denied now ({r['hits_now']:,} hits from {r['sources']} "
                        f"sources) but was allowed in the comparison window")
    if was_allowed > MAX_CHANGES:
        more = was_allowed - MAX_CHANGES
        s.add(CRITICAL, f"and {counted(more, 'more destination')} denied now that {'was' if more == 1 else 'were'} "
                        "allowed in the comparison window")
    if newly_denied > was_allowed:
        n = newly_denied - was_allowed
        s.add(WARNING, f"{counted(n, 'destination')} {'is' if n == 1 else 'are'} newly denied")
    if dropped.height:
        s.add(WARNING, f"{counted(dropped.height, 'rule')} had hits in the comparison window and none now")
    newly_seen = counts.pop("newly seen")
    s.data["counts"] = pl.DataFrame({"change": ["denied now, allowed before", "newly denied", "newly allowed",
                                                "newly seen", "rules dropped to zero"],
                                     "count": [was_allowed, newly_denied, counts["newly allowed"], newly_seen,
                                               dropped.height]})
    total = sum(counts.values())
    s.tables += [Table("Destinations that changed", table, {"hits_now": INT, "allowed_before": INT,
                                                            "sources": INT, "drilldown": COMMAND}, total=total,
                       note=f"the {MAX_CHANGES} busiest of each kind are kept" if table.height < total else ""),
                 Table("Rules whose hits dropped to zero", dropped, {"hits_before": INT})]
    s.summary = {"denied_now_allowed_before": was_allowed, "newly_denied": newly_denied,
                 "newly_allowed": counts["newly allowed"], "newly_seen": newly_seen,
                 "rules_dropped_to_zero": dropped.height}
    return s


# -- top denied destinations -------------------------------------------------------------------------

def _snippets(recs, rec) -> tuple[str | None, str | None]:  # noqa: ANN001
    """The az and Terraform text of one recommendation, from the same emitters `recommend` uses."""
    from egresslens.recommend import Recommendations
    from egresslens.recommend import emit_az, emit_terraform

    if rec is None or (rec.rule is None and rec.kind != "remove-rule"):
        return None, None
    one = Recommendations([rec], recs.window)
    return emit_az.emit(one), emit_terraform.emit(one)


def _rec_by_destination(recs) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {}
    for rec in recs.items:
        names = list(rec.evidence.destinations)
        for observed in rec.evidence.derived_from.values():
            names += observed
        if rec.rule is not None:
            names += rec.rule.target_fqdns + rec.rule.destination_fqdns + rec.rule.destination_addresses
        for n in names:
            out.setdefault(n, rec)
    return out


def denied(inp: Inputs, recs, top: int = 15) -> Section:  # noqa: ANN001
    s = Section("denied", "Top denied destinations", "The most denied destinations, each with the recommendation "
                "that fixes it and its az / Terraform snippet, ready to copy. Nothing is proposed for a "
                "destination flagged by threat intelligence, IDPS or DNS tunnelling.")
    df = frame(inp.con, f"""
      SELECT {_dest()} AS destination, destination_port AS port, protocol, kind,
             sum(hits)::BIGINT AS hits, {inp.distinct()}source_ip)::BIGINT AS sources
      FROM ({FLOW_HOURS_SQL}) WHERE action = 'Deny' GROUP BY ALL ORDER BY hits DESC LIMIT {int(top)}""", inp.params())
    by_dest = _rec_by_destination(recs)
    fixes, az, tf, cmds = [], [], [], []
    for d in df["destination"].to_list():
        rec = by_dest.get(d)
        fixes.append(f"{rec.kind}: {rec.title}" if rec else "no proposal (below the evidence thresholds)")
        a, t = _snippets(recs, rec)
        az.append(a)
        tf.append(t)
        cmds.append(inp.drill("destination", d))
    df = df.with_columns(pl.Series("fix", fixes, pl.String), pl.Series("az", az, pl.String),
                         pl.Series("terraform", tf, pl.String), pl.Series("drilldown", cmds, pl.String))
    adds = [r for r in recs.items if r.kind.startswith("add-")]
    if adds:
        s.add(FINDING, f"{counted(len(adds), 'allow rule')} {'is' if len(adds) == 1 else 'are'} proposed for denied "
                       "traffic (see recommend)")
    for w in recs.warnings:
        s.facts.append(f"recommend: {w}")
    s.data["top"] = df.select("destination", "port", "hits", "sources")
    s.tables.append(Table("Top denied destinations", df, {"hits": INT, "sources": INT, "az": CODE, "terraform": CODE,
                                                          "drilldown": COMMAND}))
    s.summary = {"denied_destinations_shown": df.height, "allow_rules_proposed": len(adds)}
    return s


# -- existing rules ----------------------------------------------------------------------------------

def rules(inp: Inputs, recs, has_policy: bool) -> Section:  # noqa: ANN001
    s = Section("rules", "Unused, shadowed and over-broad rules", "Existing allow rules scored by how much they "
                "permit against what they carried, with the proposals that remove or narrow them.")
    scores = recs.rule_scores_polars()
    if scores.height == 0:
        scores = pl.DataFrame(schema={"rule_collection_group": pl.String, "rule_collection": pl.String,
                                      "rule": pl.String, "rule_type": pl.String, "hits": pl.Int64,
                                      "permissiveness": pl.Float64})
    scores = scores.select("rule_collection_group", "rule_collection", "rule", "rule_type", "hits", "permissiveness")
    if not has_policy:
        s.facts.append("No policy given (--policy): rules are listed from the logs only; unused, shadowed and "
                       "over-broad rules need the policy.")
    props = [r for r in recs.items if r.kind in ("remove-rule", "narrow-rule")]
    rows = []
    for r in props:
        a, t = _snippets(recs, r)
        e = r.existing_rule or {}
        rows.append({"kind": r.kind, "rule": "/".join(str(e.get(k, "")) for k in
                                                      ("rule_collection_group", "rule_collection", "rule")).strip("/")
                     or r.title, "proposal": r.title, "why": r.rationale, "permissiveness": r.permissiveness,
                     "az": a, "terraform": t,
                     "drilldown": inp.drill("rule", e.get("rule")) if e.get("rule") else None})
    proposals = pl.DataFrame(rows, schema={"kind": pl.String, "rule": pl.String, "proposal": pl.String,
                                           "why": pl.String, "permissiveness": pl.Float64, "az": pl.String,
                                           "terraform": pl.String, "drilldown": pl.String})
    for kind, noun, verb in (("remove-rule", "unused or shadowed rule", "remove"),
                             ("narrow-rule", "over-broad rule", "narrow")):
        n = sum(1 for r in props if r.kind == kind)
        if n:
            s.add(FINDING, f"{counted(n, noun)} to {verb}")
    s.data["scores"] = scores
    s.tables += [Table("Proposals", proposals, {"permissiveness": "float", "az": CODE, "terraform": CODE,
                                                "drilldown": COMMAND}),
                 Table("Rules by permissiveness and hits", scores, {"hits": INT, "permissiveness": "float"}, limit=40)]
    s.summary = {"rules_scored": scores.height, "remove": sum(1 for r in props if r.kind == "remove-rule"),
                 "narrow": sum(1 for r in props if r.kind == "narrow-rule")}
    return s
