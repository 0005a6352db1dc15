"""Normalise raw Azure Firewall records into the canonical tables, in DuckDB SQL over whole batches.

Input: a relation ``batch(rid, source, position, record_index, raw)``, ``raw`` one record as JSON text in
any shape: a storage/Event Hub envelope (``properties`` holds the columns, or ``properties.msg`` the
legacy text), a Log Analytics row (columns at the top level, ``Type`` names the table) or an
AzureDiagnostics row (``msg_s``). Output: one staging table per canonical table plus ``stage_rejects``
(records refused, with the reason). All SQL, so the hot path stays columnar.

Two routes, one result. The fast route takes the common records: compact envelopes of the six AZFW
categories that carry flows, DNS queries and threats (each parsed once, into only the fields its table
reads, straight into the canonical statement), compact legacy envelopes (a narrow parse, then the same
grammars), and tabular rows of those categories (Log Analytics results and CSV exports, read from their
columns, without a round trip through JSON). Every other record (odd or hostile shapes, and any record
the fast route does not confirm after parsing) takes the generic route through one wide parse. The canonical SQL
(egresslens/canonical.py) is the same for both, and tests/test_fast_route.py holds the two routes to
the same rows on every corpus.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from egresslens.azfw import (  # noqa: F401  (re-exported: the normaliser's vocabulary)
    ENVELOPE_FIELDS, FAST_CATEGORIES, FLAT_FIELDS, LEGACY, LEGACY_CATEGORIES, STRUCTURED_FIELDS, STRUCTURED_TARGETS,
)
from egresslens.canonical import TARGETS_OF, _groups, canon_table, canonical_select, canonical_sql, structured_fields
from egresslens.escape import sql_identifier as _ident, sql_string as _lit
from egresslens.schema import TABLES_BY_NAME
from egresslens.stage import count_lines, counted_beside, csv_columns, csv_head

# DuckDB struct keys are case-insensitive, so these case variants are read by path instead.
CASE_VARIANTS = ["$.Category", "$.ResourceId", "$.OperationName"]

from egresslens.legacy_position import app_position_sql, contains_marker  # noqa: E402
from egresslens.legacy_grammar import (  # noqa: E402  the legacy msg_s grammars
    DNS_ERR_GROUPS, DNS_ERR_RE, DNS_GROUPS, DNS_RE, IDS_GROUPS, IDS_RE, NAT_GROUPS, NAT_RE,
    NET_GROUPS, NET_RE, TI_GROUPS, TI_RE,
)


def _envelope_structure() -> str:
    props = {f: "VARCHAR" for f in STRUCTURED_FIELDS + ["msg", "Category"]}
    return json.dumps({**{f: "VARCHAR" for f in ENVELOPE_FIELDS}, "properties": props})


def _flat_structure() -> str:
    return json.dumps({f: "VARCHAR" for f in FLAT_FIELDS + STRUCTURED_FIELDS})


def _field(name: str) -> str:
    return f"coalesce(nullif(r.properties.{name}, ''), nullif(t.{name}, ''))"


# -- stage 1: one struct per record, the target table decided ------------------------------------

def _time(text: str) -> str:
    """The event time from its text: ISO 8601 with any offset, or the US form of Log Analytics exports."""
    return (f"coalesce(try_cast({text} AS TIMESTAMPTZ)::TIMESTAMP, try_strptime({text}, "
            "['%m/%d/%Y, %I:%M:%S.%g %p', '%m/%d/%Y, %I:%M:%S %p', '%m/%d/%Y %I:%M:%S %p']))")


# The table a legacy message text belongs to, from the text itself (a NAT line is filed under the
# network category; threat-intel and IDPS lines under either). Each regular expression runs only on the
# lines a plain prefix test cannot decide: `_LEGACY_TARGET_REGEX` is the rule, and tests/test_normalise.py
# holds the two equal.
_LEGACY_TARGET_REGEX = """
      CASE
        WHEN regexp_matches(msg, '^\\s*DNS Request:') OR regexp_matches(msg, '^\\s*Error: \\d+ ') THEN 'dns'
        WHEN contains(msg, ' was DNAT''ed to ') THEN 'nat'
        WHEN contains(msg, ' ThreatIntel: ') THEN 'threat_intel'
        WHEN contains(msg, ' Signature: ') AND contains(msg, ' IDS: ') THEN 'idps'
        WHEN regexp_matches(msg, '^(HTTPS|HTTP|MSSQL)\\s+request') THEN 'application'
        WHEN regexp_matches(msg, '^(TCP|UDP|ICMP)[ ]') THEN 'network'
      END"""
# (RE2's \s: tab, line feed, form feed, carriage return, space)
_SPACE = "left(msg, 1) IN (' ', chr(9), chr(10), chr(12), chr(13))"
# A DNS line that reports a failed lookup (`^\s*Error: `), told by a prefix test unless it starts with a space.
_DNS_ERROR = (f"CASE WHEN target = 'dns' THEN starts_with(msg, 'Error: ') "
              f"OR ({_SPACE} AND regexp_matches(msg, '^\\s*Error: ')) END")
_LEGACY_TARGET = f"""
      CASE
        WHEN starts_with(msg, 'DNS Request:')
          OR (starts_with(msg, 'Error: ') AND regexp_matches(msg, '^Error: \\d+ '))
          OR ({_SPACE} AND (regexp_matches(msg, '^\\s*DNS Request:') OR regexp_matches(msg, '^\\s*Error: \\d+ ')))
          THEN 'dns'
        WHEN {contains_marker('msg', " was DNAT'ed to ")} THEN 'nat'
        WHEN {contains_marker('msg', ' ThreatIntel: ')} THEN 'threat_intel'
        WHEN {contains_marker('msg', ' Signature: ')} AND {contains_marker('msg', ' IDS: ')} THEN 'idps'
        WHEN starts_with(msg, 'HTTPS request') OR starts_with(msg, 'HTTP request') OR starts_with(msg, 'MSSQL request')
          OR ((starts_with(msg, 'HTTP') OR starts_with(msg, 'MSSQL')) AND regexp_matches(msg, '^(HTTPS|HTTP|MSSQL)\\s+request'))
          THEN 'application'
        WHEN starts_with(msg, 'TCP ') OR starts_with(msg, 'UDP ') OR starts_with(msg, 'ICMP ') THEN 'network'
      END"""


def _stage_sql(guarded: bool, source: str = "batch", *, append: bool = False) -> str:
    """The stage statement. Unguarded, a record that is not JSON fails the whole statement, and the
    batch is staged again guarded: `try()` doubles the parse's cost, so only such batches pay for it."""
    if guarded:
        parse = "try(json_transform(raw, {envelope}))"
        reparse = "CASE WHEN r.properties IS NULL THEN try(json_transform(raw, {flat})) END"
    else:
        parse = "json_transform(raw, {envelope})"
        reparse = "CASE WHEN r.properties IS NULL THEN json_transform(raw, {flat}) END"
    fields = ",\n      ".join(f"{_field(f)} AS f_{f}" for f in STRUCTURED_FIELDS)
    envelope = _lit(_envelope_structure())
    flat = _lit(_flat_structure())
    variants = "[" + ", ".join(_lit(p) for p in CASE_VARIANTS) + "]"
    legacy_target = _LEGACY_TARGET
    targets = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in STRUCTURED_TARGETS.items())
    head = "INSERT INTO stage_generic BY NAME" if append else "CREATE OR REPLACE TEMP TABLE stage_generic AS"
    return f"""
{head}
WITH parsed AS (
  -- one JSON parse per record, into the envelope shape; invalid JSON gives NULL here and a
  -- reason in stage_rejects
  SELECT rid, raw, {parse.format(envelope=envelope)} AS r
  FROM {source}
), flat AS (
  -- records without `properties` are Log Analytics rows: parse those again in the flat shape
  SELECT *, {reparse.format(flat=flat)} AS t
  FROM parsed
), varied AS (
  SELECT *,
    CASE WHEN t IS NOT NULL AND (nullif(t.Type, 'AzureDiagnostics') IS NULL OR t._ResourceId IS NULL
                                 OR t.Type = 'AZFWIdpsSignature')  -- its classification column is Category
              OR (r.properties IS NOT NULL AND r.resourceId IS NULL)
         THEN try(json_extract_string(raw, {variants})) END AS v
  FROM flat
), shaped AS (
  SELECT rid, r, t, v,
    coalesce(nullif(r.time, ''), nullif(t.TimeGenerated, '')) AS time_text,
    coalesce(nullif(r.category, ''), nullif(nullif(t.Type, ''), 'AzureDiagnostics'),
             CASE WHEN v[1] LIKE 'AzureFirewall%' OR v[1] LIKE 'AZFW%' THEN v[1] END) AS log_category,
    coalesce(nullif(r.properties.msg, ''), nullif(t.msg_s, '')) AS msg,
    lower(coalesce(nullif(r.resourceId, ''), nullif(t._ResourceId, ''), nullif(v[2], ''), nullif(t.Resource, ''))) AS firewall,
    CASE WHEN r.category = 'AZFWIdpsSignature' THEN nullif(r.properties.Category, '')
         WHEN t.Type = 'AZFWIdpsSignature' THEN nullif(v[1], '') END AS f_Category,
    {fields}
  FROM varied
)
SELECT * EXCLUDE (r, t, v),
  {_time('time_text')} AS ts,
  CASE WHEN msg IS NOT NULL THEN 'legacy' ELSE 'structured' END AS log_format,
  CASE WHEN msg IS NOT NULL THEN {legacy_target}
       ELSE CASE log_category {targets} END END AS target
FROM shaped
"""


