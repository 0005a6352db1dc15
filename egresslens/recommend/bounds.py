"""What of a window's flow groups reaches Python: bounded whatever the number of names.

A day of a million distinct names (CDN shards, random subdomains) is a million flow groups. The stages
that judge them name by name (`triage`, `application`, `network`, `existing`) run in Python, so they
get only what can matter to their answer, chosen in DuckDB from the groups table:

- denied groups: every group that can become a proposal (clean sources, enough evidence), and for each
  kind of `investigate` item (refused, asked for only by compromised sources, too little evidence) the
  groups of the `Config.max_investigate` busiest destinations; the rest of each kind is one summary
  item ("and 123,456 more destinations ..."), counted exactly in SQL;
- allowed groups: without a policy, the hits per rule; with one, the groups each rule carried, up to
  `MAX_RULE_GROUPS` per rule (a rule carrying more gets an investigate item with its exact counts).

Whether a destination is refused (suspicious, an invalid name, an address resolved from a suspicious
name) is decided by the same Python as `triage` (:func:`egresslens.recommend.triage.refusal`), over the
distinct destinations in chunks, so memory stays flat; only the refused ones are kept, in DuckDB.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from egresslens.analyse import frame, run_sql
from egresslens.recommend.context import Context, investigate
from egresslens.recommend.model import Evidence, iso

GROUPS = "_rec_groups"  # temp table: every flow group of the window (engine.py)
TAINT = "_rec_taint"  # temp table: (kind, dest, protocol, destination_port, ips) denied to compromised sources
MAX_RULE_GROUPS = 20_000  # flow groups of one allow rule judged one by one
CHUNK = 50_000  # distinct destinations judged per Python pass

_DENIED_APP = ("kind = 'application' AND action = 'Deny' AND destination_fqdn IS NOT NULL "
               "AND protocol IN ('HTTP', 'HTTPS', 'MSSQL') AND destination_port IS NOT NULL")
_DENIED_NET = "kind = 'network' AND action = 'Deny' AND destination_ip IS NOT NULL"


def _flag(ctx: Context, table: str, distinct_sql: str, refused: Callable[[str], bool]) -> None:
    """Temp table `table` (dest): the destinations of `distinct_sql` that `refused` says no to, judged
    CHUNK at a time."""
    con = ctx.con
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE {table} (dest VARCHAR)")
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE {table}_all AS SELECT dest, row_number() OVER () AS rn "
                 f"FROM ({distinct_sql}) WHERE dest IS NOT NULL")
    try:
        n = con.execute(f"SELECT count(*) FROM {table}_all").fetchall()[0][0]
        for lo in range(0, n, CHUNK):
            dests = [r[0] for r in con.execute(f"SELECT dest FROM {table}_all WHERE rn > ? AND rn <= ?",
                                               [lo, lo + CHUNK]).fetchall()]
            bad = [d for d in dests if refused(d)]
            if bad:
                con.register(f"{table}_in", pl.DataFrame({"dest": bad}, schema={"dest": pl.String}).to_arrow())
                try:
                    run_sql(con, f"INSERT INTO {table} SELECT dest FROM {table}_in")
                finally:
                    con.unregister(f"{table}_in")
    finally:
        run_sql(con, f"DROP TABLE IF EXISTS {table}_all")


def denied_groups(ctx: Context, extra_danger=None) -> pl.DataFrame:  # noqa: ANN001
    """The denied flow groups `triage` needs (see the module docstring), as one frame of GROUPS rows;
    summary items for what is left out are added to `ctx`."""
    from egresslens.recommend.triage import refusal

    parts = []
    for kind, dest, where, danger in (("application", "destination_fqdn", _DENIED_APP, None),
                                      ("network", "destination_ip", _DENIED_NET, extra_danger)):
        _flag(ctx, "_rec_refused", f"SELECT DISTINCT {dest} AS dest FROM {GROUPS} WHERE {where}",
              lambda d, c=dest, x=danger: refusal(ctx, d, c, x) is not None)
        try:
            parts.append(_bounded(ctx, kind, dest, where))
        finally:
            run_sql(ctx.con, "DROP TABLE IF EXISTS _rec_refused")
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


def _bounded(ctx: Context, kind: str, dest: str, where: str) -> pl.DataFrame:
    cfg, con = ctx.config, ctx.con
    n = int(cfg.max_investigate)
    explicit = "(action_reason IS NOT NULL AND action_reason <> 'Default Action' AND rule IS NOT NULL)"
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE _rec_d AS
      SELECT g.*, g.{dest} AS dest, r.dest IS NOT NULL OR {explicit} AS refused
      FROM {GROUPS} g LEFT JOIN _rec_refused r ON r.dest = g.{dest} WHERE {where}""")
    try:
        # the keys of each investigate kind, the busiest first, and their rank (rank <= n is itemised)
        run_sql(con, f"""
          CREATE OR REPLACE TEMP TABLE _rec_keys AS
          WITH clean AS (SELECT DISTINCT dest, protocol, destination_port FROM _rec_d WHERE NOT refused AND NOT compromised),
          ref AS (SELECT 'refused' AS what, sgroup, dest, protocol, destination_port, sum(hits) AS hits
                  FROM _rec_d WHERE refused GROUP BY ALL),
          tnt AS (SELECT 'tainted' AS what, NULL AS sgroup, d.dest, d.protocol, d.destination_port, sum(d.hits) AS hits
                  FROM _rec_d d ANTI JOIN clean c ON c.dest = d.dest AND c.protocol IS NOT DISTINCT FROM d.protocol
                                                    AND c.destination_port IS NOT DISTINCT FROM d.destination_port
                  WHERE NOT d.refused AND d.compromised GROUP BY ALL),
          kept AS (SELECT dest, protocol, destination_port, sum(hits) AS t_hits, max(hours) AS t_hours
                   FROM _rec_d WHERE NOT refused AND NOT compromised GROUP BY ALL),
          weak AS (SELECT 'noise' AS what, NULL AS sgroup, dest, NULL AS protocol, NULL::INTEGER AS destination_port,
                          sum(t_hits) AS hits
                   FROM kept WHERE t_hits < {int(cfg.min_hits)} OR t_hours < {int(cfg.min_hours)} GROUP BY dest),
          u AS (SELECT * FROM ref UNION ALL SELECT * FROM tnt UNION ALL SELECT * FROM weak)
          SELECT *, row_number() OVER (PARTITION BY what ORDER BY hits DESC, dest, sgroup, protocol, destination_port) AS rank
          FROM u""")
        rows = frame(con, f"""
          WITH k AS (SELECT * FROM _rec_keys WHERE rank <= {n}),
          strong AS (SELECT dest, protocol, destination_port FROM _rec_d WHERE NOT refused AND NOT compromised
                     GROUP BY ALL HAVING sum(hits) >= {int(cfg.min_hits)} AND max(hours) >= {int(cfg.min_hours)})
          SELECT d.* EXCLUDE (dest, refused) FROM _rec_d d
          WHERE (d.refused AND EXISTS (SELECT 1 FROM k WHERE k.what = 'refused' AND k.sgroup = d.sgroup AND k.dest = d.dest
                                       AND k.protocol IS NOT DISTINCT FROM d.protocol
                                       AND k.destination_port IS NOT DISTINCT FROM d.destination_port))
             OR (NOT d.refused AND d.compromised AND EXISTS (
                   SELECT 1 FROM k WHERE k.what = 'tainted' AND k.dest = d.dest AND k.protocol IS NOT DISTINCT FROM d.protocol
                     AND k.destination_port IS NOT DISTINCT FROM d.destination_port))
             OR (NOT d.refused AND NOT d.compromised AND (
                   EXISTS (SELECT 1 FROM strong s WHERE s.dest = d.dest AND s.protocol IS NOT DISTINCT FROM d.protocol
                             AND s.destination_port IS NOT DISTINCT FROM d.destination_port)
                   OR EXISTS (SELECT 1 FROM k WHERE k.what = 'noise' AND k.dest = d.dest)))""")
        omitted = frame(con, f"""
          SELECT what, count(*) AS keys, count(DISTINCT dest) AS destinations, sum(hits)::BIGINT AS hits
          FROM _rec_keys WHERE rank > {n} GROUP BY what ORDER BY what""")
        _summaries(ctx, kind, omitted)
        # compromised sources' requests (triage and the proposals read them): for the destinations kept
        kept = rows.select(pl.col(dest).alias("dest")).unique()
        con.register("_rec_kept", kept.to_arrow())
        try:
            ctx.taint.update({(kind, d, p, port): ips for d, p, port, ips in con.execute(
                f"SELECT dest, protocol, destination_port, ips FROM {TAINT} WHERE kind = ? "
                "AND dest IN (SELECT dest FROM _rec_kept)", [kind]).fetchall()})
        finally:
            con.unregister("_rec_kept")
        return rows
    finally:
        for t in ("_rec_d", "_rec_keys"):
            run_sql(con, f"DROP TABLE IF EXISTS {t}")


