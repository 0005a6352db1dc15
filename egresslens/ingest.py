"""Land record batches in the store: normalise, de-duplicate, quarantine, commit — one transaction per batch.

Every reader (files, Log Analytics, storage blobs) hands batches of raw records to an `Ingestor`.
A batch is committed whole or not at all, together with the progress of its source, so a run
killed at any point leaves the store consistent and a re-run resumes with no duplicate and no gap.
Invariant, per batch and per run: records read = stored + duplicates + quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa

from egresslens import canonical, normalise, redact, store
from egresslens.escape import sql_identifier as _ident
from egresslens.escape import sql_string
from egresslens.schema import DNS_QUERIES, EVENT_TABLES, FLOWS, THREATS, Table

BATCH_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("position", pa.int64()),
        ("record_index", pa.int32()),
        ("raw", pa.string()),
    ]
)


@dataclass
class Counts:
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    per_table: dict[str, int] = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        self.read += other.read
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        for k, v in other.per_table.items():
            self.per_table[k] = self.per_table.get(k, 0) + v

    @property
    def balanced(self) -> bool:
        return self.read == self.stored + self.duplicates + self.quarantined

    def summary(self) -> str:
        return (
            f"read {self.read:,} = stored {self.stored:,} + duplicates {self.duplicates:,}"
            f" + quarantined {self.quarantined:,}"
        )


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
# Every reader's records, whatever their origin, are read through this one view.
_BATCH_VIEW_SQL = "CREATE OR REPLACE TEMP VIEW batch AS SELECT rid, source, position, record_index, raw FROM {}"


class Ingestor:
    """One ingest run against one store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source_kind: str, sources: str):
        self.con = con
        self.counts = Counts()
        self._mark_interrupted_runs()
        self.run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM ingest_runs").fetchall()[0][0]
        con.execute(
            "INSERT INTO ingest_runs VALUES (?, ?, NULL, ?, ?, 'running', 0, 0, 0, 0, NULL)",
            [self.run_id, _utcnow(), source_kind, sources],
        )

    def _mark_interrupted_runs(self) -> None:
        # The store file is locked by one writer at a time, so a run still marked running is dead.
        self.con.execute(
            "UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running'"
        )

    # -- progress of each source ------------------------------------------------------------------
    def source_state(self, source: str) -> dict | None:
        rows = self.con.execute(
            "SELECT size, mtime_ns, records_done, offset_done, complete FROM ingest_sources WHERE source = ?",
            [source],
        ).fetchall()
        if not rows:
            return None
        size, mtime_ns, records_done, offset_done, complete = rows[0]
        return {"size": size, "mtime_ns": mtime_ns, "records_done": records_done,
                "offset_done": offset_done, "complete": complete}

    def source_states(self) -> dict[str, dict]:
        """Every source's progress as of now, in one query (a run over many files asks once)."""
        return {source: {"size": size, "mtime_ns": mtime_ns, "records_done": records_done,
                         "offset_done": offset_done, "complete": complete}
                for source, size, mtime_ns, records_done, offset_done, complete in self.con.execute(
                    "SELECT source, size, mtime_ns, records_done, offset_done, complete FROM ingest_sources").fetchall()}

    def _save_progress(self, source: str, size: int | None, mtime_ns: int | None,
                       records_done: int, offset_done: int, complete: bool) -> None:
        self._save_progress_many([dict(source=source, size=size, mtime_ns=mtime_ns, records_done=records_done,
                                       offset_done=offset_done, complete=complete)])

    def _save_progress_many(self, entries: list[dict]) -> None:
        """Progress of the sources of one batch (an archive batch spans hundreds of hourly blobs): two
        statements, whatever their number. The last entry of a source wins."""
        latest = {e["source"]: e for e in entries}
        rows = pa.table({
            "source": pa.array(list(latest), pa.string()),
            **{k: pa.array([e[k] for e in latest.values()], pa.int64())
               for k in ("size", "mtime_ns", "records_done", "offset_done")},
            "complete": pa.array([bool(e["complete"]) for e in latest.values()], pa.bool_()),
        })
        self.con.register("progress_rows", rows)
        try:
            self.con.execute("DELETE FROM ingest_sources WHERE source IN (SELECT source FROM progress_rows)")
            self.con.execute("INSERT INTO ingest_sources SELECT source, size, mtime_ns, records_done, offset_done, "
                             "complete, ? FROM progress_rows", [_utcnow()])
        finally:
            self.con.unregister("progress_rows")

    def mark_source(self, source: str, *, size: int | None = None, mtime_ns: int | None = None,
                    records_done: int = 0, offset_done: int = 0, complete: bool) -> None:
        """Record progress of a source that yielded no batch (empty file, finished window)."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._save_progress(source, size, mtime_ns, records_done, offset_done, complete)
            self.con.execute("COMMIT")
        except BaseException:
            store.rollback(self.con)
            raise

    # -- batches ----------------------------------------------------------------------------------
    def ingest_lines(self, lines: pa.Table, *, progress: dict | list[dict] | None = None) -> Counts:
        """Store a batch of raw text records (JSON lines, envelopes, exported rows as JSON).

        `lines` follows BATCH_SCHEMA. `progress` (source, size, mtime_ns, records_done,
        offset_done, complete; or a list of them, one per source in the batch) is committed in
        the same transaction as the rows.
        """
        # Lines are numbered here (rid) so that, without envelopes, the batch is a view over the
        # Arrow data: no copy of the raw text.
        lines = lines.append_column("rid", pa.array(np.arange(1, lines.num_rows + 1, dtype=np.int64)))
        self.con.register("raw_lines", _chunked(lines))
        try:
            envelopes = self.con.execute(
                "SELECT count(*) FROM raw_lines WHERE contains(raw, '\"records\"')").fetchall()[0][0]
            if envelopes:
                self.con.execute(_EXPLODE_SQL)
                self.con.execute(_BATCH_VIEW_SQL.format("batch_rows"))
            else:
                self.con.execute(_BATCH_VIEW_SQL.format("raw_lines"))
            return self._store(progress)
        finally:
            self.con.unregister("raw_lines")

    def ingest_select(self, select_sql: str, params: list | None = None, *,
                      progress: dict | list[dict] | None = None) -> Counts:
        """Store the records a SELECT yields as (source, position, record_index, raw JSON text).

        For readers that shape records in SQL (tabular rows, query-API documents)."""
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE batch_rows AS SELECT row_number() OVER () AS rid, source, position, "
            f"record_index, raw FROM ({select_sql})",
            params or [],
        )
        self.con.execute(_BATCH_VIEW_SQL.format("batch_rows"))
        return self._store(progress)

    def ingest_rows(self, rows: pa.Table, *, source: str, log_table: str | None = None,
                    position_offset: int = 0, progress: dict | None = None) -> Counts:
        """Store a batch of tabular rows (Log Analytics result, CSV export) with named columns.

        Each row becomes a JSON object record; `log_table` supplies `Type` when the rows lack it.
        """
        names = register_tabular(self.con, rows, source=source, log_table=log_table,
                                 position_offset=position_offset)
        try:
            return self._store(progress, tabular=("raw_rows", names))
        finally:
            self.con.unregister("raw_rows")

    def ingest_tabular(self, relation: str, names: list[str], *, source: str, position_offset: int = 0,
                       progress: dict | None = None) -> Counts:
        """Store tabular rows a reader has already put in DuckDB (a CSV file read by DuckDB itself):
        `relation` has a `rid` numbering its rows and the columns `names` (with `Type`, or every row
        is refused for want of a table name)."""
        tabular_batch_view(self.con, relation, names, source=source, position_offset=position_offset)
        return self._store(progress, tabular=(relation, names))

    def quarantine_raw(self, source: str, items: list[tuple[int, str, str]], *,
                       progress: dict | None = None) -> Counts:
        """Quarantine records refused before normalisation (CSV lines the reader rejected,
        unreadable documents): (position, raw, reason)."""
        table = pa.table(
            {
                "source": [source] * len(items),
                "position": [p for p, _, _ in items],
                "record_index": pa.nulls(len(items), pa.int32()),
                "raw": [r for _, r, _ in items],
                "reason": [why for _, _, why in items],
            }
        )
        self.con.register("pre_rejects", table)
        try:
            self.con.execute("BEGIN TRANSACTION")
            try:
                new = self._insert_quarantine("pre_rejects")
                counts = Counts(read=len(items), quarantined=new, duplicates=len(items) - new)
                self._finish_batch(counts, progress)
                self.con.execute("COMMIT")
            except BaseException:
                store.rollback(self.con)
                raise
        finally:
            self.con.unregister("pre_rejects")
        self.counts.add(counts)
        return counts

    def _insert_quarantine(self, relation: str) -> int:
        return self.con.execute(
            f"""
            INSERT INTO quarantine
            SELECT q.quarantine_id, q.source, q.position, q.raw, q.reason, ?, ?
            FROM (
              SELECT md5(concat_ws(chr(31), source, position::VARCHAR, coalesce(record_index::VARCHAR, ''), raw))
                       AS quarantine_id, source, position, raw, reason
              FROM {relation}
              QUALIFY row_number() OVER (PARTITION BY quarantine_id) = 1
            ) q
            WHERE NOT EXISTS (SELECT 1 FROM quarantine x WHERE x.quarantine_id = q.quarantine_id)
            """,
            [self.run_id, _utcnow()],
        ).fetchall()[0][0]

    def ingest_archive(self, paths: list[str], table: str, progress: list[dict]) -> tuple[Counts, set[int]]:
        """Whole JSON Lines files of one table's categories (or, `table` normalise.LEGACY, legacy files), read
        by DuckDB itself (`normalise.normalise_archive`). `progress` has one entry per path; the files taken
        are committed with theirs. Returns the counts and the indexes of the files taken (the others are left
        to the line reader)."""
        taken, _, built = normalise.normalise_archive(self.con, paths, table)
        if not taken:
            return Counts(), set()
        for i, n in taken.items():  # a whole file: its records; a piece of one comes with its line count
            progress[i].setdefault("records_done", n)
        counts = self._commit(built, sum(taken.values()), [progress[i] for i in sorted(taken)], rejects=False)
        return counts, set(taken)

    def _store(self, progress: dict | list[dict] | None, tabular: tuple[str, list[str]] | None = None) -> Counts:
        built = normalise.normalise_batch(self.con, tabular=tabular)
        return self._commit(built, self.con.execute("SELECT count(*) FROM batch").fetchall()[0][0], progress)

    def _commit(self, built: list[str], read: int, progress: dict | list[dict] | None, *,
                rejects: bool = True) -> Counts:
        """One transaction: the staged rows of `built` tables, the refused records of the batch (when
        `rejects`) and the progress of its sources. `read` records must all be accounted for."""
        con = self.con
        tables = [t for t in EVENT_TABLES if t.name in built]
        counts = Counts(read=read)
        con.execute("BEGIN TRANSACTION")
        try:
            good_total = 0
            for table in tables:
                good, inserted = self._insert_events(table)
                good_total += good
                counts.stored += inserted
                if inserted:
                    counts.per_table[table.name] = inserted
            rejected = new_q = 0
            if rejects:
                rejected, new_q = self._quarantine_rejects(tables)
            counts.quarantined = new_q
            counts.duplicates = (good_total - counts.stored) + (rejected - new_q)
            if good_total + rejected != read:
                raise AssertionError(
                    f"normalisation lost records: read {read}, routed {good_total} + rejected {rejected}"
                )
            self._finish_batch(counts, progress)
            con.execute("COMMIT")
        except BaseException:
            store.rollback(con)
            raise
        self.counts.add(counts)
        return counts

    def _quarantine_rejects(self, tables: list[Table]) -> tuple[int, int]:
        """The batch's refused records into the quarantine: (refused, newly quarantined)."""
        rejects = " UNION ALL ".join(
            [f"SELECT rid, reject_reason AS reason FROM {canonical.canon_table(t)} WHERE reject_reason IS NOT NULL"
             for t in tables]
            + ["SELECT rid, reason FROM stage_rejects"]
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE batch_rejects AS SELECT b.source, b.position, b.record_index, "
            # a line that is not UTF-8 carries the normaliser's mark (a NUL): the quarantine keeps its text
            "CASE WHEN starts_with(b.raw, chr(0)) THEN substr(b.raw, 2) ELSE b.raw END AS raw, "
            f"r.reason FROM ({rejects}) r JOIN batch b USING (rid)"
        )
        rejected = self.con.execute("SELECT count(*) FROM batch_rejects").fetchall()[0][0]
        return rejected, self._insert_quarantine("batch_rejects")

    def _insert_events(self, table: Table) -> tuple[int, int]:
        """Insert a batch's new rows: not already in the store (an anti-join against the slice of the
        store in the batch's time range) and each event once. Event ids come with the staging table."""
        con = self.con
        canon = canonical.canon_table(table)
        good, tmin, tmax, distinct = con.execute(
            f"SELECT count(*), min(time), max(time), count(DISTINCT event_id) FROM {canon} WHERE reject_reason IS NULL"
        ).fetchall()[0]
        if not good:
            return 0, 0
        cols = [c for c in table.column_names if c not in ("event_id", "ingest_run_id")]
        # the same event twice within the batch: keep one (a window over the batch, paid only then)
        once = "QUALIFY row_number() OVER (PARTITION BY event_id) = 1" if distinct < good else ""
        # an event's time is one of its canonical columns: only stored rows in the batch's time range can
        # be the same event, and when there are none (new hours, the usual case) there is nothing to join
        overlap = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table.name} WHERE time BETWEEN ? AND ? LIMIT 1)",
                              [tmin, tmax]).fetchall()[0][0]
        new_only = f"""AND NOT EXISTS (
              SELECT 1 FROM {table.name} x
              WHERE x.event_id = c.event_id AND x.time BETWEEN $tmin AND $tmax
            )""" if overlap else ""
        inserted = con.execute(
            f"""
            INSERT INTO {table.name} (event_id, {", ".join(cols)}, ingest_run_id)
            SELECT event_id, {stored_columns(cols)}, $run FROM {canon} c
            WHERE reject_reason IS NULL {new_only}
            {once}
            """,
            {"run": self.run_id, **({"tmin": tmin, "tmax": tmax} if overlap else {})},
        ).fetchall()[0][0]
        return good, inserted

    def _finish_batch(self, counts: Counts, progress: dict | list[dict] | None) -> None:
        entries = [progress] if isinstance(progress, dict) else (progress or [])
        if entries:
            self._save_progress_many(entries)
        self.con.execute(
            """UPDATE ingest_runs SET records_read = records_read + ?, stored = stored + ?,
               duplicates = duplicates + ?, quarantined = quarantined + ? WHERE run_id = ?""",
            [counts.read, counts.stored, counts.duplicates, counts.quarantined, self.run_id],
        )

    # -- end of run -------------------------------------------------------------------------------
    def finish(self, status: str = "completed", message: str | None = None) -> Counts:
        """End the run with `status` and its message (redacted: the store keeps no secret)."""
        if message is not None:
            message = redact.text(message)
        self.con.execute(
            "UPDATE ingest_runs SET finished_at = ?, status = ?, message = ? WHERE run_id = ?",
            [_utcnow(), status, message, self.run_id],
        )
        return self.counts