# -- stage 2: the legacy grammars applied to the lines of each target ----------------------------

def _legacy_rows_sql(table: str) -> str:
    """The legacy lines of one stage table with their message text parsed."""
    lines = (f"(SELECT rid, ts, firewall, target, log_format, msg FROM {table} "
             "WHERE log_format = 'legacy' AND target IS NOT NULL)")
    return f"""
SELECT rid, ts, firewall, target, log_format,
  -- application lines of the usual shape are read by position, the others by APP_RE (the same struct);
  -- app_form says which
  app, app_form,
  CASE target WHEN 'network' THEN regexp_extract(msg, {_lit(NET_RE)}, {_groups(NET_GROUPS)}) END AS net,
  CASE target WHEN 'nat' THEN regexp_extract(msg, {_lit(NAT_RE)}, {_groups(NAT_GROUPS)}) END AS nat,
  CASE target WHEN 'threat_intel' THEN regexp_extract(msg, {_lit(TI_RE)}, {_groups(TI_GROUPS)}) END AS ti,
  CASE target WHEN 'idps' THEN regexp_extract(msg, {_lit(IDS_RE)}, {_groups(IDS_GROUPS)}) END AS ids,
  CASE WHEN target = 'dns' AND NOT dns_error
       THEN regexp_extract(msg, {_lit(DNS_RE)}, {_groups(DNS_GROUPS)}) END AS dns,
  CASE WHEN target = 'dns' AND dns_error
       THEN regexp_extract(msg, {_lit(DNS_ERR_RE)}, {_groups(DNS_ERR_GROUPS)}) END AS dns_err
FROM (SELECT *, {_DNS_ERROR} AS dns_error FROM ({app_position_sql(lines)}))"""


