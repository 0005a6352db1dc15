"""Write a normalised batch to the store: one transaction with its rows, its quarantine and its progress.

The ingest loop (egresslens/ingest.py) hands each batch here once the normaliser has built its canonical
rows (`canon_*`) and its refusals (`stage_rejects`), or, for files DuckDB reads whole, the canonical
statements themselves, whose rows go straight into the store (`commit_whole`). A batch is committed
whole or not at all, together with the progress of its units, so a run killed at any point leaves the
store consistent and a re-run resumes with no duplicate and no gap. Invariant, per batch and per run:
records read = stored + duplicates + quarantined. Rollups and metric points, computed where the logs
are, replace what the store held for their hours and points, in a transaction of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import duckdb

from egresslens import canonical, redact, store
from egresslens.schema import DNS_QUERIES, EVENT_TABLES, FLOWS, THREATS, Table
from egresslens.sources.batch import Counts, MetricPoints, Progress, Reject, Rollups

if TYPE_CHECKING:  # Arrow is imported where a table of Python values is built (rejects, rollups)
    import pyarrow as pa


class _NotWhole(Exception):
    """Files read whole that cannot be stored whole: their rows are rolled back, to be read the staged way."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Loader:
    """The writes of one ingest run against one store connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source_kind: str, sources: str):
        self.con = con
        self.counts = Counts()
        self.write_failed: BaseException | None = None  # a write to the store failed: the run cannot go on
        # The store file is locked by one writer at a time, so a run still marked running is dead.
        con.execute("UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running'")
        self.run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM ingest_runs").fetchall()[0][0]
        con.execute("INSERT INTO ingest_runs VALUES (?, ?, NULL, ?, ?, 'running', 0, 0, 0, 0, NULL)",
                    [self.run_id, _utcnow(), source_kind, sources])

    def states(self) -> dict[str, Progress]:
        """Every unit's progress as of now, with the fingerprint of the remote ones, in one query."""
        return {source: Progress(source, size, mtime_ns, records_done, offset_done, complete,
                                 {"etag": etag, "fmt": fmt, "head_len": head_len, "head_md5": head_md5}
                                 if fmt is not None else None)
                for source, size, mtime_ns, records_done, offset_done, complete, etag, fmt, head_len, head_md5
                in self.con.execute(
                    "SELECT s.source, size, mtime_ns, records_done, offset_done, complete, etag, fmt, head_len, "
                    "head_md5 FROM ingest_sources s LEFT JOIN storage_blobs b USING (source)").fetchall()}

    # -- one transaction -------------------------------------------------------------------------------
    def _transaction(self, work, counts: Counts, until: list[Progress] | Callable[[], list[Progress]]) -> Counts:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            work(counts)
            self._save_progress(until() if callable(until) else until)
            con.execute("""UPDATE ingest_runs SET records_read = records_read + ?, stored = stored + ?,
                           duplicates = duplicates + ?, quarantined = quarantined + ? WHERE run_id = ?""",
                        [counts.read, counts.stored, counts.duplicates, counts.quarantined, self.run_id])
            con.execute("COMMIT")
        except BaseException as exc:
            store.rollback(con)
            if not isinstance(exc, (AssertionError, KeyboardInterrupt, _NotWhole)):
                self.write_failed = exc
            raise
        self.counts.add(counts)
        return counts

    def commit(self, built: list[str], read: int, until: list[Progress], rejects: Iterable[Reject] = (), *,
               staged_rejects: bool = True, original_lines=None) -> Counts:
        """The staged rows of `built` tables, the refused records of the batch (`stage_rejects` and the
        refusals in the canonical tables, when `staged_rejects`; `rejects` found while reading) and the
        progress of its units. `read` records must all be accounted for. `original_lines` ({line numbers}
        -> {line number: text}) gives the text a refused tabular row had in its file (a CSV export's line),
        which the quarantine shows instead of the row as a JSON object."""
        rejects = list(rejects)
        tables = [t for t in EVENT_TABLES if t.name in built]

        def work(counts: Counts) -> None:
            good_total = 0
            for table in tables:
                good, inserted = self._insert_events(table)
                good_total += good
                counts.stored += inserted
                if inserted:
                    counts.per_table[table.name] = inserted
            refused = new_q = 0
            if staged_rejects:
                refused, new_q = self._quarantine_staged(tables)
                if new_q and original_lines is not None:
                    self._show_original_lines(original_lines)
            if rejects:
                new_q += self._quarantine(rejects)
                refused += len(rejects)
            counts.quarantined = new_q
            counts.duplicates = (good_total - counts.stored) + (refused - new_q)
            if good_total + refused != counts.read:
                raise AssertionError(f"normalisation lost records: read {counts.read}, routed {good_total} "
                                     f"+ refused {refused}")

        return self._transaction(work, Counts(read=read + len(rejects)), until)

    def commit_whole(self, selects: dict[str, str], records: Callable[[], dict[int, int] | None],
                     until: Callable[[dict[int, int]], list[Progress]]) -> Counts | None:
        """Files read whole by DuckDB, their canonical rows (`selects`, by table) inserted straight from its
        reader, with no staging table (a staging table costs a write and a read of every row: 0.5 s a
        million flows), then checked in the transaction. The rows past each table's last row id before the
        insert are the batch's (checked: as many as the insert reported); they must be all the records the
        files hold (`records()`, {file index: records}), none refused (no event id) nor of a log format the
        store does not know. Then an event twice in the batch, or already stored (only stored rows in the
        batch's time range can be), is deleted from what was inserted, as the staged insert leaves it out.
        The files' progress, `until(records)`, commits with the rows.

        None, with nothing written, when the check fails or DuckDB cannot read the files: read them the
        staged way (`commit`), which finds the record at fault and its reason."""
        tables = [t for t in EVENT_TABLES if t.name in selects]
        held: dict[int, int] = {}

        def work(counts: Counts) -> None:
            marks, inserted = {}, {}
            for table in tables:
                cols = [c for c in table.column_names if c not in ("event_id", "ingest_run_id")]
                marks[table.name] = self.con.execute(
                    f"SELECT coalesce(max(rowid), -1) FROM {table.name}").fetchall()[0][0]
                try:
                    inserted[table.name] = self.con.execute(
                        f"INSERT INTO {table.name} (event_id, {', '.join(cols)}, ingest_run_id) "
                        f"SELECT event_id, {stored_columns(cols)}, ? FROM ({selects[table.name]})",
                        [self.run_id]).fetchall()[0][0]
                except (duckdb.Error, UnicodeDecodeError) as exc:  # a line DuckDB's reader cannot take
                    raise _NotWhole from exc
            held.update(records() or {})
            counts.read = sum(held.values())
            if not held or sum(inserted.values()) != counts.read:
                raise _NotWhole
            for table in tables:
                kept = self._keep_new_once(table, marks[table.name], inserted[table.name])
                counts.stored += kept
                if kept:
                    counts.per_table[table.name] = kept
            counts.duplicates = counts.read - counts.stored

        try:
            return self._transaction(work, Counts(), lambda: until(held))
        except _NotWhole:
            return None

    def _keep_new_once(self, table: Table, mark: int, inserted: int) -> int:
        """Check the rows a whole-file insert put past row id `mark`, and delete those the staged insert
        would have left out (an event twice in them, or already stored): the rows kept."""
        con, name = self.con, table.name
        rows, refused, tmin, tmax, distinct = con.execute(
            "SELECT count(*), count(*) FILTER (event_id IS NULL OR NOT coalesce(log_format IN ('structured', "
            f"'legacy'), false)), min(time), max(time), count(DISTINCT event_id) FROM {name} WHERE rowid > ?",
            [mark]).fetchall()[0]
        if rows != inserted or refused:
            raise _NotWhole
        dropped = 0
        if distinct < rows:
            dropped += con.execute(
                f"DELETE FROM {name} WHERE rowid IN (SELECT rowid FROM {name} WHERE rowid > ? "
                "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY rowid) > 1)", [mark]).fetchall()[0][0]
        if con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {name} WHERE rowid <= $mark AND time BETWEEN $tmin "
                       "AND $tmax LIMIT 1)", {"mark": mark, "tmin": tmin, "tmax": tmax}).fetchall()[0][0]:
            dropped += con.execute(
                f"DELETE FROM {name} WHERE rowid > $mark AND event_id IN (SELECT event_id FROM {name} "
                "WHERE rowid <= $mark AND time BETWEEN $tmin AND $tmax)",
                {"mark": mark, "tmin": tmin, "tmax": tmax}).fetchall()[0][0]
        return rows - dropped

    def commit_rejects(self, rejects: Iterable[Reject], until: list[Progress]) -> Counts:
        """Records refused before any parse, and progress (a unit that yielded no records)."""
        return self.commit([], 0, until, rejects, staged_rejects=False)

    def _quarantine_staged(self, tables: list[Table]) -> tuple[int, int]:
        """The batch's refused records into the quarantine: (refused, newly quarantined)."""
        refused = " UNION ALL ".join(
            [f"SELECT rid, reject_reason AS reason FROM {canonical.canon_table(t)} WHERE reject_reason IS NOT NULL"
             for t in tables]
            + ["SELECT rid, reason FROM stage_rejects"]
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE batch_rejects AS SELECT b.source, b.position, b.record_index, "
            # a line that is not UTF-8 carries the readers' mark (a NUL): the quarantine keeps its text
            "CASE WHEN starts_with(b.raw, chr(0)) THEN substr(b.raw, 2) ELSE b.raw END AS raw, "
            f"r.reason FROM ({refused}) r JOIN batch b USING (rid)"
        )
        n = self.con.execute("SELECT count(*) FROM batch_rejects").fetchall()[0][0]
        return n, (self._insert_quarantine("batch_rejects") if n else 0)

    def _show_original_lines(self, original_lines) -> None:
        con = self.con
        rows = con.execute("SELECT DISTINCT source, position FROM batch_rejects WHERE starts_with(raw, '{')").fetchall()
        if not rows:
            return
        found = original_lines({p for _, p in rows})
        con.executemany("UPDATE quarantine SET raw = ? WHERE source = ? AND position = ? AND ingest_run_id = ?",
                        [(found[p], s, p, self.run_id) for s, p in rows if p in found])

    def _quarantine(self, rejects: list[Reject]) -> int:
        import pyarrow as pa

        table = pa.table({
            "source": [r.source for r in rejects], "position": pa.array([r.position for r in rejects], pa.int64()),
            "record_index": pa.nulls(len(rejects), pa.int32()), "raw": [r.raw for r in rejects],
            "reason": [r.reason for r in rejects]})
        self.con.register("read_rejects", table)
        try:
            return self._insert_quarantine("read_rejects")
        finally:
            self.con.unregister("read_rejects")

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

    def _save_progress(self, until: list[Progress]) -> None:
        """Progress of the units of one batch (an archive batch spans hundreds of hourly blobs): a few
        statements, whatever their number. The last entry of a unit wins."""
        if not until:
            return
        latest = {p.source: p for p in until}
        con = self.con
        # the rows as list parameters, not an Arrow table: building Arrow arrays from Python lists imports
        # pandas where it is installed (0.16 s, once a process)
        con.execute("CREATE OR REPLACE TEMP TABLE progress_rows AS SELECT unnest($source::VARCHAR[]) AS source, "
                    + ", ".join(f"unnest(${k}::BIGINT[]) AS {k}" for k in _PROGRESS_NUMBERS)
                    + ", unnest($complete::BOOLEAN[]) AS complete",
                    {"source": list(latest), "complete": [bool(p.complete) for p in latest.values()],
                     **{k: [getattr(p, k) for p in latest.values()] for k in _PROGRESS_NUMBERS}})
        # (no DROP in a `finally`: after a failed statement the transaction refuses every statement, and
        # that refusal would hide the failure; the table goes with the transaction's rollback)
        con.execute("DELETE FROM ingest_sources WHERE source IN (SELECT source FROM progress_rows)")
        con.execute("INSERT INTO ingest_sources SELECT source, size, mtime_ns, records_done, offset_done, "
                    "complete, ? FROM progress_rows", [_utcnow()])
        con.execute("DROP TABLE progress_rows")
        marks = [p for p in latest.values() if p.fingerprint is not None]
        if marks:
            con.executemany("INSERT OR REPLACE INTO storage_blobs VALUES (?, ?, ?, ?, ?, ?)",
                            [[p.source, p.fingerprint.get("etag"), p.fingerprint.get("fmt"),
                              p.fingerprint.get("head_len"), p.fingerprint.get("head_md5"), _utcnow()]
                             for p in marks])

    # -- rollups and metric points -----------------------------------------------------------------------
    def replace_rollups(self, rollups: Rollups, until: list[Progress]) -> Counts:
        """Replace the rollups of the hours [start, end) with the merged parts."""
        def work(counts: Counts) -> None:
            counts.read = counts.stored = _replace_rollups(self.con, self.run_id, rollups)
        return self._transaction(work, Counts(), until)

    def replace_metrics(self, points: MetricPoints, until: list[Progress]) -> Counts:
        """Insert metric points, each replacing the point of the same id."""
        def work(counts: Counts) -> None:
            counts.read = counts.stored = _replace_metrics(self.con, points.table, self.run_id)
        return self._transaction(work, Counts(), until)

    # -- end of run -----------------------------------------------------------------------------------
    def finish(self, status: str = "completed", message: str | None = None) -> Counts:
        """End the run with `status` and its message (redacted: the store keeps no secret)."""
        if message is not None:
            message = redact.text(message)
        self.con.execute("UPDATE ingest_runs SET finished_at = ?, status = ?, message = ? WHERE run_id = ?",
                         [_utcnow(), status, message, self.run_id])
        return self.counts


