"""Pull Azure Firewall logs out of a Log Analytics workspace: windowed, bounded-parallel, resumable.

* One `LogsQueryClient.query_workspace` (or `query_resource`) call per window; the KQL comes from
  `egresslens/queries/*.kql` with typed parameters (`egresslens.sources.kql`).
* Raw mode pages on **ingestion time** (`ingestion_time()`), half-open windows `[s, e)` on a fixed
  grid. A window whose result is partial (the service's row/size cap) or reaches the row cap is split
  in two until every piece is complete: a truncated result is never stored as done.
* Each finished window is recorded in `ingest_sources`; the per-table watermark is the end of the
  contiguous prefix of finished windows. The next run starts at the watermark, so records that
  arrive late (ingested after an earlier run, whatever their TimeGenerated) are picked up, and the
  deterministic `event_id` keeps every event stored once even when a window is read twice (a run
  killed mid-window, an overlap).
* Summary mode runs `summarize` in the workspace (hourly bins), receives the groups front-coded
  (`egresslens.sources.summary_wire`: about 1/100 of the raw rows' bytes, decoded exactly) and
  replaces the rollups of the hours it re-reads; it re-reads a look-back margin before its watermark
  so late records are counted.
* Throttling (429 + Retry-After), transient 5xx and timeouts are retried here, deliberately, with
  backoff (the SDK's own retries are switched off); permanent errors become `LogAnalyticsError`
  with one sentence for the user, after every completed window has been stored.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pyarrow as pa

from egresslens import errors, store
from egresslens.ingest import Counts, Ingestor
from egresslens.sources import kql, summary_wire
from egresslens.sources.loganalytics_query import (  # noqa: F401 - re-exported for callers
    LogAnalyticsError,
    Querier,
    QueryResult,
    Settings,
    Target,
    utc_naive,
)

RAW_TABLES = (
    "AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery", "AZFWThreatIntel",
    "AZFWIdpsSignature", "AZFWInternalFqdnResolutionFailure", "AZFWFatFlow", "AZFWFlowTrace", "AzureDiagnostics",
)
# summary mode: name -> (template, rollup kind). Structured AZFW* tables and the legacy AzureDiagnostics
# text both roll up into flow_rollups / dns_rollups with the same canonical values.
SUMMARY_TEMPLATES = {
    "flows": ("summary_flows", "flows"), "dns": ("summary_dns", "dns"),
    "flows_legacy": ("summary_flows_legacy", "flows"), "dns_legacy": ("summary_dns_legacy", "dns"),
}
SUMMARY_TABLES = tuple(SUMMARY_TEMPLATES)
# which summaries `--tables auto` runs for the tables detection finds with data
_SUMMARY_FOR_TABLE = {
    "AZFWApplicationRule": ("flows",), "AZFWNetworkRule": ("flows",), "AZFWNatRule": ("flows",),
    "AZFWDnsQuery": ("dns",), "AzureDiagnostics": ("flows_legacy", "dns_legacy"),
}
_EPOCH = datetime(1970, 1, 1)


@dataclass
class Stats:
    rows: int = 0
    windows: int = 0
    windows_skipped: int = 0
    splits: int = 0
    queries: int = 0
    retries: int = 0
    bytes: int = 0
    per_table_rows: dict[str, int] = field(default_factory=dict)
    per_table_bytes: dict[str, int] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    rollups: int = 0
    tables: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "windows": self.windows, "windows_skipped": self.windows_skipped,
                "splits": self.splits, "queries": self.queries, "retries": self.retries, "bytes": self.bytes,
                "rows_per_table": self.per_table_rows, "bytes_per_table": self.per_table_bytes,
                "stored": self.counts.stored, "duplicates": self.counts.duplicates,
                "quarantined": self.counts.quarantined, "rollups": self.rollups, "tables": self.tables}


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _floor(dt: datetime, step: timedelta) -> datetime:
    return _from_us(_us(dt) // (step // timedelta(microseconds=1)) * (step // timedelta(microseconds=1)))


def grid(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """Half-open windows on a fixed grid (aligned to `step`), clipped to [start, end)."""
    out = []
    s = start
    while s < end:
        e = min(_floor(s, step) + step, end)
        out.append((s, e))
        s = e
    return out


# -- the run -------------------------------------------------------------------------------------

@dataclass
class _Window:
    table: str  # raw table; summary mode: the summaries it merges, e.g. "flows" or "flows+flows_legacy"
    start: datetime
    end: datetime
    pieces_open: int = 1
    templates: tuple[str, ...] = ("",)  # summary mode: one query per summary name, merged when all are done
    rows: int = 0
    parts: list[pa.Table] = field(default_factory=list)  # summary mode: merged when the window is done


class Run:
    """One `ingest loganalytics` run. Call `run()`; the DuckDB connection is used from this thread only."""

    def __init__(self, con, credential, target: Target, *, start: datetime, end: datetime | None = None,
                 tables: list[str] | str = "auto", mode: str = "raw", endpoint: str | None = None,
                 settings: Settings | None = None, now: datetime | None = None,
                 on_progress: Callable[[str, str, dict], None] | None = None):
        if mode not in ("raw", "summary"):
            raise ValueError("mode must be raw or summary")
        self.con = con
        self.target = target
        self.settings = settings or Settings()
        self.mode = mode
        self.now = utc_naive(now or datetime.now(timezone.utc))
        self.t0 = utc_naive(start)
        self.t1 = utc_naive(end) if end else self.now
        if self.t0 >= self.t1:
            raise ValueError("the start of the time range must be before its end")
        self.tables_arg = tables
        self.querier = Querier(credential, target, endpoint=endpoint, settings=self.settings)
        self.stats = Stats()
        self.on_progress = on_progress or (lambda event, table, info: None)
        self.ingestor: Ingestor | None = None
        self._table_plan: dict[str, dict] = {}
        self._buf: dict[str, list[pa.Table]] = {}
        self._buf_rows = 0
        self._marks: dict[str, list[dict]] = {}
        self._positions: dict[str, int] = {}

    # keys in ingest_sources
    def _key(self, table: str, *rest: str) -> str:
        return "|".join(("loganalytics", self.target.scope, self.target.firewall.lower(), self.mode, table, *rest))

    def _ingest_range(self) -> tuple[datetime, datetime]:
        return self.t0 - self.settings.ingest_margin, self.now - self.settings.ingestion_lag

    def run(self) -> Stats:
        sources = f"{self.target.scope} mode={self.mode} {_iso(self.t0)}..{_iso(self.t1)}"
        self.ingestor = Ingestor(self.con, "loganalytics", sources)
        try:
            tables = self._resolve_tables()
            self.stats.tables = tables
            windows = self._plan(tables)
            self._execute(windows)
        except BaseException as exc:
            msg = str(exc) if isinstance(exc, LogAnalyticsError) else errors.sentence(exc)
            self.ingestor.finish("failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted", msg)
            raise
        finally:
            self.querier.close()
        self.stats.counts = self.ingestor.finish()
        return self.stats

    # -- tables --------------------------------------------------------------------------------------
    def _resolve_tables(self) -> list[str]:
        if self.mode == "summary":
            if self.tables_arg not in ("auto", None):
                chosen = [t for t in _listify(self.tables_arg)]
                bad = [t for t in chosen if t not in SUMMARY_TABLES]
                if bad:
                    raise LogAnalyticsError(f"Summary mode reads the tables {', '.join(SUMMARY_TABLES)}, "
                                            f"not {', '.join(bad)}.")
                return [t for t in SUMMARY_TABLES if t in chosen]
            found = self._detect()
            wanted = {s for t in found for s in _SUMMARY_FOR_TABLE.get(t, ())}
            return [t for t in SUMMARY_TABLES if t in wanted]
        if self.tables_arg not in ("auto", None):
            chosen = _listify(self.tables_arg)
            bad = [t for t in chosen if t not in RAW_TABLES]
            if bad:
                raise LogAnalyticsError(
                    f"Unknown table {bad[0]!r}: choose from {', '.join(RAW_TABLES)} (or --tables auto).")
            return chosen
        found = self._detect()
        return [t for t in RAW_TABLES if t in found]

    def _detect(self) -> set[str]:
        """The tables (structured AZFW*, legacy AzureDiagnostics) with records in the range."""
        i0, i1 = self._ingest_range()
        q = kql.load("detect").render(time_start=self.t0, time_end=self.t1, ingest_start=i0,
                                      ingest_end=max(i1, i0 + timedelta(microseconds=1)),
                                      firewall=self.target.firewall)
        res = self.querier.run(q, (self.t0, self.t1), what="table detection")
        self._account(None, res)
        if res.table is None or res.table.num_rows == 0:
            return set()
        return set(res.table.column("SourceTable").to_pylist())

    # -- windows -------------------------------------------------------------------------------------
    def _plan(self, tables: list[str]) -> list[_Window]:
        st = self.settings
        windows: list[_Window] = []
        groups: list[tuple[str, tuple[str, ...]]] = [(t, ("",)) for t in tables]
        if self.mode == "summary":  # one window per rollup kind: its hours are replaced as a whole
            groups = []
            for kind in ("flows", "dns"):
                names = tuple(t for t in tables if SUMMARY_TEMPLATES[t][1] == kind)
                if names:
                    groups.append(("+".join(names), names))
        for table, templates in groups:
            wm = self.ingestor.source_state(self._key(table, "watermark"))
            if self.mode == "raw":
                i0, i1 = self._ingest_range()
                if wm and wm["size"] is not None and wm["size"] <= _us(self.t0):
                    i0 = max(i0, _from_us(wm["offset_done"]))
                step = st.window
            else:
                i0 = _floor(self.t0, timedelta(hours=1))
                i1 = self.t1
                if wm and wm["size"] is not None and wm["size"] <= _us(self.t0):
                    i0 = max(i0, _floor(_from_us(wm["offset_done"]) - st.summary_lookback, timedelta(hours=1)))
                step = st.summary_window
            if self.mode == "raw":
                # a dense grid where records of the range arrive; one tail window for the rare late ones
                # (a past --end must not mean thousands of empty windows up to now); caps still split it
                dense_end = max(i0, min(i1, self.t1 + st.ingest_margin))
                spans = grid(i0, dense_end, step) + ([(dense_end, i1)] if i1 > dense_end else [])
            else:
                spans = grid(i0, i1, step)
            planned = []
            for s, e in spans:
                done = self.ingestor.source_state(self._key(table, _iso(s), _iso(e)))
                if done and done["complete"] and self.mode == "raw":
                    self.stats.windows_skipped += 1
                    continue
                planned.append(_Window(table, s, e, pieces_open=len(templates), templates=templates))
            self._table_plan[table] = {"windows": planned, "start": i0, "end": i1}
            windows.extend(planned)
            self.on_progress("plan", table, {"windows": len(planned)})
        return windows

    def _query(self, w: _Window, s: datetime, e: datetime, tpl: str) -> QueryResult:
        if self.mode == "raw":
            q = kql.load(f"raw_{w.table}").render(time_start=self.t0, time_end=self.t1, ingest_start=s, ingest_end=e,
                                                  firewall=self.target.firewall)
            span = (self.t0, self.t1)
        else:
            q = kql.load(SUMMARY_TEMPLATES[tpl][0]).render(time_start=s, time_end=e, firewall=self.target.firewall)
            span = (s, e)
        return self.querier.run(q, span, what=f"{tpl or w.table} {_iso(s)}..{_iso(e)}")

    def _execute(self, windows: list[_Window]) -> None:
        st = self.settings
        pending: dict[Future, tuple[_Window, datetime, datetime, str]] = {}
        queue: deque[tuple[_Window, datetime, datetime, str]] = deque(
            (w, w.start, w.end, tpl) for w in windows for tpl in w.templates)
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=max(1, min(st.max_concurrency, 5)),
                                thread_name_prefix="loganalytics") as pool:
            try:
                while queue or pending:
                    while queue and len(pending) < max(1, min(st.max_concurrency, 5)) and failure is None:
                        w, s, e, tpl = queue.popleft()
                        pending[pool.submit(self._query, w, s, e, tpl)] = (w, s, e, tpl)
                    if not pending:
                        break
                    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                    for fut in done:
                        w, s, e, tpl = pending.pop(fut)
                        try:
                            res = fut.result()
                        except BaseException as exc:  # permanent: stop submitting, store what finished
                            if failure is None:
                                failure = exc
                            continue
                        self._account(w.table, res)
                        n = res.table.num_rows if res.table is not None else 0
                        if res.partial or n >= st.row_cap:
                            if e - s <= st.min_window:
                                failure = failure or LogAnalyticsError(
                                    f"{w.table}: a window of {e - s} still exceeds the result limit "
                                    f"({res.partial_reason or f'{n} rows'}); cannot split further.")
                                continue
                            mid = _split_point(s, e)
                            self.stats.splits += 1
                            w.pieces_open += 1
                            queue.appendleft((w, mid, e, tpl))
                            queue.appendleft((w, s, mid, tpl))
                            self.on_progress("split", w.table, {"start": s, "end": e})
                            continue
                        self._store_piece(w, s, e, res, tpl)
                        w.pieces_open -= 1
                        if w.pieces_open == 0:
                            self._finish_window(w)
                    if failure is not None and not pending:
                        break
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
            finally:
                self._flush()  # finished windows are stored whatever stops the run
        if failure is not None:
            raise failure

    def _account(self, table: str | None, res: QueryResult) -> None:
        self.stats.queries += 1
        self.stats.retries += res.retries
        self.stats.bytes += res.bytes
        if table:
            self.stats.per_table_bytes[table] = self.stats.per_table_bytes.get(table, 0) + res.bytes
        if res.retries:
            self.on_progress("retry", table or "", {"retries": res.retries})

    def _store_piece(self, w: _Window, s: datetime, e: datetime, res: QueryResult, tpl: str = "") -> None:
        n = res.table.num_rows if res.table is not None else 0
        w.rows += n
        self.stats.rows += n
        self.stats.per_table_rows[w.table] = self.stats.per_table_rows.get(w.table, 0) + n
        if res.table is None or n == 0:
            return
        if self.mode == "raw":
            self._buf.setdefault(w.table, []).append(res.table)
            self._buf_rows += n
        else:
            fmt = "legacy" if tpl.endswith("_legacy") else "structured"
            try:
                groups = summary_wire.decode(self.con, res.table, summary_wire.WIRES[SUMMARY_TEMPLATES[tpl][1]])
            except summary_wire.WireError as exc:
                raise LogAnalyticsError(f"The summary of {tpl} {_iso(s)}..{_iso(e)} came back malformed: {exc}.") from None
            w.parts.append(groups.append_column("Format", pa.array([fmt] * n, pa.string())))
        self.on_progress("rows", w.table, {"rows": n})

    def _finish_window(self, w: _Window) -> None:
        st = self.settings
        progress = [dict(source=self._key(w.table, _iso(w.start), _iso(w.end)), size=None, mtime_ns=None,
                         records_done=w.rows, offset_done=0, complete=True)]
        plan = self._table_plan[w.table]
        plan.setdefault("done", set()).add((w.start, w.end))
        prefix_end = None  # end of the contiguous prefix of finished windows: the new watermark
        for pw in plan["windows"]:
            if (pw.start, pw.end) not in plan["done"]:
                break
            prefix_end = pw.end
        if prefix_end is not None and prefix_end != plan.get("watermark"):
            plan["watermark"] = prefix_end
            old = self.ingestor.source_state(self._key(w.table, "watermark"))
            coverage = min(old["size"], _us(self.t0)) if old and old["size"] is not None else _us(self.t0)
            progress.append(dict(source=self._key(w.table, "watermark"), size=coverage, mtime_ns=None,
                                 records_done=0, offset_done=_us(prefix_end), complete=False))
        if self.mode == "raw":
            self._marks.setdefault(w.table, []).extend(progress)
            if self._buf_rows >= st.batch_rows:
                self._flush()
        else:
            self.stats.rollups += store_rollups(self.con, self.ingestor.run_id, w, progress,
                                                firewall=self.target.firewall or self.target.resource_id)
        self.stats.windows += 1
        self.on_progress("window", w.table, {"rows": w.rows})


    def _flush(self) -> None:
        """Store buffered raw rows per table, committing the finished windows' progress with them."""
        for table in sorted(set(self._buf) | set(self._marks)):
            parts = [t for t in self._buf.pop(table, []) if t.num_rows]
            marks = self._marks.pop(table, [])
            if parts:
                batch = pa.concat_tables(parts, promote_options="permissive")
                offset = self._positions.get(table, 0)
                self._positions[table] = offset + batch.num_rows
                self.ingestor.ingest_rows(batch, source=f"loganalytics:{self.target.scope}:{table}",
                                          log_table=table, position_offset=offset, progress=marks or None)
            else:
                for p in marks:
                    self.ingestor.mark_source(**p)
        self._buf_rows = 0