def _legacy_sql() -> str:
    """The `legacy` view: the legacy lines of `stage` (both its tables), parsed. Each table is parsed on its
    own and the two joined after: string functions over rows filtered through a union run about twice as
    slow, and the reading by position calls several."""
    return (f"CREATE OR REPLACE TEMP VIEW legacy AS {_legacy_rows_sql('stage_generic')}\n"
            f"UNION ALL BY NAME {_legacy_rows_sql('stage_legacy')}\n")


# Reason prefix for an AZFW category this version does not know (`ingest` sums them up per run).
UNKNOWN_CATEGORY = "unknown Azure Firewall log category (newer than this EgressLens?): "


_REJECTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE stage_rejects AS
SELECT s.rid,
  CASE
    WHEN starts_with(b.raw, chr(0)) THEN 'invalid UTF-8 (the bytes that are not UTF-8 are shown as \\xNN)'
    WHEN NOT json_valid(b.raw) THEN 'not valid JSON (truncated or corrupt record)'
    WHEN json_type(b.raw) <> 'OBJECT' THEN 'record is not a JSON object'
    WHEN s.log_format = 'legacy' THEN 'unrecognised Azure Firewall message text'
    WHEN s.log_category IS NULL THEN 'no category or table name: not an Azure Firewall log record'
    WHEN s.log_category IN ({", ".join(_lit(c) for c in LEGACY_CATEGORIES)})
      THEN s.log_category || ' record without its message text (properties.msg or msg_s)'
    WHEN s.log_category LIKE 'AZFW%' THEN {_lit(UNKNOWN_CATEGORY)} || s.log_category
    ELSE 'not an Azure Firewall log category: ' || s.log_category
  END AS reason