_PROGRESS_NUMBERS = ("size", "mtime_ns", "records_done", "offset_done")


def stored_columns(cols: list[str]) -> str:
    """The SELECT list that stores canonical columns `cols` as they are kept: a URL (`target_url`) with
    its query values dropped (:func:`egresslens.redact.stored_url_sql`). The event id is computed before,
    over the URL as logged, so the same event is one event whatever the setting was when it came."""
    return ", ".join(f"{redact.stored_url_sql(c)} AS {c}" if c == "target_url" else c for c in cols)


_FLOW_ROLLUP_SQL = """
SELECT md5(concat_ws(chr(31), hour::VARCHAR, coalesce(firewall, ''), coalesce(kind, ''), coalesce(protocol, ''),
           coalesce(source_ip, ''), coalesce(destination_ip, ''), coalesce(destination_fqdn, ''),
           coalesce(destination_port::VARCHAR, ''), coalesce(action, ''), coalesce(action_reason, ''),
           coalesce(policy, ''), coalesce(rule_collection_group, ''), coalesce(rule_collection, ''),
           coalesce(rule, ''))) AS rollup_id, *
FROM (
  SELECT date_trunc('hour', try_cast("Hour" AS TIMESTAMPTZ)::TIMESTAMP) AS hour,
         lower(nullif("Firewall", '')) AS firewall, nullif("Kind", '') AS kind,
         upper(nullif("Protocol", '')) AS protocol, nullif("SourceIp", '') AS source_ip,
         nullif("DestinationIp", '') AS destination_ip,
         lower(rtrim(nullif("DestinationFqdn", ''), '.')) AS destination_fqdn,
         -- canonical as in egresslens/canonical.py: ICMP and port 0 mean no port, 'Default Action' for a
         -- deny without rule or reason (the KQL does this too; here it holds whatever the workspace sent)
         CASE WHEN upper("Protocol") = 'ICMP' THEN NULL
              ELSE nullif(try_cast(nullif("DestinationPort", '') AS INTEGER), 0) END AS destination_port,
         CASE lower("Action") WHEN 'allow' THEN 'Allow' WHEN 'deny' THEN 'Deny' WHEN 'dnat' THEN 'DNAT'
              ELSE nullif("Action", '') END AS action,
         CASE WHEN lower("Action") = 'deny' AND nullif(trim("Rule"), '') IS NULL
                   AND nullif(rtrim(trim("ActionReason"), '. '), '') IS NULL THEN 'Default Action'
              ELSE nullif(rtrim(trim("ActionReason"), '. '), '') END AS action_reason,
         nullif(trim("Policy"), '') AS policy, nullif(trim("RuleCollectionGroup"), '') AS rule_collection_group,
         nullif(trim("RuleCollection"), '') AS rule_collection, nullif(trim("Rule"), '') AS rule,
         sum(try_cast("Hits" AS BIGINT))::BIGINT AS hits,
         min(try_cast("FirstSeen" AS TIMESTAMPTZ)::TIMESTAMP) AS first_seen,
         max(try_cast("LastSeen" AS TIMESTAMPTZ)::TIMESTAMP) AS last_seen,
         ?::BIGINT AS ingest_run_id
  FROM rollup_parts GROUP BY ALL
)
"""