_WHAT = {
    "refused": ("Do not allow {n:,} more {kind} destination(s) (suspicious, invalid or explicitly denied)",
                "each was refused for the same reasons as the items listed one by one above; only the "
                "{shown} busiest are itemised", "high"),
    "tainted": ("Do not allow {n:,} more {kind} destination(s) only compromised sources asked for",
                "no clean source needed them; only the {shown} busiest are itemised", "high"),
    "noise": ("Too little evidence to allow {n:,} more {kind} destination(s)",
              "below the evidence thresholds (min {min_hits} hits and {min_hours} distinct hours in the window): "
              "one-off traffic is not turned into allow rules; only the {shown} busiest are itemised", "low"),
}


def _summaries(ctx: Context, kind: str, omitted: pl.DataFrame) -> None:
    for r in omitted.iter_rows(named=True):
        title, why, risk = _WHAT[r["what"]]
        fill = {"n": r["destinations"], "kind": kind, "shown": ctx.config.max_investigate,
                "min_hits": ctx.config.min_hits, "min_hours": ctx.config.min_hours}
        rec = investigate(ctx, title.format(**fill), why.format(**fill),
                          Evidence(hits=int(r["hits"] or 0), notes=[
                              f"{r['keys']:,} (source group, destination, port) combination(s) not itemised; "
                              "`egresslens sql` over `flows` lists them all"]),
                          risk, key=("more", kind, r["what"]))
        ctx.summaries.add(rec.id)