FROM stage s JOIN batch b USING (rid) WHERE s.target IS NULL
"""



# -- the fast route -----------------------------------------------------------------------------------

# The categories the fast route takes, by the table they fill. A record is routed by the text
# `"category":"<name>"` in its line (compact JSON, as Azure writes it); that is only a guess (log text is
# attacker-controlled), so after parsing, `_confirmed` checks the record really is a compact envelope of
# that category. A record it does not confirm takes the generic route, where every shape is understood.
_CATEGORY_TEXT = '"category":"%s"'
UNCONFIRMED = "unconfirmed"
# Legacy records (AzureFirewall* categories, the columns as text in properties.msg) are routed too:
# their message text is read by the same grammars; only the parse of the record is narrower.
# (every legacy category starts with AzureFirewall: one test routes them all; `_legacy_stage_sql` checks)
_ROUTE_SQL = (f"CREATE OR REPLACE TEMP TABLE batch_route AS SELECT rid, CASE WHEN contains(raw, "
              f"{_lit(_CATEGORY_TEXT.replace('%s', 'AzureFirewall').rstrip(chr(34)))}) THEN {_lit(LEGACY)} " + " ".join(
    f"WHEN contains(raw, {_lit(_CATEGORY_TEXT % category)}) THEN {_lit(name)}"
    for name, categories in FAST_CATEGORIES.items() for category in categories
) + " END AS route FROM batch WHERE NOT starts_with(raw, chr(0))")

_LEGACY_SPEC = {"time": "VARCHAR", "category": "VARCHAR", "resourceId": "VARCHAR", "properties": {"msg": "VARCHAR"}}
_ROUTED_LEGACY = (f"SELECT rid, json_transform(b.raw, {_lit(json.dumps(_LEGACY_SPEC))}) AS r "
                  f"FROM batch b JOIN batch_route USING (rid) WHERE route = {_lit(LEGACY)}")


def _legacy_stage_sql(parsed: str = _ROUTED_LEGACY) -> str:
    """Legacy records (`parsed`: rid, r in `_LEGACY_SPEC`'s shape; default: the batch's routed lines) into the
    stage, with the columns the generic stage gives them (their f_<Field> columns stay NULL: legacy rows are
    read from their text, never from fields). Unconfirmed ones are marked, as in `fast_source`, and sent the
    generic way."""
    return f"""
CREATE OR REPLACE TEMP TABLE stage_legacy AS
SELECT rid, time_text, log_category, msg, firewall, {_time('time_text')} AS ts,
  CASE WHEN confirmed THEN 'legacy' ELSE {_lit(UNCONFIRMED)} END AS log_format,
  CASE WHEN confirmed THEN {_LEGACY_TARGET} END AS target
