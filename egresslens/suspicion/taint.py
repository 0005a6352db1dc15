"""Contact taint: a source that reached anything withheld as threat intelligence, IDPS, tunnelling,
generated or beacon, from whichever source it was found, is compromised from its first such contact.

The withheld set (`susp_w`: names, zones with their owner zone, addresses) is small: the findings.
Every name of the window is matched against it by an equi-join on the owner zone (never a scan of
all names per finding), then the window's DNS and flow groups (`susp_qs`, `susp_fq`, flows by
address) are joined to the matched names: the result is one row per (source, withheld subject),
and one row per source with its first contact and the hours and days it was seen in contact.
"""

from __future__ import annotations

import duckdb
import polars as pl

from egresslens.analyse import FLOW_HOURS_SQL, Window, frame, run_sql
from egresslens.suspicion.model import SuspicionConfig

# Findings whose subjects taint every source that reaches them (look-alikes, internationalised and
# merely new names do not: they are withheld from proposals, not evidence of compromise).
TAINT_KINDS = ("tunnelling", "threat_intel", "idps", "generated", "beacon")

CONTACTS = {"source_ip": pl.String, "kind": pl.String, "subject": pl.String, "why": pl.String, "own": pl.Boolean,
            "names": pl.Int64, "events": pl.Int64, "via": pl.List(pl.String), "first_seen": pl.Datetime("us"),
            "last_seen": pl.Datetime("us")}
ACTIVITY = {"source_ip": pl.String, "first_contact": pl.Datetime("us"), "hours_seen": pl.Int64,
            "days_seen": pl.Int64}


def withheld(names: pl.DataFrame) -> pl.DataFrame:
    """(subject, scope, kind, owner, why, own, rank) every contact is matched against: each tainting finding
    (`own`), and the owner zone it escalates to."""
    f = names.filter(pl.col("withhold") & pl.col("kind").is_in(TAINT_KINDS))
    own = f.select("subject", "scope", "kind", pl.when(pl.col("scope") == "ip").then(None)
                   .otherwise(pl.col("domain")).alias("owner"),
                   pl.format("{} {}", pl.col("kind").str.replace("_", " "), "subject").alias("why"),
                   pl.lit(True).alias("own"))
    esc = f.filter(pl.col("escalates") & pl.col("domain").is_not_null() & (pl.col("domain") != pl.col("subject"))
                   ).select(pl.col("domain").alias("subject"), pl.lit("zone").alias("scope"), "kind",
                            pl.col("domain").alias("owner"),
                            pl.format("owner zone of the {} {}", pl.col("kind").str.replace("_", " "), "subject")
                            .alias("why"), pl.lit(False).alias("own"))
    out = pl.concat([own, esc], how="vertical").with_row_index("rank")
    return out.unique(["subject", "scope"], keep="first", maintain_order=True)


def contacts(con: duckdb.DuckDBPyConnection, window: Window, w: pl.DataFrame, cfg: SuspicionConfig
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per source and subject: names, events, via, first/last seen; per source: first contact, hours and
    days seen in contact). Needs the tables of `names.build_tables`."""
    if w.is_empty():
        return pl.DataFrame(schema=CONTACTS), pl.DataFrame(schema=ACTIVITY)
    params = {"start": window.start, "end": window.end}
    con.register("susp_w_in", w.to_arrow())
    try:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE susp_w AS SELECT * FROM susp_w_in")
    finally:
        con.unregister("susp_w_in")
    run_sql(con, """
      CREATE OR REPLACE TEMP TABLE susp_contact_names AS
      SELECT name, subject, kind, why, own FROM (
        SELECT a.name, w.subject, w.kind, w.why, w.own, w.rank FROM susp_allnames a JOIN susp_w w ON a.owner = w.owner
        WHERE w.scope = 'zone' AND (a.name = w.subject OR ends_with(a.name, '.' || w.subject))
        UNION ALL
        SELECT a.name, w.subject, w.kind, w.why, w.own, w.rank FROM susp_allnames a JOIN susp_w w ON a.name = w.subject
        WHERE w.scope <> 'ip')
      QUALIFY row_number() OVER (PARTITION BY name ORDER BY length(subject) DESC, rank) = 1""")
    serious = f"(kind = 'threat_intel' OR severity <= {int(cfg.idps_max_severity)} OR action IN ('drop', 'deny'))"
    by_address = f"""UNION ALL
          SELECT f.source_ip, w.kind, w.subject, w.why, w.own, NULL, f.hour, f.hits, f.first_seen, f.last_seen, 'flows'
          FROM ({FLOW_HOURS_SQL}) f JOIN susp_w w ON f.destination_ip = w.subject AND w.scope = 'ip'
          WHERE f.source_ip IS NOT NULL""" if (w["scope"] == "ip").any() else ""
    try:
        run_sql(con, f"""
          CREATE OR REPLACE TEMP TABLE susp_contact_ev AS
          SELECT q.source_ip, c.kind, c.subject, c.why, c.own, q.name, q.hour, q.queries AS events, q.first_seen,
                 q.last_seen, 'DNS' AS via
          FROM susp_qs q JOIN susp_contact_names c USING (name) WHERE q.source_ip IS NOT NULL
          UNION ALL
          SELECT f.source_ip, c.kind, c.subject, c.why, c.own, f.name, f.hour, f.hits, f.first_seen, f.last_seen, 'flows'
          FROM susp_fq f JOIN susp_contact_names c USING (name) WHERE f.source_ip IS NOT NULL
          {by_address}""", params)
        per = frame(con, """
          SELECT source_ip, kind, subject, any_value(why) AS why, bool_or(own) AS own, count(DISTINCT name)::BIGINT AS names,
                 sum(events)::BIGINT AS events, list(DISTINCT via ORDER BY via) AS via, min(first_seen) AS first_seen,
                 max(last_seen) AS last_seen
          FROM susp_contact_ev GROUP BY source_ip, kind, subject""")
        act = frame(con, f"""
          SELECT source_ip, min(first_seen) AS first_contact, count(DISTINCT hour)::BIGINT AS hours_seen,
                 count(DISTINCT hour::DATE)::BIGINT AS days_seen
          FROM (SELECT source_ip, hour, first_seen FROM susp_contact_ev
                UNION ALL SELECT source_ip, date_trunc('hour', time), time FROM threats
                WHERE time >= $start AND time < $end AND source_ip IS NOT NULL AND {serious})
          GROUP BY source_ip""", params)
    finally:
        for t in ("susp_contact_ev", "susp_contact_names", "susp_w"):
            run_sql(con, f"DROP TABLE IF EXISTS {t}")
    return per.cast(CONTACTS), act.cast(ACTIVITY)
