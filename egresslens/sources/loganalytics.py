"""Pull Azure Firewall logs out of a Log Analytics workspace: windowed, bounded-parallel, resumable.

* One `LogsQueryClient.query_workspace` (or `query_resource`) call per window; the KQL comes from
  `egresslens/queries/*.kql` with typed parameters (`egresslens.sources.kql`).
* Raw mode pages on **ingestion time** (`ingestion_time()`), half-open windows `[s, e)` on a fixed
  grid. A window whose result is partial (the service's row/size cap) or reaches the row cap is split
  in two until every piece is complete: a truncated result is never stored as done.
* Each window is a unit: its rows reach the ingest loop as they arrive, and its progress once every
  piece of it has (`ingest_sources`); the per-table watermark is the end of the contiguous prefix of
  finished windows, committed with the rows of its table. The next run starts at the watermark, so records that
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
from collections.abc import Iterator

import pyarrow as pa

from egresslens import errors
from egresslens.sources import kql, summary_wire
from egresslens.sources.batch import Batch, Context, Counts, Progress, Rollups, Rows, Unit
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
    run_id: int = 0
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


class LogAnalyticsSource:
    """`egresslens ingest loganalytics`: a workspace's (or one firewall's) tables over a time range, read in
    windows (the units), several queries at a time. Read `summary(result)` after `ingest.run`."""

    kind = "loganalytics"
    error = LogAnalyticsError  # what a permanent failure raises, with its one sentence for the user

    def __init__(self, credential, target: Target, *, start: datetime, end: datetime | None = None,
                 tables: list[str] | str = "auto", mode: str = "raw", endpoint: str | None = None,
                 settings: Settings | None = None, now: datetime | None = None,
                 on_progress: Callable[[str, str, dict], None] | None = None):
        if mode not in ("raw", "summary"):
            raise ValueError("mode must be raw or summary")
        self.target = target
        self.settings = settings or Settings()
        self.mode = mode
        self.now = utc_naive(now or datetime.now(timezone.utc))
        self.t0 = utc_naive(start)
        self.t1 = utc_naive(end) if end else self.now
        if self.t0 >= self.t1:
            raise ValueError("the start of the time range must be before its end")
        self.tables_arg = tables
        self.querier = self._querier(credential, endpoint)
        self.stats = Stats()
        self.on_progress = on_progress or (lambda event, table, info: None)
        self.description = f"{target.scope} mode={mode} {_iso(self.t0)}..{_iso(self.t1)}"
        self._table_plan: dict[str, dict] = {}
        self._positions: dict[str, int] = {}
        self._progress: dict = {}
        self._wire_con = None

    def _querier(self, credential, endpoint: str | None):
        """What runs one rendered query (`run(query, timespan, what=)` -> QueryResult); Azure Data Explorer has its own."""
        return Querier(credential, self.target, endpoint=endpoint, settings=self.settings)

    def _render(self, name: str, **values) -> str:
        """The template `name` rendered with typed values (a source whose tables have other names maps them here)."""
        return kql.load(name).render(**values)

    def failure_message(self, exc: BaseException) -> str:
        return str(exc) if isinstance(exc, self.error) else errors.sentence(exc)

    def summary(self, result) -> Stats:
        """The run's statistics, with the loop's counts (`ingest.run`'s result)."""
        self.stats.run_id, self.stats.counts = result.run_id, result.counts
        if self.mode == "summary":
            self.stats.rollups = result.counts.stored
        return self.stats

    # keys in ingest_sources
    def _key(self, table: str, *rest: str) -> str:
        return "|".join((self.kind, self.target.scope, self.target.firewall.lower(), self.mode, table, *rest))

    def _ingest_range(self) -> tuple[datetime, datetime]:
        return self.t0 - self.settings.ingest_margin, self.now - self.settings.ingestion_lag

    def discover(self, ctx: Context) -> list[Unit]:
        """The tables to read (found in the workspace, for `auto`) and their windows still to read."""
        self._progress = ctx.progress
        try:
            tables = self._resolve_tables()
            self.stats.tables = tables
            return [Unit(self._key(w.table, _iso(w.start), _iso(w.end)), ref=w) for w in self._plan(tables)]
        except BaseException:
            self.querier.close()
            raise

    def read_all(self, units: list[Unit], ctx: Context) -> Iterator[Batch]:
        try:
            yield from self._execute([u.ref for u in units])
        finally:
            self.querier.close()
            if self._wire_con is not None:
                self._wire_con.close()

    # -- tables --------------------------------------------------------------------------------------
    def _resolve_tables(self) -> list[str]:
        if self.mode == "summary":
            if self.tables_arg not in ("auto", None):
                chosen = [t for t in _listify(self.tables_arg)]
                bad = [t for t in chosen if t not in SUMMARY_TABLES]
                if bad:
                    raise self.error(f"Summary mode reads the tables {', '.join(SUMMARY_TABLES)}, "
                                     f"not {', '.join(bad)}.")
                return [t for t in SUMMARY_TABLES if t in chosen]
            found = self._detect()
            wanted = {s for t in found for s in _SUMMARY_FOR_TABLE.get(t, ())}
            return [t for t in SUMMARY_TABLES if t in wanted]
        if self.tables_arg not in ("auto", None):
            chosen = _listify(self.tables_arg)
            bad = [t for t in chosen if t not in RAW_TABLES]
            if bad:
                raise self.error(
                    f"Unknown table {bad[0]!r}: choose from {', '.join(RAW_TABLES)} (or --tables auto).")
            return chosen
        found = self._detect()
        return [t for t in RAW_TABLES if t in found]

    def _detect(self) -> set[str]:
        """The tables (structured AZFW*, legacy AzureDiagnostics) with records in the range."""
        i0, i1 = self._ingest_range()
        q = self._render("detect", time_start=self.t0, time_end=self.t1, ingest_start=i0,
                         ingest_end=max(i1, i0 + timedelta(microseconds=1)), firewall=self.target.firewall)
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
            wm = self._progress.get(self._key(table, "watermark"))
            if self.mode == "raw":
                i0, i1 = self._ingest_range()
                if wm and wm.size is not None and wm.size <= _us(self.t0):
                    i0 = max(i0, _from_us(wm.offset_done))
                step = st.window
            else:
                i0 = _floor(self.t0, timedelta(hours=1))
                i1 = self.t1
                if wm and wm.size is not None and wm.size <= _us(self.t0):
                    i0 = max(i0, _floor(_from_us(wm.offset_done) - st.summary_lookback, timedelta(hours=1)))
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
                done = self._progress.get(self._key(table, _iso(s), _iso(e)))
                if done and done.complete and self.mode == "raw":
                    self.stats.windows_skipped += 1
                    continue
                planned.append(_Window(table, s, e, pieces_open=len(templates), templates=templates))
            self._table_plan[table] = {"windows": planned, "start": i0, "end": i1}
            windows.extend(planned)
            self.on_progress("plan", table, {"windows": len(planned)})
        return windows

    def _query(self, w: _Window, s: datetime, e: datetime, tpl: str) -> QueryResult:
        if self.mode == "raw":
            q = self._render(f"raw_{w.table}", time_start=self.t0, time_end=self.t1, ingest_start=s, ingest_end=e,
                             firewall=self.target.firewall)
            span = (self.t0, self.t1)
        else:
            q = self._render(SUMMARY_TEMPLATES[tpl][0], time_start=s, time_end=e, firewall=self.target.firewall)
            span = (s, e)
        return self.querier.run(q, span, what=f"{tpl or w.table} {_iso(s)}..{_iso(e)}")

    def _execute(self, windows: list[_Window]) -> Iterator[Batch]:
        """Run the windows' queries, at most max_concurrency at once, splitting a capped window in two until
        every piece is complete; a batch for each piece's rows and for each finished window's progress. A
        permanent failure stops new queries: the pieces under way finish and are handed over, then it is
        raised."""
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
                        except BaseException as exc:  # permanent: stop submitting, hand over what finished
                            if failure is None:
                                failure = exc
                            continue
                        self._account(w.table, res)
                        n = res.table.num_rows if res.table is not None else 0
                        if res.partial or n >= st.row_cap:
                            if e - s <= st.min_window:
                                failure = failure or self.error(
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
                        yield from self._piece(w, s, e, res, tpl)
                        w.pieces_open -= 1
                        if w.pieces_open == 0:
                            yield self._finish_window(w)
                            self.on_progress("window", w.table, {"rows": w.rows})
                    if failure is not None and not pending:
                        break
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
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

    def _source(self, table: str) -> str:
        return f"{self.kind}:{self.target.scope}:{table}"

    def _decoder(self):
        """An in-memory DuckDB of this reader's own, to decode summaries' wire form (never the store)."""
        if self._wire_con is None:
            import duckdb

            self._wire_con = duckdb.connect(config={"memory_limit": "256MB", "threads": 1})
        return self._wire_con

    def _piece(self, w: _Window, s: datetime, e: datetime, res: QueryResult, tpl: str = "") -> Iterator[Batch]:
        n = res.table.num_rows if res.table is not None else 0
        w.rows += n
        self.stats.rows += n
        self.stats.per_table_rows[w.table] = self.stats.per_table_rows.get(w.table, 0) + n
        if res.table is None or n == 0:
            return
        if self.mode == "raw":
            offset = self._positions.get(w.table, 0)
            self._positions[w.table] = offset + n
            yield Batch(self._source(w.table), Rows(res.table, w.table, offset), bytes=res.bytes)
        else:
            fmt = "legacy" if tpl.endswith("_legacy") else "structured"
            try:
                groups = summary_wire.decode(self._decoder(), res.table, summary_wire.WIRES[SUMMARY_TEMPLATES[tpl][1]])
            except summary_wire.WireError as exc:
                raise self.error(f"The summary of {tpl} {_iso(s)}..{_iso(e)} came back malformed: {exc}.") from None
            w.parts.append(groups.append_column("Format", pa.array([fmt] * n, pa.string())))
        self.on_progress("rows", w.table, {"rows": n})

    def _finish_window(self, w: _Window) -> Batch:
        """The window's progress, and the table's new watermark when the finished windows now reach further."""
        progress = [Progress(self._key(w.table, _iso(w.start), _iso(w.end)), records_done=w.rows, complete=True)]
        plan = self._table_plan[w.table]
        plan.setdefault("done", set()).add((w.start, w.end))
        prefix_end = None  # end of the contiguous prefix of finished windows: the new watermark
        for pw in plan["windows"]:
            if (pw.start, pw.end) not in plan["done"]:
                break
            prefix_end = pw.end
        if prefix_end is not None and prefix_end != plan.get("watermark"):
            plan["watermark"] = prefix_end
            old = self._progress.get(self._key(w.table, "watermark"))
            coverage = min(old.size, _us(self.t0)) if old and old.size is not None else _us(self.t0)
            progress.append(Progress(self._key(w.table, "watermark"), size=coverage, offset_done=_us(prefix_end)))
        self.stats.windows += 1
        if self.mode == "raw":  # committed with the table's rows
            return Batch(self._source(w.table), Rows(pa.table({}), w.table, self._positions.get(w.table, 0)),
                         until=progress)
        kind = SUMMARY_TEMPLATES[w.templates[0]][1]
        parts, w.parts = tuple(w.parts), []
        return Batch(self._key(w.table), Rollups(kind, w.start, w.end, self.target.firewall or self.target.resource_id,
                                                 parts), until=progress, gather=False)


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