FROM (
  SELECT rid, nullif(r.time, '') AS time_text, nullif(r.category, '') AS log_category,
    nullif(r.properties.msg, '') AS msg, lower(nullif(r.resourceId, '')) AS firewall,
    coalesce(r.category IN ({", ".join(_lit(c) for c in LEGACY_CATEGORIES)}) AND r.resourceId IS NOT NULL
             AND nullif(r.properties.msg, '') IS NOT NULL, false) AS confirmed
  FROM ({parsed})
)
"""


# A batch of no lines: the stage tables of a batch the fast route reads whole are built from it.
_NO_LINES = ("(SELECT NULL::BIGINT AS rid, NULL::VARCHAR AS source, NULL::BIGINT AS position, "
             "NULL::INTEGER AS record_index, NULL::VARCHAR AS raw LIMIT 0)")
_EMPTY_LEGACY_STAGE = _legacy_stage_sql(f"SELECT rid, json_transform(raw, {_lit(json.dumps(_LEGACY_SPEC))}) AS r "
                                       f"FROM {_NO_LINES}")
# The stage every later statement reads: the generic route's wide rows and the legacy fast route's narrow
# ones (their field columns read as NULL).
_STAGE_VIEW = "CREATE OR REPLACE TEMP VIEW stage AS SELECT * FROM stage_generic UNION ALL BY NAME SELECT * FROM stage_legacy"


def _fast_spec(name: str) -> dict:
    """The record shape the fast route parses for one table: the envelope and the fields it reads."""
    return {"time": "VARCHAR", "category": "VARCHAR", "resourceId": "VARCHAR",
            "properties": {f: "VARCHAR" for f in sorted({*structured_fields(name), "msg"})}}


def fast_source(name: str, parsed: str | None = None) -> str:
    """The routed records of one table, parsed into only the fields its canonical statement reads.

    The relation has the generic stage's columns (rid, log_format, firewall, ts, target, f_<Field>) with
    the same values the generic route gives these records. A record `_confirmed` does not hold has
    log_format 'unconfirmed' (a column, not a filter: a filter would be pushed into the scan and parse
    each record once per condition); `normalise_batch` sends it the generic way. `parsed` (rid, r) is
    where the parsed records come from (default: the batch's routed lines)."""
    fields = structured_fields(name)
    spec = json.dumps(_fast_spec(name))
    routed = (f"SELECT rid, json_transform(b.raw, {_lit(spec)}) AS r "
              f"FROM batch b JOIN batch_route USING (rid) WHERE route = {_lit(name)}")
    categories = FAST_CATEGORIES[name]
    targets = " ".join(f"WHEN {_lit(c)} THEN {_lit(STRUCTURED_TARGETS[c])}" for c in categories)
    columns = ",\n    ".join(
        # the IDPS classification lives in properties.Category (the generic stage reads it the same way)
        "CASE WHEN r.category = 'AZFWIdpsSignature' THEN nullif(r.properties.Category, '') END AS f_Category"
        if f == "Category" else f"nullif(r.properties.{f}, '') AS f_{f}" for f in fields)
    return f"""(
  SELECT rid, CASE WHEN {_confirmed(categories)} THEN 'structured' ELSE {_lit(UNCONFIRMED)} END AS log_format,
    lower(nullif(r.resourceId, '')) AS firewall,
    {_time("nullif(r.time, '')")} AS ts, CASE r.category {targets} END AS target,
    {columns}
  FROM ({parsed or routed})
)"""


def _read_json_columns(spec: dict) -> str:
    """A `read_json(columns = ...)` argument for a record shape."""
    def sql_type(t) -> str:
        return t if isinstance(t, str) else "STRUCT(" + ", ".join(f"{_ident(k)} {sql_type(v)}" for k, v in t.items()) + ")"
    return "{" + ", ".join(f"{_lit(k)}: {_lit(sql_type(v))}" for k, v in spec.items()) + "}"


def archive_records(paths: list[str], name: str) -> str:
    """The records of whole JSON Lines files as DuckDB's JSON reader reads them (every thread, no line
    handed over from Python): `rid` the file's index in `paths`, `r` the record in the shape the route
    `name` parses (a table's fields, or LEGACY's message text)."""
    spec = _LEGACY_SPEC if name == LEGACY else _fast_spec(name)
    files = "[" + ", ".join(_lit(p) for p in paths) + "]"
    index = "CASE filename " + " ".join(f"WHEN {_lit(p)} THEN {i}" for i, p in enumerate(paths)) + " END"
    return (f"SELECT {index} AS rid, {{'time': time, 'category': category, 'resourceId': resourceId, "
            f"'properties': properties}} AS r FROM read_json({files}, format = 'newline_delimited', "
            f"columns = {_read_json_columns(spec)}, filename = true, compression = 'none', "
            "hive_partitioning = false, maximum_object_size = 16777216)")


def whole_file_selects(con: duckdb.DuckDBPyConnection, name: str, source: str) -> dict[str, str]:
    """The canonical rows (`canonical.canonical_select`) of files read whole, by table: `name` a table and
    `source` its structured rows (`fast_source` over `archive_records`, or `csv_records`), or `name`
    LEGACY and `source` legacy records (`archive_records`), which are staged first (every table's
    grammars read them), for each table they fill."""
    _empty_stage(con)
    if name != LEGACY:
        return {name: canonical_select(name, source, legacy=False)}
    con.execute(_legacy_stage_sql(source))
    con.execute(_legacy_sql())
    present = {t for (t,) in con.execute("SELECT DISTINCT target FROM stage_legacy WHERE target IS NOT NULL"
                                         ).fetchall()}
    return {table: canonical_select(table) for table, targets in TARGETS_OF.items() if targets & present}


def normalise_archive(con: duckdb.DuckDBPyConnection, paths: list[str], name: str
                      ) -> tuple[dict[int, int], set[int], list[str]]:
    """Whole JSON Lines files (`archive_records`) into canonical rows, as the fast route would read their
    lines: the files of one table's categories into `canon_<table>`, or (`name` LEGACY) legacy files,
    their message text read by the grammars, into the tables their records belong to.

    A file holding anything the fast route would not confirm, a record that is refused, or a line the
    reader cannot take is left out whole, to be read line by line (where every record gets its
    position and its quarantine reason). Returns ({file index: records taken}, {file indexes left out},
    the tables built). The rows' `rid` is their file's index in `paths`."""
    parsed = archive_records(paths, name)
    try:
        selects = whole_file_selects(con, name, parsed if name == LEGACY else fast_source(name, parsed))
        for table, select in selects.items():
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_canon(table)} AS {select}")
    except (duckdb.Error, UnicodeDecodeError):  # a line the reader cannot take: every file line by line
        return {}, set(range(len(paths))), []
    built = list(selects)
    tables = [_canon(n) for n in built]
    refused = [f"SELECT rid FROM {t} WHERE log_format = {_lit(UNCONFIRMED)} OR reject_reason IS NOT NULL "
               "OR rid IS NULL" for t in tables]
    if name == LEGACY:  # a record not confirmed, or its text not recognised
        refused.append(f"SELECT rid FROM stage_legacy WHERE log_format = {_lit(UNCONFIRMED)} OR target IS NULL "
                       "OR rid IS NULL")
    bad = {i for (i,) in con.execute(" UNION ".join(refused)).fetchall()} if refused else set()
    if bad:
        for t in tables:
            con.execute(f"DELETE FROM {t} WHERE rid IN (SELECT unnest(?)) OR rid IS NULL", [sorted(bad - {None})])
    taken: dict[int, int] = {}
    for t in tables:
        for rid, n in con.execute(f"SELECT rid, count(*) FROM {t} GROUP BY rid").fetchall():
            taken[rid] = taken.get(rid, 0) + n
    return taken, bad - {None}, built


