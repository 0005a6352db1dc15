"""A batch's records as the relation the normaliser reads: `batch(rid, source, position, record_index, raw)`.

Each form a reader hands over (egresslens/sources/batch.py) is put in DuckDB its own way, with no row
passing through Python: lines of JSON text as an Arrow table (envelopes exploded into their records),
tabular rows as a view over their columns, a CSV export by DuckDB's CSV reader, a JSON document by DuckDB's
JSON functions. A form too large for one transaction (a CSV export, a document of many records) is staged
in parts: `stage` yields once per part, with `batch` (and, for tabular rows, the rows behind it) ready.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from egresslens.escape import sql_identifier as _ident
from egresslens.escape import sql_string
from egresslens.sources.batch import CsvFile, JsonDocument, Limits, Lines, Reject, Rows
from egresslens.sources.lines import SAMPLE_BYTES, sample

if TYPE_CHECKING:  # Arrow and NumPy are imported where Arrow batches are staged: not by a run DuckDB reads alone
    import pyarrow as pa


@dataclass
class Part:
    """One part of a batch, staged as `batch`: `tabular` (relation, column names) names the rows behind
    it when they are tabular; `rejects` are records refused while staging it (malformed CSV lines, a
    document that is not JSON); `records` counts what it holds."""
    records: int
    tabular: tuple[str, list[str]] | None = None
    rejects: list[Reject] = field(default_factory=list)
    last: bool = True  # the batch's progress is committed with this part


def stage(con: duckdb.DuckDBPyConnection, records, source: str, limits: Limits, scratch: Path) -> Iterator[Part]:
    """Stage the records of a batch, part by part (`scratch`: a path prefix for a scratch file beside the store)."""
    if isinstance(records, Lines):
        yield from _lines(con, records.table, limits)
    elif isinstance(records, Rows):
        yield from _rows(con, records, source)
    elif isinstance(records, CsvFile):
        yield from _csv(con, records, source, limits)
    elif isinstance(records, JsonDocument):
        yield from _document(con, records, source, limits, scratch)
    else:
        raise TypeError(f"not a form of records the normaliser reads: {type(records).__name__}")


# -- lines ------------------------------------------------------------------------------------------

# Envelopes ({"records": [...]}) are exploded into their records; other lines are records.
_EXPLODE_SQL = """
CREATE OR REPLACE TEMP TABLE batch_rows AS
SELECT row_number() OVER () AS rid, * FROM (
WITH lines AS (
  SELECT source, position, record_index, raw,
         -- a cheap substring test first: only candidate lines pay for a JSON parse
         CASE WHEN contains(raw, '"records"')
              THEN coalesce(try(json_type(raw, '$.records')) = 'ARRAY', false) ELSE false END AS is_envelope
  FROM raw_lines
), envelopes AS (
  SELECT source, position, json_extract(raw, '$.records[*]') AS recs FROM lines WHERE is_envelope
)
SELECT source, position, record_index, raw FROM lines WHERE NOT is_envelope
UNION ALL
SELECT source, position, (unnest(range(len(recs))) + 1)::INTEGER AS record_index,
       unnest(recs)::VARCHAR AS raw
FROM envelopes
)
"""
# Every form's records, whatever their origin, are read through this one view.
_BATCH_VIEW_SQL = "CREATE OR REPLACE TEMP VIEW batch AS SELECT rid, source, position, record_index, raw FROM {}"


def _lines(con, lines: pa.Table, limits: Limits) -> Iterator[Part]:
    # Lines are numbered here (rid) so that, without envelopes, the batch is a view over the Arrow data:
    # no copy of the raw text. Envelopes are exploded into a spillable table, normalised `part_rows`
    # records at a time (one line may hold millions of records).
    import numpy as np
    import pyarrow as pa

    lines = lines.append_column("rid", pa.array(np.arange(1, lines.num_rows + 1, dtype=np.int64)))
    con.register("raw_lines", chunked(lines))
    try:
        envelopes = con.execute("SELECT count(*) FROM raw_lines WHERE contains(raw, '\"records\"')").fetchall()[0][0]
        if not envelopes:
            con.execute(_BATCH_VIEW_SQL.format("raw_lines"))
            yield Part(_count(con))
            return
        con.execute(_EXPLODE_SQL)
        total = con.execute("SELECT count(*) FROM batch_rows").fetchall()[0][0]
        if total <= limits.part_rows:
            con.execute(_BATCH_VIEW_SQL.format("batch_rows"))
            yield Part(total)
            return
        con.execute("ALTER TABLE batch_rows RENAME TO exploded_rows")
        try:
            firsts = range(1, total + 1, limits.part_rows)
            for first in firsts:
                _select(con, "SELECT source, position, record_index, raw FROM exploded_rows WHERE rid BETWEEN ? AND ?",
                        [first, first + limits.part_rows - 1])
                yield Part(_count(con), last=first == firsts[-1])
        finally:
            con.execute("DROP TABLE IF EXISTS exploded_rows")
    finally:
        con.unregister("raw_lines")


def _count(con) -> int:
    return con.execute("SELECT count(*) FROM batch").fetchall()[0][0]


def _select(con, select_sql: str, params: list | None = None) -> None:
    """Records a SELECT yields as (source, position, record_index, raw JSON text), staged as `batch`."""
    con.execute("CREATE OR REPLACE TEMP TABLE batch_rows AS SELECT row_number() OVER () AS rid, source, position, "
                f"record_index, raw FROM ({select_sql})", params or [])
    con.execute(_BATCH_VIEW_SQL.format("batch_rows"))


# -- tabular rows -----------------------------------------------------------------------------------

def _rows(con, rows: Rows, source: str) -> Iterator[Part]:
    names = register_tabular(con, rows.table, source=source, log_table=rows.log_table,
                             position_offset=rows.position_offset)
    try:
        yield Part(rows.table.num_rows, tabular=("raw_rows", names))
    finally:
        con.unregister("raw_rows")


def register_tabular(con: duckdb.DuckDBPyConnection, rows: pa.Table, *, source: str, log_table: str | None = None,
                     position_offset: int = 0) -> list[str]:
    """Register tabular rows as `raw_rows` (with `rid`, and `Type` from `log_table` when they lack it) and
    the view `batch` over them; returns their column names.

    Each row is also a JSON object record (`raw`), computed only where it is read: by the generic
    route and for the quarantine. Rows the fast route takes are read from their columns."""
    import numpy as np
    import pyarrow as pa

    names = rows.column_names
    rows = rows.append_column("rid", pa.array(np.arange(1, rows.num_rows + 1, dtype=np.int64)))
    if "Type" not in names and log_table is not None:
        rows = rows.append_column("Type", pa.array([log_table] * rows.num_rows, pa.string()))
        names = [*names, "Type"]
    con.register("raw_rows", chunked(rows))
    tabular_batch_view(con, "raw_rows", names, source=source, position_offset=position_offset)
    return names


def tabular_batch_view(con: duckdb.DuckDBPyConnection, relation: str, names: list[str], *, source: str,
                       position_offset: int = 0) -> None:
    """The view `batch` over tabular rows (`rid` and the columns `names`): each row a JSON object record."""
    pack = ", ".join(f"{_ident(n)} := CAST(r.{_ident(n)} AS VARCHAR)" for n in names)
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW batch AS
            SELECT rid, {sql_string(source)}::VARCHAR AS source, (rid + {int(position_offset)})::BIGINT AS position,
                   NULL::INTEGER AS record_index, to_json(struct_pack({pack}))::VARCHAR AS raw
            FROM {relation} r""")


