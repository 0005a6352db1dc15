"""Suspicious names, in DuckDB SQL over the window's DNS groups (raw `dns_queries` or `dns_rollups`),
`threats` and flow names.

Temp tables, built once per assessment:

- `susp_qs`: per (hour, source, name): queries, TXT/NULL queries, NXDOMAIN answers, first/last seen
  (search-domain noise removed);
- `susp_names`: per name: the same summed, plus its number of labels `n`, public labels `ps` and owner zone;
- `susp_fq`: per (hour, source, name) of the flows that carry a name (application rules, FQDN
  network rules): hits, first/last seen;
- `susp_allnames`: every distinct name of DNS and flows with its owner zone (flow names the DNS log
  lacks get their owner here, once).

Tunnelling is judged for every parent zone of every name, whatever its depth, from the owner zone
down (`<40>.<20>.t.zone.example` counts for `t.zone.example`, `zone.example` ...); a flagged zone
is reported instead of its flagged parent when it holds most of the parent's unique names.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb
import polars as pl

from egresslens.analyse import DNS_HOURS_SQL, FLOW_HOURS_SQL, Window, frame, run_sql
from egresslens.suspicion import lookalike
from egresslens.suspicion.model import NAME_SCHEMA, SuspicionConfig, conform
from egresslens.suspicion.suffixes import NOISE_SUFFIXES, owner_sql

TUNNEL_TYPES = ("TXT", "NULL")
ENTROPY_MACRO = """
CREATE OR REPLACE TEMP MACRO susp_entropy(t) AS
  CASE WHEN t IS NULL OR length(t) = 0 THEN 0.0 ELSE
    -list_sum(list_transform(list_distinct(string_split(t, '')),
        lambda c: ((length(t) - length(replace(t, c, ''))) / length(t))
                  * log2((length(t) - length(replace(t, c, ''))) / length(t)))) END