_DNS_ROLLUP_SQL = """
SELECT md5(concat_ws(chr(31), hour::VARCHAR, coalesce(firewall, ''), coalesce(source_ip, ''),
           coalesce(query_name, ''), coalesce(query_type, ''), coalesce(response_code, ''))) AS rollup_id, *
FROM (
  SELECT date_trunc('hour', try_cast("Hour" AS TIMESTAMPTZ)::TIMESTAMP) AS hour,
         lower(nullif("Firewall", '')) AS firewall, nullif("SourceIp", '') AS source_ip,
         lower(rtrim(nullif("QueryName", ''), '.')) AS query_name, nullif(upper(rtrim("QueryType", ':')), '') AS query_type,
         nullif(upper("ResponseCode"), '') AS response_code,
         sum(try_cast("Queries" AS BIGINT))::BIGINT AS queries, sum(try_cast("Errors" AS BIGINT))::BIGINT AS errors,
         -- failed lookups have no duration: an all-failed group sums to 0, as raw rows' hourly groups do
         -- (analyse.DNS_HOURS_SQL), whatever Kusto's sum() of no values gives
         CASE WHEN sum(try_cast("Queries" AS BIGINT)) > sum(try_cast("Errors" AS BIGINT))
              THEN coalesce(sum(try_cast("TotalDurationS" AS DOUBLE)), 0) ELSE 0 END AS total_duration_s,
         max(try_cast("MaxDurationS" AS DOUBLE)) AS max_duration_s,
         min(try_cast("FirstSeen" AS TIMESTAMPTZ)::TIMESTAMP) AS first_seen,
         max(try_cast("LastSeen" AS TIMESTAMPTZ)::TIMESTAMP) AS last_seen,
         ?::BIGINT AS ingest_run_id
  FROM rollup_parts GROUP BY ALL
)
"""