# -- allowed groups ---------------------------------------------------------------------------------

def allowed_groups(ctx: Context) -> tuple[pl.DataFrame, dict[tuple, dict]]:
    """Allowed flow groups for `existing` (see the module docstring): (rows, per rule key carrying more
    than MAX_RULE_GROUPS groups: its exact counts and busiest destinations)."""
    con = ctx.con
    if not ctx.policy:  # only the hits per rule are read
        return frame(con, f"""
          SELECT rule_collection_group, rule_collection, rule, any_value(kind) AS kind, 'Allow' AS action,
                 sum(hits)::BIGINT AS hits
          FROM {GROUPS} WHERE action = 'Allow' GROUP BY ALL"""), {}
    cap = MAX_RULE_GROUPS
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE _rec_allowed AS
      SELECT *, count(*) OVER w AS groups_of_rule,
             row_number() OVER (w ORDER BY hits DESC, gkey) AS rank_in_rule
      FROM {GROUPS} WHERE action = 'Allow'
      WINDOW w AS (PARTITION BY rule_collection_group, rule_collection, rule)""")
    try:
        rows = frame(con, f"SELECT * EXCLUDE (groups_of_rule, rank_in_rule) FROM _rec_allowed WHERE groups_of_rule <= {cap}")
        big = {}
        for r in frame(con, f"""
            SELECT rule_collection_group, rule_collection, rule, count(*) AS groups, sum(hits)::BIGINT AS hits,
                   count(DISTINCT coalesce(destination_fqdn, destination_ip)) AS destinations,
                   sum(sources)::BIGINT AS sources, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                   list(coalesce(destination_fqdn, destination_ip) ORDER BY hits DESC)[:20] AS busiest
            FROM _rec_allowed WHERE groups_of_rule > {cap} GROUP BY ALL""").iter_rows(named=True):
            big[(r["rule_collection_group"], r["rule_collection"], r["rule"])] = r
        return rows, big
    finally:
        run_sql(con, "DROP TABLE IF EXISTS _rec_allowed")


def too_broad(ctx: Context, rule, stats: dict, required: str | None = None) -> None:  # noqa: ANN001
    """An allow rule that carried more flow groups than are judged one by one: investigate it. `required`:
    the note of the required platform egress it carries (that part stays whole)."""
    name = "/".join(rule.key)
    investigate(ctx, f"Review {name}: it carried {stats['destinations']:,} distinct destinations",
                f"{stats['groups']:,} flow groups ({stats['hits']:,} hits) matched this rule in the window, more than "
                f"{MAX_RULE_GROUPS:,} judged one by one: narrow it by FQDN tag, web category or source instead of "
                "by observed name" + (f"; it {required}: keep that part as it is" if required else ""),
                Evidence(hits=int(stats["hits"]), distinct_sources=int(stats["sources"] or 0),
                         first_seen=iso(stats["first_seen"]), last_seen=iso(stats["last_seen"]),
                         destinations=list(stats["busiest"] or []),
                         notes=[f"the {len(stats['busiest'] or [])} busiest destinations are listed"]),
                "medium", key=("broad", *rule.key))
