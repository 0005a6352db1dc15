"""Compromised sources: addresses that tunnel, hit threat intelligence or serious IDPS signatures,
query generated-looking zones, beacon to a newly seen zone, or reached anything withheld for one of
those reasons (contact taint, :mod:`egresslens.suspicion.taint`); with the evidence, the first
contact and the hours and days they were seen in contact."""

from __future__ import annotations

import duckdb
import polars as pl

from egresslens.analyse import Window, frame
from egresslens.suspicion.model import EVIDENCE, SOURCE_SCHEMA, SuspicionConfig

_EV_COLS = {"source_ip": pl.String, "kind": pl.String, "subject": pl.String, "detail": pl.String,
            "events": pl.Int64, "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")}


def compromised(con: duckdb.DuckDBPyConnection, window: Window, cfg: SuspicionConfig, beacons: pl.DataFrame,
                contact: pl.DataFrame, activity: pl.DataFrame) -> pl.DataFrame:
    """One row per compromised source (SOURCE_SCHEMA). `contact` and `activity` come from
    :func:`egresslens.suspicion.taint.contacts`, `beacons` from :func:`egresslens.suspicion.names.beacons`."""
    parts = []
    own = pl.col("own")  # the finding itself, not the owner zone it escalates to
    dns = pl.col("via").list.contains("DNS")
    tun = contact.filter((pl.col("kind") == "tunnelling") & own & dns & (pl.col("names") >= cfg.source_min_tunnel_names))
    parts.append(tun.with_columns(pl.lit("tunnelling").alias("kind"), pl.format(
        "{} unique names ({} queries) under the tunnelling zone {}", "names", "events", "subject").alias("detail")))
    gen = contact.filter((pl.col("kind") == "generated") & own & dns)
    parts.append(gen.with_columns(pl.lit("generated").alias("kind"), pl.format(
        "{} names ({} queries) in the generated-looking zone {}", "names", "events", "subject").alias("detail")))
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
    parts.append(thr)
    if beacons.height:
        parts.append(beacons.with_columns(
            pl.lit("beacon").alias("kind"), pl.col("zone").alias("subject"),
            pl.format("reached the newly seen zone {} {} times, every ~{} s (variation {})", "zone", "events",
                      pl.col("period_s").round(0), pl.col("cv").round(2)).alias("detail")))
    direct = pl.concat([p.select(list(_EV_COLS)).cast(_EV_COLS) for p in parts], how="vertical")
    # every other contact with a withheld subject: this source was not where it was found, but reached it
    rest = contact.join(direct.select("source_ip", "subject").unique(), on=["source_ip", "subject"], how="anti",
                        nulls_equal=True)
    what = pl.when(own).then(pl.format("the {}", "why")).otherwise(pl.format("{}, the {},", "subject", "why"))
    parts = [direct, rest.with_columns(pl.lit("contact").alias("kind"), pl.format(
        "reached {} {} time(s) by {}, first at {}", what, "events", pl.col("via").list.join(" and "),
        pl.col("first_seen").dt.strftime("%Y-%m-%d %H:%M:%S")).alias("detail")).select(list(_EV_COLS)).cast(_EV_COLS)]
    ev = pl.concat(parts, how="vertical")
    if ev.is_empty():
        return pl.DataFrame(schema=SOURCE_SCHEMA)
    ev = ev.sort("source_ip", "kind", "first_seen", "subject")
    out = ev.group_by("source_ip").agg(
        pl.col("kind").unique(maintain_order=True).alias("kinds"),
        pl.struct(list(EVIDENCE.to_schema())).alias("evidence"),
        pl.col("first_seen").min(), pl.col("last_seen").max())
    out = out.join(activity, on="source_ip", how="left").with_columns(
        pl.min_horizontal("first_seen", "first_contact").alias("first_seen"),
        pl.col("hours_seen").fill_null(0), pl.col("days_seen").fill_null(0))
    return out.sort("source_ip").select(list(SOURCE_SCHEMA))