"""


def noise_filter(col: str = "query_name") -> str:
    """SQL condition: the name is not search-domain noise (wpad, cluster/VNet search suffixes)."""
    ends = " OR ".join(f"ends_with({col}, '{s}')" for s in NOISE_SUFFIXES)
    return f"NOT ({col} = 'wpad' OR starts_with({col}, 'wpad.') OR {ends})"


def build_tables(con: duckdb.DuckDBPyConnection, window: Window) -> None:
    params = {"start": window.start, "end": window.end}
    run_sql(con, ENTROPY_MACRO)
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_qs AS
      SELECT hour, source_ip, query_name AS name, sum(queries)::BIGINT AS queries,
             coalesce(sum(queries) FILTER (WHERE query_type IN {TUNNEL_TYPES}), 0)::BIGINT AS txt,
             coalesce(sum(queries) FILTER (WHERE response_code = 'NXDOMAIN'), 0)::BIGINT AS nx,
             min(first_seen) AS first_seen, max(last_seen) AS last_seen
      FROM ({DNS_HOURS_SQL}) WHERE query_name IS NOT NULL AND {noise_filter()}
      GROUP BY ALL""", params)
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_names AS
      WITH a AS (SELECT name, sum(queries)::BIGINT AS queries, sum(txt)::BIGINT AS txt, sum(nx)::BIGINT AS nx,
                        list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL) AS sources,
                        min(first_seen) AS first_seen, max(last_seen) AS last_seen
                 FROM susp_qs GROUP BY name)
      SELECT a.*, o.n, o.ps, o.owner FROM a JOIN ({owner_sql('SELECT name FROM a')}) o USING (name)""")
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_fq AS
      SELECT hour, source_ip, lower(destination_fqdn) AS name, sum(hits)::BIGINT AS hits,
             min(first_seen) AS first_seen, max(last_seen) AS last_seen
      FROM ({FLOW_HOURS_SQL}) WHERE destination_fqdn IS NOT NULL GROUP BY ALL""", params)
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_allnames AS
      SELECT name, owner FROM susp_names
      UNION ALL
      SELECT name, owner FROM ({owner_sql('SELECT DISTINCT name FROM susp_fq ANTI JOIN susp_names USING (name)')})""")


def tunnelling(con: duckdb.DuckDBPyConnection, cfg: SuspicionConfig) -> pl.DataFrame:
    # every (name, parent zone) pair from the owner zone down (equi-joins from here on)
    run_sql(con, """
      CREATE OR REPLACE TEMP TABLE susp_zone_members AS
      SELECT name, queries, txt, nx, sources, first_seen, last_seen,
             array_to_string(labels[n - d + 1:], '.') AS zone,
             array_to_string(labels[:n - d], '') AS left_part
      FROM (SELECT *, string_split(name, '.') AS labels, unnest(range(ps + 1, n)) AS d FROM susp_names
            WHERE owner IS NOT NULL AND n > ps + 1)""")
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_zone_stats AS
      SELECT zone, count(*)::BIGINT AS unique_names, sum(queries)::BIGINT AS queries,
             sum(txt) / sum(queries) AS txt_null_share, sum(nx) / sum(queries) AS nxdomain_share,
             avg(length(left_part)) AS mean_label_length, count(*) / sum(queries) AS unique_ratio,
             list_sort(list_distinct(flatten(list(sources))))[:10] AS sources,
             min(first_seen) AS first_seen, max(last_seen) AS last_seen
      FROM susp_zone_members GROUP BY zone HAVING count(*) >= {int(cfg.min_unique_names)}""")
    df = frame(con, f"""
      WITH s AS (SELECT m.zone, m.left_part AS t FROM susp_zone_members m SEMI JOIN susp_zone_stats z USING (zone)
                 QUALIFY row_number() OVER (PARTITION BY m.zone ORDER BY hash(m.name)) <= {int(cfg.entropy_sample)}),
      e AS (SELECT zone, avg(susp_entropy(t)) AS entropy FROM s GROUP BY zone)
      SELECT z.*, e.entropy, o.owner AS domain FROM susp_zone_stats z LEFT JOIN e USING (zone)
      JOIN ({owner_sql('SELECT zone AS name FROM susp_zone_stats')}) o ON o.name = z.zone""")
    for t in ("susp_zone_stats", "susp_zone_members"):
        run_sql(con, f"DROP TABLE IF EXISTS {t}")
    if df.is_empty():
        return conform(df, NAME_SCHEMA)
    long_ = pl.col("mean_label_length") >= cfg.long_label
    ent = pl.col("entropy").fill_null(0) >= cfg.high_entropy
    sig = {"long labels": long_, "high entropy": ent, "TXT/NULL queries": pl.col("txt_null_share") >= cfg.txt_null_share,
           "high NXDOMAIN share": pl.col("nxdomain_share") >= cfg.nxdomain_share,
           "mostly unique names": pl.col("unique_ratio") >= cfg.unique_ratio}
    df = df.with_columns(
        pl.sum_horizontal([e.cast(pl.Int32) for e in sig.values()]).alias("signals"),
        pl.concat_list([pl.when(e).then(pl.lit(k)).otherwise(None) for k, e in sig.items()]).list.drop_nulls()
        .list.join(", ").alias("signal_list"))
    flagged = df.filter((long_ | ent) & (pl.col("signals") >= cfg.min_signals))
    # report the most specific zone that holds (nearly) all of a flagged parent's names
    keep = []
    rows = flagged.select("zone", "unique_names").rows()
    for zone, n in rows:
        if not any(z != zone and z.endswith("." + zone) and m >= cfg.zone_cover * n for z, m in rows):
            keep.append(zone)
    out = flagged.filter(pl.col("zone").is_in(keep)).with_columns(
        pl.col("zone").alias("subject"), pl.lit("zone").alias("scope"), pl.lit("tunnelling").alias("kind"),
        pl.lit(True).alias("never_allow"), pl.lit(True).alias("withhold"), pl.lit(True).alias("escalates"),
        pl.format("{} unique names under {}; {}", "unique_names", "zone", "signal_list").alias("detail"))
    return conform(out, NAME_SCHEMA)