def _split_point(s: datetime, e: datetime) -> datetime:
    """Split on a whole hour when the window spans several (rollups stay whole), else in the middle."""
    hours = (e - s) // timedelta(hours=1)
    if hours >= 2:
        return _floor(s, timedelta(hours=1)) + timedelta(hours=hours // 2 + (1 if _floor(s, timedelta(hours=1)) < s else 0))
    return s + (e - s) / 2


def _listify(v) -> list[str]:
    if isinstance(v, str):
        return [t.strip() for t in v.split(",") if t.strip()]
    return list(v)


# -- rollups -------------------------------------------------------------------------------------

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
         -- canonical as in egresslens/normalise.py: ICMP and port 0 mean no port, 'Default Action' for a
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


def store_rollups(con, run_id: int, w: _Window, progress: list[dict], *, firewall: str | None) -> int:
    """Replace the rollups of the window's hours with the merged pieces, in one transaction."""
    kind = SUMMARY_TEMPLATES[w.templates[0]][1] if w.templates[0] else w.table.split("+")[0].removesuffix("_legacy")
    target, sql = ("flow_rollups", _FLOW_ROLLUP_SQL) if kind == "flows" else ("dns_rollups", _DNS_ROLLUP_SQL)
    parts = [p for p in w.parts if p.num_rows]
    fw_filter = " AND firewall = ?" if firewall else ""
    fw_params = [firewall.lower()] if firewall else []
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {target} WHERE hour >= ? AND hour < ?{fw_filter}", [w.start, w.end, *fw_params])
        inserted = 0
        if parts:
            con.register("rollup_all", pa.concat_tables(parts, promote_options="permissive"))
            # a firewall that logs both ways in an hour (two diagnostic settings) is counted once: from its
            # structured tables
            con.execute("""CREATE OR REPLACE TEMP VIEW rollup_parts AS
                SELECT * FROM rollup_all a WHERE coalesce("Format", 'structured') = 'structured' OR NOT EXISTS (
                    SELECT 1 FROM rollup_all b WHERE coalesce(b."Format", 'structured') = 'structured'
                    AND lower(b."Firewall") IS NOT DISTINCT FROM lower(a."Firewall")
                    AND try_cast(b."Hour" AS TIMESTAMPTZ) = try_cast(a."Hour" AS TIMESTAMPTZ))""")
            try:
                inserted = con.execute(f"INSERT INTO {target} {sql}", [run_id]).fetchall()[0][0]
            finally:
                con.execute("DROP VIEW IF EXISTS rollup_parts")
                con.unregister("rollup_all")
        for p in progress:
            con.execute("DELETE FROM ingest_sources WHERE source = ?", [p["source"]])
            con.execute("INSERT INTO ingest_sources VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
                        [p["source"], p["size"], p["mtime_ns"], p["records_done"], p["offset_done"], p["complete"]])
        con.execute("UPDATE ingest_runs SET records_read = records_read + ?, stored = stored + ? WHERE run_id = ?",
                    [inserted, inserted, run_id])
        con.execute("COMMIT")
    except BaseException:
        store.rollback(con)
        raise
    w.parts = []
    return inserted
