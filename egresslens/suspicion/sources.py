"""Compromised sources: addresses that tunnel, hit threat intelligence or serious IDPS signatures,
query generated-looking zones, or beacon to a newly seen zone; with the evidence and its time window."""

from __future__ import annotations

import duckdb
import polars as pl

from egresslens.analyse import Window, frame
from egresslens.suspicion.model import EVIDENCE, SOURCE_SCHEMA, SuspicionConfig

_EV_COLS = {"source_ip": pl.String, "kind": pl.String, "subject": pl.String, "detail": pl.String,
            "events": pl.Int64, "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")}


def _zone_evidence(con: duckdb.DuckDBPyConnection, zones: list[str], kind: str, min_names: int, what: str) -> pl.DataFrame:
    if not zones:
        return pl.DataFrame(schema=_EV_COLS)
    con.register("susp_ev_zones", pl.DataFrame({"zone": zones}).to_arrow())
    try:
        df = frame(con, f"""
          SELECT q.source_ip, '{kind}' AS kind, z.zone AS subject, count(DISTINCT q.name)::BIGINT AS names,
                 sum(q.queries)::BIGINT AS events, min(q.first_seen) AS first_seen, max(q.last_seen) AS last_seen
          FROM susp_qs q JOIN susp_ev_zones z ON q.name = z.zone OR ends_with(q.name, '.' || z.zone)
          WHERE q.source_ip IS NOT NULL GROUP BY ALL HAVING count(DISTINCT q.name) >= {int(min_names)}""")
    finally:
        con.unregister("susp_ev_zones")
    return df.with_columns(pl.format(what, "names", "events", "subject").alias("detail")).select(list(_EV_COLS))


def compromised(con: duckdb.DuckDBPyConnection, window: Window, cfg: SuspicionConfig, names: pl.DataFrame,
                beacons: pl.DataFrame) -> pl.DataFrame:
    parts = []
    tunnels = names.filter(pl.col("kind") == "tunnelling")["subject"].to_list()
    parts.append(_zone_evidence(con, tunnels, "tunnelling", cfg.source_min_tunnel_names,
                                "{} unique names ({} queries) under the tunnelling zone {}"))
    dga = names.filter(pl.col("kind") == "generated")["subject"].to_list()
    parts.append(_zone_evidence(con, dga, "generated", 1, "{} names ({} queries) in the generated-looking zone {}"))
    serious = f"(kind = 'threat_intel' OR severity <= {int(cfg.idps_max_severity)} OR action IN ('drop', 'deny'))"
    thr = frame(con, f"""
      SELECT source_ip, kind, subject,
             (CASE WHEN kind = 'threat_intel' THEN 'threat intelligence' ELSE 'IDPS' END) || ' on '
               || coalesce(subject, 'an unknown destination') || ': '
               || coalesce(string_agg(DISTINCT description, '; ' ORDER BY description), 'no description')
               || coalesce(' (' || string_agg(DISTINCT action, '/' ORDER BY action) || ')', '') AS detail,
             count(*)::BIGINT AS events, min(time) AS first_seen, max(time) AS last_seen
      FROM (SELECT *, coalesce(lower(fqdn), destination_ip) AS subject FROM threats
            WHERE time >= $start AND time < $end AND source_ip IS NOT NULL AND {serious})
      GROUP BY source_ip, kind, subject""", {"start": window.start, "end": window.end})
    parts.append(thr.select(list(_EV_COLS)) if thr.height else pl.DataFrame(schema=_EV_COLS))
    if beacons.height:
        parts.append(beacons.with_columns(
            pl.lit("beacon").alias("kind"), pl.col("zone").alias("subject"),
            pl.format("reached the newly seen zone {} {} times, every ~{} s (variation {})", "zone", "events",
                      pl.col("period_s").round(0), pl.col("cv").round(2)).alias("detail")).select(list(_EV_COLS)))
    ev = pl.concat([p.cast(_EV_COLS) for p in parts], how="vertical")
    if ev.is_empty():
        return pl.DataFrame(schema=SOURCE_SCHEMA)
    ev = ev.sort("source_ip", "kind", "first_seen", "subject")
    out = ev.group_by("source_ip").agg(
        pl.col("kind").unique(maintain_order=True).alias("kinds"),
        pl.struct(list(EVIDENCE.to_schema())).alias("evidence"),
        pl.col("first_seen").min(), pl.col("last_seen").max())
    return out.sort("source_ip").select(list(SOURCE_SCHEMA))