# DuckDB scans a registered Arrow table one record batch per task: a batch in chunks of this many rows
# is read by every thread (a CSV reader or a large file hands over one chunk of 200k rows or more).
ARROW_CHUNK_ROWS = 16_384


def chunked(table: pa.Table) -> pa.Table:
    """The same rows in chunks of at most ARROW_CHUNK_ROWS (slices: no copy)."""
    import pyarrow as pa

    return pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_CHUNK_ROWS), table.schema)


# -- CSV exports ------------------------------------------------------------------------------------

# The CSV reader's temporary tables: the file's rows and the lines DuckDB rejected. DuckDB adds a scan's
# rejects to those its rejects tables already hold: all are dropped before and after each file.
_CSV_TABLES = ("temp.main.csv_rows", "temp.main.csv_rejects", "temp.main.csv_scans")
# The rows' number in the file, the first column of csv_rows (a file's own column of that name is renamed
# `#row_1` by DuckDB, not lost).
_CSV_ROW = "#row"


def _csv(con, export: CsvFile, source: str, limits: Limits) -> Iterator[Part]:
    """Log Analytics CSV export: any column order, `[UTC]` header suffixes, booleans as 0/1.

    DuckDB reads the whole file into a temporary table in one statement (one thread, so the rows are
    numbered in file order; no row passes through Python or Arrow), which the tabular route then reads in
    parts of `part_rows`. The table is bounded by DuckDB's memory limit: beyond it, it spills to the
    store's temporary directory. The lines DuckDB rejects come with the last part."""
    _drop_csv_tables(con)
    try:
        rows = con.execute(
            f"CREATE TEMP TABLE csv_rows AS SELECT row_number() OVER () AS {_ident(_CSV_ROW)}, * FROM read_csv("
            "$path, all_varchar = true, header = true, store_rejects = true, rejects_table = 'csv_rejects', "
            "rejects_scan = 'csv_scans', strict_mode = false, null_padding = false, parallel = false)",
            {"path": export.path}).fetchall()[0][0]
        columns = [c for (c,) in con.execute("SELECT name FROM pragma_table_info('temp.main.csv_rows')").fetchall()][1:]
        select, names = csv_columns(columns, export.log_table)
        rejects = [Reject(source, int(line), text or "", f"malformed CSV line: {err}") for line, text, err in con.execute(
            "SELECT line, ltrim(any_value(csv_line), chr(13) || chr(10)), arg_min(error_message, column_idx) "
            "FROM csv_rejects GROUP BY line ORDER BY line").fetchall()]
        for first in range(1, max(rows, 1) + 1, limits.part_rows):
            relation = (f"(SELECT {_ident(_CSV_ROW)} AS rid, {', '.join(select)} FROM csv_rows "
                        f"WHERE {_ident(_CSV_ROW)} BETWEEN {first} AND {first + limits.part_rows - 1})")
            # position: the file line (the header is line 1; values spanning lines are not counted)
            tabular_batch_view(con, relation, names, source=source, position_offset=1)
            last = first + limits.part_rows > rows
            yield Part(min(limits.part_rows, rows - first + 1) if rows else 0, tabular=(relation, names),
                       rejects=rejects if last else [], last=last)
    finally:
        _drop_csv_tables(con)