@dataclass(frozen=True)
class WholeFiles:
    """Files DuckDB reads whole, ready to be stored straight from its reader, with no staging table:
    `selects` each table's canonical rows (`canonical_select`), and `records()` {file index: records the
    file holds} (counted while DuckDB reads). The files are taken only if every record they hold became a
    row that is neither refused (no event id) nor unconfirmed (its log format not one the store knows);
    otherwise they are read the staged way (`normalise_archive`, `normalise_csv`), which finds the record
    and its reason. The selects carry no filter: one would be pushed into the reader's scan."""
    selects: dict[str, str]
    records: Callable[[], dict[int, int] | None]


def whole_archive(con: duckdb.DuckDBPyConnection, paths: list[str], name: str) -> WholeFiles | None:
    """Whole JSON Lines files of one route (`archive_records`, as `normalise_archive` reads them), or None
    when DuckDB cannot read them (a line it cannot take). A structured file holds one record a line, counted
    beside DuckDB's threads; legacy records are staged first, so their count is the stage's."""
    parsed = archive_records(paths, name)
    if name != LEGACY:
        return WholeFiles(whole_file_selects(con, name, fast_source(name, parsed)),
                          counted_beside(lambda: {i: count_lines(p) for i, p in enumerate(paths)}))
    try:
        selects = whole_file_selects(con, LEGACY, parsed)
    except (duckdb.Error, UnicodeDecodeError):
        return None
    held = dict(con.execute("SELECT rid, count(*) FROM stage_legacy GROUP BY rid").fetchall())
    return WholeFiles(selects, lambda: None if None in held else held)


def whole_csv(con: duckdb.DuckDBPyConnection, exports: list[tuple[str, str | None]]) -> WholeFiles | None:
    """CSV exports (path, the table it is named after), each of one table's categories (`csv_records`, `rid`
    its index), read by one statement per table, one row a line (counted beside DuckDB's threads: a value
    spanning lines makes the counts differ), or None when an export's head says it cannot be read whole."""
    found = [csv_records(path, log_table, rid=i) for i, (path, log_table) in enumerate(exports)]
    if not found or None in found:
        return None
    rows: dict[str, list[str]] = {}
    for table, source in found:
        rows.setdefault(table, []).append(f"SELECT * FROM {source}")
    return WholeFiles({t: whole_file_selects(con, t, f"({' UNION ALL '.join(r)})")[t] for t, r in rows.items()},
                      counted_beside(lambda: {i: count_lines(p) - 1 for i, (p, _) in enumerate(exports)}))


def _confirmed(categories: tuple[str, ...]) -> str:
    """What the generic route would conclude of a parsed record, checked: an envelope (properties is an
    object) of one of the categories, naming its firewall, without legacy message text."""
    return (f"r.category IN ({', '.join(_lit(c) for c in categories)}) AND r.properties IS NOT NULL "
            "AND r.resourceId IS NOT NULL AND nullif(r.properties.msg, '') IS NULL")


# Columns that would make a tabular row read differently by the generic route (envelope keys, legacy text).
_NOT_TABULAR = {"time", "category", "operationName", "resourceId", "properties", "msg_s"}


def tabular_source(relation: str, columns: list[str], name: str) -> str:
    """The rows of a tabular batch (Log Analytics rows, CSV exports) of one table's categories, read from
    their columns, with the values the generic route reads from the rows as JSON objects."""
    def col(c: str) -> str:
        return f"CAST({_ident(c)} AS VARCHAR)" if c in columns else "NULL::VARCHAR"

    categories = FAST_CATEGORIES[name]
    targets = " ".join(f"WHEN {_lit(c)} THEN {_lit(STRUCTURED_TARGETS[c])}" for c in categories)
    fields = ",\n    ".join(
        # IDPS rows carry their classification in Category (read by path by the generic route)
        f"CASE WHEN {col('Type')} = 'AZFWIdpsSignature' THEN nullif({col('Category')}, '') END AS f_Category"
        if f == "Category" else f"nullif({col(f)}, '') AS f_{f}" for f in structured_fields(name))
    # the generic route names the firewall by _ResourceId, then (read by path only when _ResourceId is
    # missing, or on IDPS rows) ResourceId, then Resource
    firewall = (f"lower(coalesce(nullif({col('_ResourceId')}, ''), CASE WHEN {col('_ResourceId')} IS NULL "
                f"OR {col('Type')} = 'AZFWIdpsSignature' THEN nullif({col('ResourceId')}, '') END, "
                f"nullif({col('Resource')}, '')))")
    return f"""(
  SELECT rid, 'structured' AS log_format, {firewall} AS firewall,
    {_time(f"nullif({col('TimeGenerated')}, '')")} AS ts, CASE {col('Type')} {targets} END AS target,
    {fields}
  FROM {relation} WHERE {col('Type')} IN ({', '.join(_lit(c) for c in categories)})
)"""


