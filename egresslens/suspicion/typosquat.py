"""ASCII look-alikes: owner zones that imitate a reference name (typosquats).

A name is a look-alike when the label that makes its owner zone registrable (`pyhtonhosted` in
`files.pyhtonhosted.org`) is, against the same label of a **reference** owner zone:

- one edit away (Damerau-Levenshtein: a swapped pair, one letter added, dropped or changed);
- the same after confusable substitutions (`rn`/`m`, `vv`/`w`, `0`/`o`, `1`/`l`) or with a hyphen
  added or dropped;
- the same label under another public suffix (`pypi.org` -> `pypi.com`; ICANN suffixes only: a
  storage account under `blob` and under `file` is the same tenant).

References: the catalogue (`egresslens/data/recommend/catalogue.toml`), the names the policy allows
(when a policy is given) and the owner zones many clean sources use in the window. A catalogue or
policy name is never a look-alike itself; of two names only usage vouches for, the one fewer clean
sources use imitates the other. Labels that differ only in their digits (`storders01`/`storders02`)
are numbered siblings, not look-alikes.

Bounded on any number of names: one pass in DuckDB joins every owner zone to the references on
equal keys (the label with one character deleted, the normalised label, the bare label), so the
cost grows with the names, never with names x references; Python sees only the matched pairs.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources
from typing import Iterable

import duckdb
import polars as pl
from publicsuffixlist import PublicSuffixList

from egresslens.analyse import frame, run_sql
from egresslens.suspicion.model import NAME_SCHEMA, SuspicionConfig, conform
from egresslens.suspicion.suffixes import multitenant_suffixes, owner_zone

NORM_MACRO = """
CREATE OR REPLACE TEMP MACRO susp_norm(l) AS
  replace(replace(replace(replace(replace(l, 'rn', 'm'), 'vv', 'w'), '0', 'o'), '1', 'l'), '-', '')