def csv_columns(columns: list[str], log_table: str | None) -> tuple[list[str], list[str]]:
    """An export's header as the log's columns: (SELECT list, column names). `TimeGenerated [UTC]` is
    `TimeGenerated`, and an export without `Type` gets the table it is named after (`log_table`)."""
    names = [c.split(" [", 1)[0].strip() for c in columns]
    select = [f"{_ident(c)} AS {_ident(n)}" for c, n in zip(columns, names)]
    if "Type" not in names and log_table is not None:
        select.append(f"{sql_string(log_table)}::VARCHAR AS Type")
        names.append("Type")
    return select, names


def _drop_csv_tables(con) -> None:
    for table in _CSV_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def original_csv_lines(path: str, wanted: set[int]) -> dict[int, str]:
    """The lines of a CSV export at `wanted` line numbers, as a user would see them in the file (a refused
    row is normalised as a JSON object; the quarantine shows its line instead)."""
    found: dict[int, str] = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if number in wanted:
                found[number] = line.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
                if len(found) == len(wanted):
                    break
    return found


def csv_head(path: str) -> tuple[list[str], list[str] | None] | None:
    """A CSV export's header and first row (None when there is none), read from its first MB only; None
    when the header is not whole in it, or names a column twice."""
    with open(path, "rb") as f:
        head = f.read(1 << 20).decode("utf-8", errors="replace").lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(head)))
    if not rows or (len(rows) < 2 and len(head) >= 1 << 20) or len(set(rows[0])) != len(rows[0]):
        return None
    # (the last row read may be cut short: a whole first row has a row after it, or ends the file)
    first = rows[1] if len(rows) > 2 or (len(rows) == 2 and len(head) < 1 << 20) else None
    return rows[0], first if first is not None and len(first) == len(rows[0]) else None


def count_lines(path: str) -> int:
    """A file's lines, blank ones included, the last counted whether or not a newline ends it (a CSV
    export's rows if no value spans lines: its lines but the header; a file with blank lines then counts
    more lines than rows, so it is read row by row)."""
    lines, last, block = 0, b"\n", bytearray(4 << 20)  # read into one buffer: no copy of the file's bytes
    with open(path, "rb") as f:
        while n := f.readinto(block):
            lines += block.count(b"\n", 0, n)
            last = block[n - 1:n]
    return lines + (last != b"\n")