def stored_columns(cols: list[str]) -> str:
    """The SELECT list that stores canonical columns `cols` as they are kept: a URL (`target_url`) with
    its query values dropped (:func:`egresslens.redact.stored_url_sql`). The event id is computed before,
    over the URL as logged, so the same event is one event whatever the setting was when it came."""
    return ", ".join(f"{redact.stored_url_sql(c)} AS {c}" if c == "target_url" else c for c in cols)


def unknown_categories(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, int]:
    """Azure Firewall categories this version does not know, quarantined by one run: {category: records}.

    Azure adds log categories over time; every ingest command prints these so a new log type is noticed."""
    prefix = normalise.UNKNOWN_CATEGORY
    return dict(con.execute(
        "SELECT substr(reason, ?) AS category, count(*) FROM quarantine WHERE ingest_run_id = ? "
        "AND starts_with(reason, ?) GROUP BY 1 ORDER BY 2 DESC, 1", [len(prefix) + 1, run_id, prefix]).fetchall())


def unknown_categories_line(found: dict[str, int]) -> str | None:
    """The one-line summary of `unknown_categories` (category names are log text: escape before printing)."""
    if not found:
        return None
    return ("unknown Azure Firewall log categories, quarantined (a newer EgressLens may read them): "
            + ", ".join(f"{name} ({n:,} records)" for name, n in found.items()))