def _replace_rollups(con, run_id: int, rollups: Rollups) -> int:
    import pyarrow as pa

    target, sql = ("flow_rollups", _FLOW_ROLLUP_SQL) if rollups.kind == "flows" else ("dns_rollups", _DNS_ROLLUP_SQL)
    parts = [p for p in rollups.parts if p.num_rows]
    fw_filter = " AND firewall = ?" if rollups.firewall else ""
    fw_params = [rollups.firewall.lower()] if rollups.firewall else []
    con.execute(f"DELETE FROM {target} WHERE hour >= ? AND hour < ?{fw_filter}", [rollups.start, rollups.end, *fw_params])
    if not parts:
        return 0
    con.register("rollup_all", pa.concat_tables(parts, promote_options="permissive"))
    # a firewall that logs both ways in an hour (two diagnostic settings) is counted once: from its
    # structured tables
    con.execute("""CREATE OR REPLACE TEMP VIEW rollup_parts AS
        SELECT * FROM rollup_all a WHERE coalesce("Format", 'structured') = 'structured' OR NOT EXISTS (
            SELECT 1 FROM rollup_all b WHERE coalesce(b."Format", 'structured') = 'structured'
            AND lower(b."Firewall") IS NOT DISTINCT FROM lower(a."Firewall")
            AND try_cast(b."Hour" AS TIMESTAMPTZ) = try_cast(a."Hour" AS TIMESTAMPTZ))""")
    try:
        return con.execute(f"INSERT INTO {target} {sql}", [run_id]).fetchall()[0][0]
    finally:
        con.execute("DROP VIEW IF EXISTS rollup_parts")
        con.unregister("rollup_all")


def _replace_metrics(con, table: pa.Table, run_id: int) -> int:
    con.register("metric_points", table)
    try:
        con.execute("""CREATE OR REPLACE TEMP TABLE metric_batch AS
            SELECT md5(concat_ws(chr(31), firewall, metric, coalesce(dimension, ''), time::VARCHAR)) AS metric_id, *
            FROM metric_points QUALIFY row_number() OVER (PARTITION BY metric_id) = 1""")
        con.execute("DELETE FROM metrics WHERE metric_id IN (SELECT metric_id FROM metric_batch)")
        return con.execute("""INSERT INTO metrics SELECT metric_id, time, firewall, metric, dimension, unit, grain_s,
            average, minimum, maximum, total, count, ? FROM metric_batch""", [run_id]).fetchall()[0][0]
    finally:
        con.unregister("metric_points")


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