def _tabular_ok(columns: list[str]) -> bool:
    return ("Type" in columns and "TimeGenerated" in columns and len(set(columns)) == len(columns)
            and not _NOT_TABULAR & set(columns))


def csv_records(path: str, log_table: str | None, *, rid: int = 0) -> tuple[str, str] | None:
    """A CSV export of one table's categories as DuckDB's CSV reader reads it (every thread), as that
    table's structured rows, as the tabular route reads its rows: (the table, its rows for
    `whole_file_selects`). None when its head says it cannot be read whole: a header that is not one line
    in this dialect, or naming a column twice, or columns or a first row that are not of one table the fast
    route takes. `log_table`: the table the file is named after (its rows may lack `Type`); `rid`: the rows'."""
    head = csv_head(path)
    if head is None:
        return None
    columns = head[0]
    # the header as Python's CSV reader reads it, so DuckDB need not sample the file to find it (a file in
    # another dialect fails here and is read row by row, where DuckDB's sniffer reads it)
    types = "{" + ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in columns) + "}"
    read = (f"read_csv({_lit(path)}, columns = {types}, header = true, auto_detect = false, delim = ',', "
            "quote = '\"', escape = '\"', strict_mode = false, null_padding = false)")
    select, names = csv_columns(columns, log_table)
    if not _tabular_ok(names):
        return None
    kind = (head[1][columns.index("Type")] if head[1] and "Type" in columns else None) or log_table
    table = next((t for t, cats in FAST_CATEGORIES.items() if kind in cats), None)
    if table is None:
        return None
    relation = f"(SELECT {int(rid)}::BIGINT AS rid, {', '.join(select)} FROM {read})"
    return table, tabular_source(relation, names, table)


def normalise_csv(con: duckdb.DuckDBPyConnection, path: str, log_table: str | None) -> tuple[list[str], int] | None:
    """A CSV export of one table's categories (`whole_csv`) staged into that table's canonical rows
    (`canon_<table>`): (the table, rows read).

    None, with nothing built, unless every line of the file is a row the table takes and none is refused:
    a file with a malformed line, a refused row, rows of another table or values spanning lines is read
    row by row instead (`egresslens/stage.py`), where every line keeps its number and every refusal its
    reason."""
    try:
        whole = whole_csv(con, [(path, log_table)])
        if whole is None:
            return None
        ((table, select),) = whole.selects.items()
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_canon(table)} AS {select}")
    except (duckdb.Error, UnicodeDecodeError):  # a line the reader cannot take: row by row
        return None
    rows, refused = con.execute(f"SELECT count(*), count(reject_reason) FROM {_canon(table)}").fetchall()[0]
    if refused or whole.records() != {0: rows}:
        return None
    return [table], rows