def counted_beside(count: Callable[[], dict[int, int]]) -> Callable[[], dict[int, int] | None]:
    """`count` run in a thread of its own (a count in C, beside DuckDB's threads); None if it failed."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(count)
    pool.shutdown(wait=False)

    def result() -> dict[int, int] | None:
        try:
            return future.result()
        except OSError:
            return None
    return result


# -- JSON documents ---------------------------------------------------------------------------------

def _document(con, doc: JsonDocument, source: str, limits: Limits, scratch: Path) -> Iterator[Part]:
    """A whole JSON document: records envelope, query-API response or array of rows, or one record.

    The document is read and parsed by DuckDB, not in Python (its size is within the document bound).
    A records envelope (`{"records": [...]}` and nothing else) is streamed record by record, however many
    it holds; another document is parsed whole. Either way its records are staged in parts of
    `part_rows` records, held once, in DuckDB's spillable tables."""
    bad = _invalid_utf8_at(doc.path)
    if bad is not None:
        yield _whole_refused(doc.path, source, f"invalid UTF-8 at byte {bad}: JSON document not read")
        return
    span = _records_array(doc.path)
    if span is not None:
        streamed = Path(f"{scratch}.records.json")
        try:
            _copy_range(doc.path, *span, streamed)
            con.execute("SET preserve_insertion_order = true")  # the records' indexes are their order in the file
            try:
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE doc_rows AS SELECT row_number() OVER () AS n, ?::VARCHAR AS source, "
                    "1::BIGINT AS position, (row_number() OVER ())::INTEGER AS record_index, json::VARCHAR AS raw "
                    f"FROM read_json_objects(?, format = 'array', maximum_object_size = {int(limits.line_bytes)})",
                    [source, str(streamed)])
            finally:
                con.execute("SET preserve_insertion_order = false")
        except duckdb.Error:  # not an array of JSON values after all (a torn end, say): parsed whole below
            span = None
        finally:
            streamed.unlink(missing_ok=True)
        if span is not None:
            yield from _parts(con, limits, [])
            return
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE json_doc AS SELECT content AS d FROM read_text($path)",
                    {"path": doc.path})
        valid, kind, tables, envelope = con.execute(
            "SELECT json_valid(d), CASE WHEN json_valid(d) THEN json_type(d) END, "
            "CASE WHEN json_valid(d) THEN json_array_length(d, '$.tables') END, "
            "CASE WHEN json_valid(d) THEN coalesce(json_type(d, '$.records') = 'ARRAY', false) END FROM json_doc"
        ).fetchall()[0]
        if not valid:
            why = f"truncated JSON document ({doc.torn})" if doc.torn else "truncated or invalid JSON document"
            yield _whole_refused(doc.path, source, why)
            return
        if kind == "ARRAY":  # a JSON export: an array of row objects
            explode = ("SELECT ?::VARCHAR AS source, (row_number() OVER ())::BIGINT AS position, "
                       "NULL::INTEGER AS record_index, r::VARCHAR AS raw FROM (SELECT unnest(json_extract(d, '$[*]')) "
                       "AS r FROM json_doc)", [source])
        elif tables:
            yield from _query_api_response(con, source, doc.log_table, tables, limits)
            return
        elif envelope:
            explode = ("SELECT ?::VARCHAR AS source, 1::BIGINT AS position, (unnest(range(len(recs))) + 1)::INTEGER "
                       "AS record_index, unnest(recs)::VARCHAR AS raw FROM (SELECT json_extract(d, '$.records[*]') "
                       "AS recs FROM json_doc)", [source])
        else:  # a single record, pretty-printed
            explode = ("SELECT ?::VARCHAR AS source, 1::BIGINT AS position, NULL::INTEGER AS record_index, "
                       "d::JSON::VARCHAR AS raw FROM json_doc", [source])
        yield from _in_parts(con, *explode, limits)
    finally:
        con.execute("DROP TABLE IF EXISTS json_doc")
        con.execute("DROP TABLE IF EXISTS doc_rows")