def register_tabular(con: duckdb.DuckDBPyConnection, rows: pa.Table, *, source: str, log_table: str | None = None,
                     position_offset: int = 0) -> list[str]:
    """Register tabular rows as `raw_rows` (with `rid`, and `Type` from `log_table` when they lack it) and
    the view `batch` over them; returns their column names.

    Each row is also a JSON object record (`raw`), computed only where it is read: by the generic
    route and for the quarantine. Rows the fast route takes are read from their columns."""
    names = rows.column_names
    rows = rows.append_column("rid", pa.array(np.arange(1, rows.num_rows + 1, dtype=np.int64)))
    if "Type" not in names and log_table is not None:
        rows = rows.append_column("Type", pa.array([log_table] * rows.num_rows, pa.string()))
        names = [*names, "Type"]
    con.register("raw_rows", _chunked(rows))
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


def _chunked(table: pa.Table) -> pa.Table:
    """The same rows in chunks of at most ARROW_CHUNK_ROWS (slices: no copy)."""
    return pa.Table.from_batches(table.to_batches(max_chunksize=ARROW_CHUNK_ROWS), table.schema)


def store_canonical_frames(con: duckdb.DuckDBPyConnection, *, flows=None, dns_queries=None,
                           threats=None, log_format: str = "structured") -> dict[str, int]:
    """Insert canonical Polars/Arrow frames (simulator output, tests, benchmarks) directly.

    The frames carry the canonical columns; `event_id` is computed exactly as ingest computes it,
    so frames and ingested logs of the same events coincide.
    """
    inserted: dict[str, int] = {}
    for table, frame in ((FLOWS, flows), (DNS_QUERIES, dns_queries), (THREATS, threats)):
        if frame is None:
            continue
        arrow = frame.to_arrow() if hasattr(frame, "to_arrow") else frame
        con.register("canonical_frame", arrow)
        try:
            cols = canonical.canonical_columns(table)
            inserted[table.name] = con.execute(
                f"""
                INSERT INTO {table.name} (event_id, {", ".join(cols)}, log_format)
                SELECT {canonical.event_id_sql(table)}, {stored_columns(cols)}, ? FROM canonical_frame
                """,
                [log_format],
            ).fetchall()[0][0]
        finally:
            con.unregister("canonical_frame")
    return inserted