def threats(con: duckdb.DuckDBPyConnection, window: Window, cfg: SuspicionConfig) -> pl.DataFrame:
    """Threat-intel names and addresses; IDPS destinations of serious signatures (severity or drop)."""
    params = {"start": window.start, "end": window.end}
    serious = f"(kind = 'threat_intel' OR severity <= {int(cfg.idps_max_severity)} OR action IN ('drop', 'deny'))"
    df = frame(con, f"""
      WITH t AS (SELECT * FROM threats WHERE time >= $start AND time < $end AND {serious}),
      n AS (SELECT lower(fqdn) AS subject, 'name' AS scope, kind, count(*)::BIGINT AS queries,
                   string_agg(DISTINCT description, '; ' ORDER BY description) AS what,
                   list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL)[:10] AS sources,
                   min(time) AS first_seen, max(time) AS last_seen
            FROM t WHERE fqdn IS NOT NULL GROUP BY ALL),
      i AS (SELECT destination_ip AS subject, 'ip' AS scope, kind, count(*)::BIGINT AS queries,
                   string_agg(DISTINCT description, '; ' ORDER BY description) AS what,
                   list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL)[:10] AS sources,
                   min(time) AS first_seen, max(time) AS last_seen
            FROM t WHERE destination_ip IS NOT NULL AND fqdn IS NULL GROUP BY ALL),
      u AS (SELECT * FROM n UNION ALL SELECT * FROM i)
      SELECT u.*, o.owner AS domain FROM u
      LEFT JOIN ({owner_sql("SELECT subject AS name FROM n")}) o ON o.name = u.subject AND u.scope = 'name'
    """, params)
    if df.is_empty():
        return conform(df, NAME_SCHEMA)
    label = pl.when(pl.col("kind") == "threat_intel").then(pl.lit("threat intelligence")).otherwise(pl.lit("IDPS"))
    out = df.with_columns(
        pl.lit(True).alias("never_allow"), pl.lit(True).alias("withhold"), (pl.col("scope") == "name").alias("escalates"),
        pl.format("{}: {} ({} events)", label, pl.col("what").fill_null("no description"), "queries").alias("detail"))
    return conform(out, NAME_SCHEMA)


def generated(con: duckdb.DuckDBPyConnection, cfg: SuspicionConfig) -> pl.DataFrame:
    """Owner zones whose own label looks generated (long, random, digits-and-letters) and mostly fail to resolve."""
    df = frame(con, f"""
      WITH o AS (SELECT owner, sum(queries)::BIGINT AS queries, sum(nx)::BIGINT AS nx,
                        list_sort(list_distinct(flatten(list(sources))))[:10] AS sources,
                        min(first_seen) AS first_seen, max(last_seen) AS last_seen
                 FROM susp_names WHERE owner IS NOT NULL GROUP BY owner),
      l AS (SELECT *, split_part(owner, '.', 1) AS label FROM o)
      SELECT *, susp_entropy(label) AS entropy, nx / queries AS nxdomain_share FROM l
      WHERE length(label) >= {int(cfg.dga_min_length)} AND regexp_full_match(label, '[a-z0-9]+')
        AND nx >= {float(cfg.dga_nxdomain_share)} * queries AND susp_entropy(label) >= {float(cfg.dga_entropy)}""")
    out = df.with_columns(
        pl.col("owner").alias("subject"), pl.col("owner").alias("domain"), pl.lit("zone").alias("scope"),
        pl.lit("generated").alias("kind"), pl.lit(True).alias("never_allow"), pl.lit(True).alias("withhold"),
        pl.lit(True).alias("escalates"),
        pl.format("generated-looking name ({} of {} queries NXDOMAIN, label entropy {} bits/char)", "nx", "queries",
                  pl.col("entropy").round(1)).alias("detail"))
    return conform(out, NAME_SCHEMA)