"""
_PLACEHOLDER = re.compile(r"<[a-z-]+>")


@lru_cache(maxsize=1)
def catalogue_names() -> tuple[str, ...]:
    """Every name the dependency catalogue documents (placeholders as one label, wildcards without `*.`)."""
    text = resources.files("egresslens").joinpath("data", "recommend", "catalogue.toml").read_text()
    out = {_PLACEHOLDER.sub("x", e["pattern"]).removeprefix("*.") for b in tomllib.loads(text)["bundle"]
           for e in b["entries"]}
    return tuple(sorted(out))


@lru_cache(maxsize=1)
def _icann() -> PublicSuffixList:
    return PublicSuffixList(only_icann=True)


def _icann_suffix(suffix: str) -> bool:
    return _icann().is_public(suffix) and suffix not in multitenant_suffixes()


def _reference_frame(policy_names: Iterable[str]) -> pl.DataFrame:
    rows: dict[str, tuple[str, str]] = {}
    for origin, names in (("in the catalogue", catalogue_names()), ("allowed by the policy", policy_names)):
        for n in names:
            n = str(n).lower().strip().removeprefix("*.").rstrip(".")
            owner = owner_zone(n) if n and "*" not in n else None
            if owner and owner not in rows:
                rows[owner] = (n, origin)
    return pl.DataFrame({"owner": list(rows), "example": [v[0] for v in rows.values()],
                         "origin": [v[1] for v in rows.values()]},
                        schema={"owner": pl.String, "example": pl.String, "origin": pl.String})


def lookalikes(con: duckdb.DuckDBPyConnection, cfg: SuspicionConfig, policy_names: Iterable[str],
               compromised: list[str]) -> pl.DataFrame:
    """Look-alike owner zones (NAME_SCHEMA rows, kind `lookalike`). Needs the tables of `names.build_tables`."""
    run_sql(con, NORM_MACRO)
    con.register("susp_refs_in", _reference_frame(policy_names).to_arrow())
    con.register("susp_bad_src", pl.DataFrame({"source_ip": compromised}, schema={"source_ip": pl.String}).to_arrow())
    k, short = int(cfg.lookalike_reference_sources), int(cfg.lookalike_min_length)
    try:
        run_sql(con, f"""
          CREATE OR REPLACE TEMP TABLE susp_owner_use AS
          SELECT a.owner, count(DISTINCT u.source_ip)::BIGINT AS sources
          FROM (SELECT source_ip, name FROM susp_qs UNION SELECT source_ip, name FROM susp_fq) u
          JOIN susp_allnames a USING (name)
          WHERE u.source_ip IS NOT NULL AND a.owner IS NOT NULL AND u.source_ip NOT IN (SELECT source_ip FROM susp_bad_src)
          GROUP BY a.owner""")
        run_sql(con, f"""
          CREATE OR REPLACE TEMP TABLE susp_refs AS
          WITH r AS (SELECT owner, example, origin FROM susp_refs_in
                     UNION ALL SELECT owner, NULL, NULL FROM susp_owner_use WHERE sources >= {k})
          SELECT owner, min(example) AS example, min(origin) AS origin, coalesce(any_value(u.sources), 0) AS sources,
                 split_part(owner, '.', 1) AS label, owner[length(split_part(owner, '.', 1)) + 2:] AS suffix
          FROM r LEFT JOIN susp_owner_use u USING (owner) GROUP BY owner""")
        pairs = frame(con, f"""
          WITH c AS (SELECT o.owner, coalesce(u.sources, 0) AS sources, split_part(o.owner, '.', 1) AS label,
                            o.owner[length(split_part(o.owner, '.', 1)) + 2:] AS suffix
                     FROM (SELECT DISTINCT owner FROM susp_allnames WHERE owner IS NOT NULL) o
                     LEFT JOIN susp_owner_use u USING (owner)
                     WHERE o.owner NOT IN (SELECT owner FROM susp_refs WHERE origin IS NOT NULL)),
          c1 AS (SELECT * FROM c WHERE length(label) >= 3 AND suffix IN (SELECT suffix FROM susp_refs)),
          ck AS (SELECT owner, suffix, label,
                        CASE WHEN i = 0 THEN label ELSE label[:i - 1] || label[i + 1:] END AS k
                 FROM (SELECT *, unnest(range(0, length(label) + 1)) AS i FROM c1 WHERE length(label) >= {short - 1})),
          rk AS (SELECT owner, suffix, label,
                        CASE WHEN i = 0 THEN label ELSE label[:i - 1] || label[i + 1:] END AS k
                 FROM (SELECT *, unnest(range(0, length(label) + 1)) AS i FROM susp_refs WHERE length(label) >= {short})),
          p AS (SELECT DISTINCT ck.owner, rk.owner AS ref, 'edit' AS how FROM ck JOIN rk USING (suffix, k)
                WHERE ck.owner <> rk.owner AND damerau_levenshtein(ck.label, rk.label) = 1
                UNION ALL
                SELECT c1.owner, r.owner, CASE WHEN replace(c1.label, '-', '') = replace(r.label, '-', '')
                                               THEN 'hyphen' ELSE 'confusable' END
                FROM c1 JOIN susp_refs r ON c1.suffix = r.suffix AND susp_norm(c1.label) = susp_norm(r.label)
                WHERE c1.owner <> r.owner
                UNION ALL
                SELECT c.owner, r.owner, 'suffix' FROM c JOIN susp_refs r USING (label)
                WHERE c.suffix <> r.suffix AND length(c.label) >= 4)
          SELECT p.owner AS subject, p.ref AS looks_like, p.how, c.label, c.suffix, c.sources AS clean_sources,
                 r.label AS ref_label, r.suffix AS ref_suffix, r.sources AS ref_sources, r.example, r.origin
          FROM p JOIN c USING (owner) JOIN susp_refs r ON r.owner = p.ref
          -- only use vouches for the reference: it must be used more than this name; numbered siblings
          -- (labels equal but for their digits) are not look-alikes
          WHERE (r.origin IS NOT NULL OR c.sources < r.sources)
            AND (p.how = 'suffix' OR NOT regexp_matches(c.label, '[0-9]')
                 OR regexp_replace(c.label, '[0-9]+', '#', 'g') <> regexp_replace(r.label, '[0-9]+', '#', 'g'))""")
    finally:
        con.unregister("susp_refs_in")
        con.unregister("susp_bad_src")
    best: dict[str, dict] = {}
    order = {"hyphen": 0, "confusable": 1, "edit": 2, "suffix": 3}
    for r in pairs.iter_rows(named=True):
        if r["how"] == "suffix" and not (_icann_suffix(r["suffix"]) and _icann_suffix(r["ref_suffix"])):
            continue
        rank = (r["origin"] is None, -r["ref_sources"], order[r["how"]], r["looks_like"])
        if r["subject"] not in best or rank < best[r["subject"]]["rank"]:
            best[r["subject"]] = {**r, "rank": rank}
    if not best:
        run_sql(con, "DROP TABLE IF EXISTS susp_refs")
        return conform(pl.DataFrame(), NAME_SCHEMA)
    found = pl.DataFrame([{k: v for k, v in b.items() if k != "rank"} for b in best.values()], infer_schema_length=None)
    con.register("susp_found_in", found.select("subject").to_arrow())
    try:
        stats = frame(con, """
          SELECT a.owner AS subject, sum(q)::BIGINT AS queries,
                 list_sort(list_distinct(list(u.source_ip) FILTER (WHERE u.source_ip IS NOT NULL)))[:10] AS sources,
                 min(u.first_seen) AS first_seen, max(u.last_seen) AS last_seen
          FROM (SELECT source_ip, name, queries AS q, first_seen, last_seen FROM susp_qs
                UNION ALL SELECT source_ip, name, hits, first_seen, last_seen FROM susp_fq) u
          JOIN susp_allnames a USING (name) SEMI JOIN susp_found_in f ON f.subject = a.owner
          GROUP BY a.owner""")
    finally:
        con.unregister("susp_found_in")
        run_sql(con, "DROP TABLE IF EXISTS susp_refs")
    what = {"edit": "one edit away (a swapped, added, dropped or changed letter)",
            "confusable": "confusable characters (rn/m, vv/w, 0/o, 1/l)", "hyphen": "a hyphen added or dropped",
            "suffix": "the same name under another public suffix"}
    out = found.join(stats, on="subject", how="left").with_columns(
        pl.col("subject").alias("domain"), pl.lit("zone").alias("scope"), pl.lit("lookalike").alias("kind"),
        pl.lit(True).alias("never_allow"), pl.lit(True).alias("withhold"), pl.lit(True).alias("escalates"),
        pl.format("look-alike of {} ({}; {})", pl.coalesce("example", "looks_like"),
                  pl.col("how").replace_strict(what, return_dtype=pl.String),
                  pl.coalesce("origin", pl.format("used by {} clean sources", "ref_sources"))).alias("detail"))
    return conform(out, NAME_SCHEMA)