def normalise_batch(con: duckdb.DuckDBPyConnection, *, fast: bool = True, routes: dict | None = None,
                    tabular: tuple[str, list[str]] | None = None) -> list[str]:
    """Turn the registered relation `batch` into `canon_*` staging tables and `stage_rejects`.

    Returns the names of the event tables that have records in this batch: only their staging tables
    are (re)built, so a batch of one category pays for one canonical statement, not nine.
    `fast=False` sends every record the generic route (the tests compare the two); `routes`, if given,
    receives how many records took each route ({"fast": n, "generic": m}). `tabular` (relation, column
    names) names the rows behind a batch of tabular records: the fast route then reads their columns."""
    built: list[str] = []
    taken = []  # relations of the rids the fast route took
    if fast:
        _empty_stage(con)
        if tabular is not None:
            if _tabular_ok(tabular[1]):
                for name in FAST_CATEGORIES:
                    if _fast_table(con, name, tabular_source(*tabular, name)):
                        built.append(name)
                        taken.append(f"SELECT rid FROM {_canon(name)}")
        else:
            con.execute(_ROUTE_SQL)
            routed = dict(con.execute("SELECT route, count(*) FROM batch_route WHERE route IS NOT NULL "
                                      "GROUP BY 1").fetchall())
            for name in FAST_CATEGORIES:
                if routed.get(name) and _fast_table(con, name, fast_source(name)):
                    built.append(name)
                    taken.append(f"SELECT rid FROM {_canon(name)}")
            if routed.get(LEGACY) and _fast_legacy(con):
                taken.append("SELECT rid FROM stage_legacy")
    handled = sum(con.execute(f"SELECT count(*) FROM ({t})").fetchall()[0][0] for t in taken)
    total = con.execute("SELECT count(*) FROM batch").fetchall()[0][0]
    if not handled:
        rest = "batch"
    elif handled == total:
        rest = "(SELECT * FROM batch LIMIT 0)"
    else:  # records the fast route did not take, or did not confirm
        rest = f"(SELECT * FROM batch ANTI JOIN ({' UNION ALL '.join(taken)}) t USING (rid))"
    if routes is not None:
        routes.update(fast=handled, generic=total - handled)
    try:
        con.execute(_stage_sql(guarded=False, source=rest, append=fast))
    except (duckdb.Error, UnicodeDecodeError):  # the error message may quote bytes that are not UTF-8
        con.execute(_stage_sql(guarded=True, source=rest, append=fast))
    if not fast:
        con.execute(_EMPTY_LEGACY_STAGE)
    con.execute(_STAGE_VIEW)
    present = {t for (t,) in con.execute("SELECT DISTINCT target FROM stage WHERE target IS NOT NULL").fetchall()}
    con.execute(_legacy_sql())
    for name, targets in TARGETS_OF.items():
        if targets & present:
            con.execute(canonical_sql(name, append=name in built))
            if name not in built:
                built.append(name)
    con.execute(_REJECTS_SQL)
    return [name for name in TARGETS_OF if name in built]


def _empty_stage(con: duckdb.DuckDBPyConnection) -> None:
    """The canonical statements read the legacy stage too: the fast route empties it first (it holds the
    last batch's rows). Once the stage exists, emptying it keeps its columns (the same for every batch); a
    stage already empty, with its views, is left as it is (each statement here costs a few ms to plan)."""
    made = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name IN "
                                      "('stage_generic', 'stage_legacy') UNION ALL SELECT view_name FROM "
                                      "duckdb_views() WHERE temporary AND view_name IN ('stage', 'legacy')").fetchall()}
    if made == {"stage_generic", "stage_legacy", "stage", "legacy"} and not con.execute(
            "SELECT (SELECT count(*) FROM stage_generic) + (SELECT count(*) FROM stage_legacy)").fetchall()[0][0]:
        return
    if {"stage_generic", "stage_legacy"} <= made:
        con.execute("CREATE OR REPLACE TEMP TABLE stage_generic AS SELECT * FROM stage_generic LIMIT 0")
        con.execute("CREATE OR REPLACE TEMP TABLE stage_legacy AS SELECT * FROM stage_legacy LIMIT 0")
    else:
        con.execute(_stage_sql(guarded=False, source=_NO_LINES))
        con.execute(_EMPTY_LEGACY_STAGE)
    con.execute(_STAGE_VIEW)
    con.execute(_legacy_sql())


def _fast_table(con: duckdb.DuckDBPyConnection, name: str, source: str) -> bool:
    """One table's routed records straight into `canon_<table>`; False when it took none."""
    try:
        con.execute(canonical_sql(name, source))
    except (duckdb.Error, UnicodeDecodeError):  # a routed line that is not JSON: all go the generic way
        con.execute(f"DROP TABLE IF EXISTS {_canon(name)}")
        return False
    return _drop_unconfirmed(con, _canon(name))


def _fast_legacy(con: duckdb.DuckDBPyConnection) -> bool:
    """Routed legacy records into `stage_legacy` (narrow: no field columns); False when it took none."""
    try:
        con.execute(_legacy_stage_sql())
    except (duckdb.Error, UnicodeDecodeError):  # a routed line that is not JSON: all go the generic way
        con.execute(_EMPTY_LEGACY_STAGE)
        return False
    return _drop_unconfirmed(con, "stage_legacy")


def _drop_unconfirmed(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    taken, unconfirmed = con.execute(f"SELECT count(*) FILTER (log_format <> {_lit(UNCONFIRMED)}), "
                                     f"count(*) FILTER (log_format = {_lit(UNCONFIRMED)}) FROM {table}").fetchall()[0]
    if unconfirmed:
        con.execute(f"DELETE FROM {table} WHERE log_format = {_lit(UNCONFIRMED)}")
    return taken > 0


def _canon(name: str) -> str:
    return canon_table(TABLES_BY_NAME[name])