def _in_parts(con, select_sql: str, params: list, limits: Limits, rejects: list[Reject] | None = None
              ) -> Iterator[Part]:
    """The records a SELECT over `json_doc` yields, kept in a spillable table, staged `part_rows` at a time;
    `rejects` come with the last part."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE doc_rows AS SELECT row_number() OVER () AS n, * FROM ({select_sql})",
                params)
    con.execute("DROP TABLE IF EXISTS json_doc")  # the document itself is no longer needed
    yield from _parts(con, limits, rejects or [])


def _parts(con, limits: Limits, rejects: list[Reject]) -> Iterator[Part]:
    """The records of `doc_rows`, numbered `n`, staged `part_rows` at a time; `rejects` with the last part."""
    total = con.execute("SELECT count(*) FROM doc_rows").fetchall()[0][0]
    firsts = range(1, total + 1, limits.part_rows)
    if not firsts:
        yield Part(0, rejects=rejects or [])
    for first in firsts:
        _select(con, "SELECT source, position, record_index, raw FROM doc_rows WHERE n BETWEEN ? AND ?",
                [first, first + limits.part_rows - 1])
        last = first == firsts[-1]
        yield Part(_count(con), rejects=(rejects or []) if last else [], last=last)


def _query_api_response(con, source: str, hint: str | None, tables: int, limits: Limits) -> Iterator[Part]:
    """`{"tables": [{"columns": [{"name", "type"}], "rows": [[...]]}]}`: rows become objects in SQL."""
    offset = 0
    selects, params, rejects = [], [], []
    for i in range(tables):
        names = con.execute(f"SELECT json_extract_string(d, '$.tables[{i}].columns[*].name') FROM json_doc"
                            ).fetchall()[0][0] or []
        if not names or any(n is None for n in names):
            raw = con.execute(f"SELECT json_extract(d, '$.tables[{i}]')::VARCHAR FROM json_doc").fetchall()[0][0] or ""
            rejects.append(Reject(source, i + 1, raw[:SAMPLE_BYTES], "query-API table without column names"))
            continue
        add_type = "Type" not in names and hint is not None
        pairs = ", ".join(f"?, r->{j}" for j in range(len(names)))
        type_pair = ", 'Type', ?" if add_type else ""
        selects.append(f"""SELECT ?::VARCHAR AS source, (row_number() OVER () + ?)::BIGINT AS position,
                              NULL::INTEGER AS record_index, json_object({pairs}{type_pair})::VARCHAR AS raw
                           FROM (SELECT unnest(json_extract(d, '$.tables[{i}].rows[*]')) AS r FROM json_doc)""")
        params += [source, offset, *names, *([hint] if add_type else [])]
        offset += con.execute(f"SELECT json_array_length(d, '$.tables[{i}].rows') FROM json_doc").fetchall()[0][0] or 0
    if not selects:
        yield Part(0, rejects=rejects)
        return
    yield from _in_parts(con, " UNION ALL ".join(selects), params, limits, rejects)


def _whole_refused(path: str, source: str, why: str) -> Part:
    """A document quarantined whole (its first bytes kept): nothing staged."""
    with open(path, "rb") as f:
        head = f.read(SAMPLE_BYTES + 1)
    if len(head) > SAMPLE_BYTES:
        why += f" (its first {SAMPLE_BYTES >> 10} KiB kept here)"
    return Part(0, rejects=[Reject(source, 1, sample(head), why)])


_RECORDS_HEAD = re.compile(rb'^(\xef\xbb\xbf)?\s*\{\s*"records"\s*:\s*\[')
_RECORDS_TAIL = re.compile(rb'\]\s*\}\s*$')


def _records_array(path: str) -> tuple[int, int] | None:
    """The byte range of the array of a `{"records": [...]}` document that holds nothing else, from its first
    and last bytes; None for any other document."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(max(0, size - 4096))
        tail = f.read()
    start, end = _RECORDS_HEAD.match(head), _RECORDS_TAIL.search(tail)
    if not start or not end:
        return None
    first, last = start.end() - 1, size - len(tail) + end.start() + 1
    return (first, last) if first < last else None


def _copy_range(path: str, start: int, end: int, dest: Path) -> None:
    with open(path, "rb") as src, open(dest, "wb") as out:
        src.seek(start)
        left = end - start
        while left > 0 and (block := src.read(min(left, 8 << 20))):
            out.write(block)
            left -= len(block)


def _invalid_utf8_at(path: str) -> int | None:
    """The offset of the first byte that is not UTF-8, read a block at a time; None when the file is UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(8 << 20)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                return done + exc.start
            if not block:
                return None
            done += len(block)
        return None