def lookalikes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Punycode / Unicode names from DNS and flows (raw or rollups; counts are indicative): decoded and
    classified, Python on those few names only."""
    # non-ASCII: more UTF-8 bytes than code points (a byte count, not a regular expression per name)
    idn = "(contains(name, 'xn--') OR strlen(name) <> length(name))"
    cand = frame(con, f"""
      SELECT name, sum(queries)::BIGINT AS queries, list_sort(list_distinct(flatten(list(sources))))[:10] AS sources,
             min(first_seen) AS first_seen, max(last_seen) AS last_seen
      FROM (SELECT name, queries, sources, first_seen, last_seen FROM susp_names WHERE {idn}
            UNION ALL
            SELECT name, sum(hits), list(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL), min(first_seen),
                   max(last_seen)
            FROM susp_fq WHERE {idn} GROUP BY name)
      GROUP BY name""")
    rows = []
    for r in cand.iter_rows(named=True):
        c = lookalike.classify(r["name"])
        if c is None:
            continue
        never = c["kind"] == "lookalike"
        rows.append({**r, "subject": r["name"], "scope": "name", "kind": c["kind"], "never_allow": never,
                     "withhold": True, "escalates": never, "domain": None, "detail": c["detail"],
                     "unicode": c["unicode"], "looks_like": c["looks_like"]})
    if not rows:
        return conform(pl.DataFrame(), NAME_SCHEMA)
    return conform(pl.DataFrame(rows, infer_schema_length=None), NAME_SCHEMA)


def newly_seen_table(con: duckdb.DuckDBPyConnection, window: Window, cfg: SuspicionConfig) -> None:
    """Temp table `susp_new`: the owner zones first queried after the baseline (history before the
    window if any, up to `lookback_days`, else the window's first `baseline_hours`), each with `sig`
    (TXT/NXDOMAIN/long-label signals)."""
    params = {"start": window.start, "end": window.end, "lb": window.start - timedelta(days=cfg.lookback_days)}
    has_history = con.execute("""SELECT (SELECT count(*) FROM (SELECT 1 FROM dns_queries WHERE time < $start LIMIT 1))
                                      + (SELECT count(*) FROM (SELECT 1 FROM dns_rollups WHERE hour < $start LIMIT 1))""",
                              {"start": window.start}).fetchall()[0][0]
    if has_history:
        known = f"""SELECT DISTINCT owner FROM ({owner_sql('''SELECT DISTINCT query_name AS name FROM dns_queries
                        WHERE time < $start AND time >= $lb UNION SELECT DISTINCT query_name FROM dns_rollups
                        WHERE hour < $start AND hour >= $lb''')}) WHERE owner IS NOT NULL"""
        cutoff = "$start::TIMESTAMP"
    else:
        cutoff = f"(SELECT greatest($start::TIMESTAMP, min(first_seen)) FROM susp_names) + to_microseconds({int(cfg.baseline_hours * 3.6e9)})"
        known = f"SELECT DISTINCT owner FROM susp_names WHERE first_seen < {cutoff}"
    sig_sql = (f"(coalesce(txt_null_share >= {float(cfg.txt_null_share)}, false) OR coalesce(nxdomain_share >= "
               f"{float(cfg.nxdomain_share)}, false) OR coalesce(mean_label_length, 0) >= {float(cfg.long_label)})")
    run_sql(con, f"""
      CREATE OR REPLACE TEMP TABLE susp_new AS
      WITH o AS (SELECT owner, sum(queries)::BIGINT AS queries, sum(txt) / sum(queries) AS txt_null_share,
                        sum(nx) / sum(queries) AS nxdomain_share, count(*)::BIGINT AS unique_names,
                        avg(length(name) - length(owner) - 1) FILTER (WHERE name <> owner) AS mean_label_length,
                        list_sort(list_distinct(flatten(list(sources))))[:10] AS sources,
                        min(first_seen) AS first_seen, max(last_seen) AS last_seen
                 FROM susp_names WHERE owner IS NOT NULL GROUP BY owner)
      SELECT *, {sig_sql} AS sig FROM o WHERE first_seen >= {cutoff} AND owner NOT IN ({known})""", params)


def newly_seen(con: duckdb.DuckDBPyConnection, cfg: SuspicionConfig, also: list[str] = ()) -> pl.DataFrame:
    """Findings of `susp_new`: every zone with a signal, the `max_listed` busiest of the others, and the
    zones `also` names (those beacons found) wherever they rank."""
    con.register("susp_new_also", pl.DataFrame({"owner": list(also)}, schema={"owner": pl.String}).to_arrow())
    try:
        df = frame(con, f"""SELECT * FROM susp_new
                            QUALIFY sig OR owner IN (SELECT owner FROM susp_new_also)
                              OR row_number() OVER (PARTITION BY sig ORDER BY queries DESC, owner) <= {int(cfg.max_listed)}""")
    finally:
        con.unregister("susp_new_also")
    sig = pl.col("sig")
    out = df.with_columns(
        pl.col("owner").alias("subject"), pl.col("owner").alias("domain"), pl.lit("zone").alias("scope"),
        pl.lit("newly_seen").alias("kind"), sig.alias("never_allow"), sig.alias("withhold"), sig.alias("escalates"),
        pl.format("first seen {}; {}", pl.col("first_seen").dt.strftime("%Y-%m-%d %H:%M"),
                  pl.when(sig).then(pl.lit("with TXT/NXDOMAIN/long-label signals")).otherwise(pl.lit("no other signal")))
        .alias("detail"))
    return conform(out, NAME_SCHEMA)


def newly_seen_unlisted(con: duckdb.DuckDBPyConnection, listed: set[str]) -> int:
    """How many zones of `susp_new` are not in `listed` (the newly seen findings kept, and every subject or
    owner zone found for another reason): the exact count behind "and N more newly seen zones"."""
    con.register("susp_new_listed", pl.DataFrame({"owner": sorted(listed)}, schema={"owner": pl.String}).to_arrow())
    try:
        return int(con.execute("SELECT count(*) FROM susp_new ANTI JOIN susp_new_listed USING (owner)").fetchall()[0][0])
    finally:
        con.unregister("susp_new_listed")


def beacons(con: duckdb.DuckDBPyConnection, window: Window, cfg: SuspicionConfig) -> pl.DataFrame:
    """(source, newly seen zone) pairs reached at regular intervals (raw DNS queries and flows; events
    less than 2 s apart count as one, so a query and its connection are one contact). The zones are every
    newly seen one (`susp_new`), listed or not."""
    empty = pl.DataFrame(schema={"source_ip": pl.String, "zone": pl.String, "events": pl.Int64, "period_s": pl.Float64,
                                 "cv": pl.Float64, "first_seen": pl.Datetime("us"), "last_seen": pl.Datetime("us")})
    if not con.execute("SELECT count(*) FROM (SELECT 1 FROM susp_new LIMIT 1)").fetchall()[0][0]:
        return empty
    return frame(con, f"""
          WITH ev AS (SELECT source_ip, query_name AS name, time FROM dns_queries
                      WHERE time >= $start AND time < $end AND source_ip IS NOT NULL AND query_name IS NOT NULL
                      UNION ALL SELECT source_ip, lower(destination_fqdn), time FROM flows
                      WHERE time >= $start AND time < $end AND destination_fqdn IS NOT NULL AND source_ip IS NOT NULL),
          own AS ({owner_sql('SELECT DISTINCT name FROM ev')}),
          z AS (SELECT ev.source_ip, own.owner AS zone, ev.time FROM ev JOIN own USING (name)
                JOIN susp_new nz ON own.owner = nz.owner),
          g AS (SELECT *, epoch(time) - lag(epoch(time)) OVER (PARTITION BY source_ip, zone ORDER BY time) AS gap FROM z),
          s AS (SELECT source_ip, zone, (count(gap) FILTER (WHERE gap >= 2) + 1)::BIGINT AS events,
                       avg(gap) FILTER (WHERE gap >= 2) AS period_s,
                       stddev_pop(gap) FILTER (WHERE gap >= 2) / avg(gap) FILTER (WHERE gap >= 2) AS cv,
                       min(time) AS first_seen, max(time) AS last_seen
                FROM g GROUP BY ALL)
          SELECT * FROM s WHERE events >= {int(cfg.beacon_min_events)} AND period_s >= {float(cfg.beacon_min_period_s)}
            AND cv <= {float(cfg.beacon_max_cv)}""", {"start": window.start, "end": window.end})
