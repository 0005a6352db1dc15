"""Ingest: one loop reads every source's batches, normalises them and commits them, one transaction each.

A source only reads (egresslens/sources/batch.py): it lists its units and yields batches of raw records
with their progress. This loop owns everything else, for every source: the order units are read in and
which batches are gathered into one transaction (small files into batches of `batch_bytes`, whole archive
blobs and CSV exports into reads of `whole_bytes`, query windows by table), normalisation (egresslens/stage.py, then the
SQL of egresslens/normalise.py and canonical.py), event ids and de-duplication, the insert, the
quarantine and the progress, committed together (egresslens/load.py), the resume rules, the counts (read
= stored + duplicates + quarantined), Ctrl-C, the progress bar, and one bad file never stopping a run.

    result = ingest.run(con, FilesSource(paths))            # or StorageSource, LogAnalyticsSource, ...
    result.counts.summary(), result.units, result.run_id
"""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from egresslens import errors, normalise, stage
from egresslens.azfw import ROUTES
from egresslens.load import Loader, store_canonical_frames  # noqa: F401  (re-exported)
from egresslens.sources.batch import (Batch, Context, Counts, CsvFile, JsonFiles, Limits, Lines, MetricPoints, Progress,
                                      Rollups, Rows, Unit)
from egresslens.sources.files import FilesSource


@dataclass
class UnitResult:
    """What became of one unit: its format (`jsonl`, `json`, `csv`, `empty`), `unchanged` (not read
    again), or `skipped` (with the `problem` that stopped it); a `problem` with a read unit (a torn gzip);
    `waiting`: its last line is incomplete (still being written?), read on a later run."""
    path: str
    fmt: str
    problem: str | None = None
    waiting: bool = False
    resumed_from: int = 0

    @property
    def skipped(self) -> bool:
        return self.fmt == "unchanged"


@dataclass
class RunResult:
    run_id: int
    counts: Counts
    units: list[UnitResult] = field(default_factory=list)


def run(con: duckdb.DuckDBPyConnection, source, *, force: bool = False, progress=None,
        limits: Limits | None = None) -> RunResult:
    """Ingest everything `source` has to read as one run.

    `force` reads every unit again from its start (event ids keep the store duplicate-free). `progress`, if
    given, is a callable (total_bytes) -> callable(n_bytes) for a progress bar. Ctrl-C marks the run
    `interrupted` (committed batches stay) and re-raises KeyboardInterrupt; any other failure marks it
    `failed` and re-raises, after committing every batch already read whole."""
    return Pipeline(con, source, force=force, limits=limits or Limits.from_env()).run(progress)


def ingest_files(con, paths, *, force: bool = False, progress=None,
                 limits: Limits | None = None) -> tuple[Counts, list[UnitResult], int]:
    """`egresslens ingest files PATH...`: (counts, what became of each file, run id)."""
    result = run(con, FilesSource(paths), force=force, progress=progress, limits=limits)
    return result.counts, result.units, result.run_id


class Pipeline:
    """One run of one source against one store connection."""

    def __init__(self, con, source, *, force: bool, limits: Limits):
        self.con, self.source, self.limits = con, source, limits
        self.loader = Loader(con, source.kind, source.description)
        self.run_id = self.loader.run_id
        self.ctx = Context(progress={} if force else self.loader.states(), scratch=scratch_prefix(con),
                           limits=limits, force=force)
        self.results: dict[str, UnitResult] = {}
        self.done: dict[str, Progress] = {}  # the last progress committed per unit, this run
        self.groups: dict[tuple, list[Batch]] = {}  # gathered batches, by what they can be staged with
        self.files: dict[str, list[tuple[Unit, Batch]]] = {}  # whole archive blobs gathered, by route
        self.exports: list[Batch] = []  # CSV exports gathered, to be read whole together
        self.advance = lambda n: None
        self.ctrl_c = _CtrlC()

    # -- the run --------------------------------------------------------------------------------------------
    def run(self, progress=None) -> RunResult:
        try:
            with self.ctrl_c:
                units = self.source.discover(self.ctx)
                if progress:
                    self.advance = progress(sum(u.size for u in units))
                if hasattr(self.source, "read_all"):
                    self._read_all(units)
                else:
                    for unit in plan(units):
                        self._read_unit(unit)
                self.flush()
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt) or self.ctrl_c.hit
            try:
                self.loader.finish("interrupted" if interrupted else "failed", self._message(exc))
            except Exception:  # noqa: BLE001 - the connection may be mid-statement: the next run marks this one
                pass
            if interrupted and not isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt from exc
            raise
        skipped = [r for r in self.results.values() if r.fmt == "skipped"]
        message = ((f"{len(skipped)} file(s) skipped: " + "; ".join(f"{r.path}: {r.problem}" for r in skipped))[:4000]
                   if skipped else None)
        counts = self.loader.finish(message=message)
        return RunResult(self.run_id, counts, list(self.results.values()))

    def _message(self, exc: BaseException) -> str:
        """What the run's row says of the failure that stopped it (a source may word it, and redact it)."""
        word = getattr(self.source, "failure_message", None)
        return (word(exc) if word else errors.sentence(exc))[:500]

    def _read_all(self, units: list[Unit]) -> None:
        """A source that reads its units itself (concurrently, prefetching): any failure, or Ctrl-C, stops
        the run, after what was read whole (a finished window, a blob's complete lines) is committed."""
        try:
            for batch in self.source.read_all([u for u in units if not u.skip], self.ctx):
                self.take(None, batch)
        except BaseException:
            try:
                self.flush()
            except BaseException:  # noqa: BLE001 - the first failure is the one to report
                pass
            raise

    def _read_unit(self, unit: Unit) -> None:
        """One unit; a failure skips it with its reason (what was gathered of it is dropped, nothing of it
        committed since its last batch) and the run goes on."""
        if unit.skip:
            self._result(unit.key, unit.skip)
            self.advance(unit.size)
            return
        try:
            self._read(unit)
        except Exception as exc:  # noqa: BLE001 - any failure of one unit is reported, the run goes on
            self._skip(unit.key, exc)

    def _skip(self, key: str, exc: Exception) -> None:
        """A unit that failed is skipped with its reason (what was gathered of it is dropped); the run goes on,
        unless it was Ctrl-C or the store cannot be written (a full disk: no unit can be)."""
        if self.ctrl_c.hit:
            raise KeyboardInterrupt from exc
        if self.loader.write_failed is not None:
            raise exc
        self.drop(key)
        self.results[key] = UnitResult(key, "skipped", problem=explain(exc))

    def _read(self, unit: Unit, *, again: bool = False) -> None:
        batches = self.source.read(unit, self.ctx)
        try:
            for batch in batches:
                if not self.take(unit, batch, count_bytes=not again):
                    batches.close()  # a piece DuckDB did not take: the rest of the unit line by line
                    self._as_lines(unit)
                    return
        finally:
            batches.close()

    def _as_lines(self, unit: Unit) -> None:
        self._read(replace(unit, route=None, resume=self.done.get(unit.key, unit.resume)), again=True)

    def _result(self, key: str, fmt: str | None) -> UnitResult:
        if key not in self.results:
            self.results[key] = UnitResult(key, fmt or "?")
        elif fmt and self.results[key].fmt == "?":
            self.results[key].fmt = fmt
        return self.results[key]

    # -- taking batches --------------------------------------------------------------------------------------
    def take(self, unit: Unit | None, batch: Batch, *, count_bytes: bool = True) -> bool:
        """Gather or commit one batch; False for a piece of a blob DuckDB did not take whole."""
        result = self._result(batch.source, batch.status)
        if unit is not None and unit.resume and not result.resumed_from:
            result.resumed_from = unit.resume.offset_done
        result.problem = batch.problem or result.problem
        result.waiting = batch.waiting
        if count_bytes:
            self.advance(batch.bytes)
        records = batch.records
        if isinstance(records, JsonFiles):
            if not batch.gather:
                self.flush()
                return bool(self.read_files([(unit, batch)]))
            group = self.files.setdefault(records.route, [])
            if group and sum(b.records.bytes for _, b in group) + records.bytes > self.limits.whole_bytes:
                self._flush_files(records.route)
                group = self.files.setdefault(records.route, [])
            group.append((unit, batch))
            return True
        if isinstance(records, CsvFile) and batch.gather and not batch.rejects:
            if self.exports and sum(b.bytes for b in self.exports) + batch.bytes > self.limits.whole_bytes:
                self._flush_exports()
            self.exports.append(batch)
            return True
        if batch.gather and (records is None or isinstance(records, (Lines, Rows))):
            key = ("rows", batch.source, records.log_table) if isinstance(records, Rows) else ("lines",)
            group = self.groups.setdefault(key, [])
            group.append(batch)
            if sum(_nbytes(b) for b in group) >= self.limits.batch_bytes:
                self._flush_group(key)
            return True
        self.flush()
        self.commit(batch)
        return True

    def drop(self, key: str) -> None:
        """Forget what is gathered of one unit (it failed): nothing of it was committed."""
        for name, group in self.groups.items():
            self.groups[name] = [b for b in group if b.source != key]
        for route, group in self.files.items():
            self.files[route] = [(u, b) for u, b in group if b.source != key]
        self.exports = [b for b in self.exports if b.source != key]

    def flush(self) -> None:
        for route in list(self.files):
            self._flush_files(route)
        self._flush_exports()
        for key in list(self.groups):
            self._flush_group(key)

    def _flush_group(self, key: tuple) -> None:
        import pyarrow as pa  # here, not at the top: a run DuckDB reads alone never loads Arrow

        group = self.groups.pop(key, [])
        if not group:
            return
        until = [p for b in group for p in b.until]
        rejects = [r for b in group for r in b.rejects]
        tables = [b.records.table for b in group if b.records is not None and b.records.table.num_rows]
        if key[0] == "rows":
            first = group[0].records
            table = pa.concat_tables(tables, promote_options="permissive") if tables else None
            records = Rows(table, first.log_table, first.position_offset) if table is not None else None
        else:
            records = Lines(pa.concat_tables(tables)) if tables else None
        self.commit(Batch(group[0].source, records, until, rejects))

    def _flush_files(self, route: str) -> None:
        group = self.files.pop(route, [])
        if group:
            self.read_files(group)

    def _flush_exports(self) -> None:
        """The CSV exports gathered (up to `whole_bytes`), straight into the store in one transaction; when
        they cannot all be, each alone (`commit`: straight, or staged, or row by row), a failure skipping it."""
        group, self.exports = self.exports, []
        if len(group) > 1:
            try:
                counts = self._csv_whole(group)
            except Exception:  # noqa: BLE001 - each export is read again alone, which reports any failure
                if self.ctrl_c.hit or self.loader.write_failed is not None:
                    raise
                counts = None
            if counts is not None:
                self.done.update((p.source, p) for b in group for p in b.until)
                return
        for batch in group:
            try:
                self.commit(batch)
            except Exception as exc:  # noqa: BLE001 - as a unit that fails while it is read
                self._skip(batch.source, exc)

    # -- archive blobs read whole by DuckDB ------------------------------------------------------------------
    def read_files(self, group: list[tuple[Unit, Batch]]) -> set[int]:
        """Whole blobs (or one piece of one) of a route, read by DuckDB in one statement; one it does not take
        (a line it cannot read stops the whole statement: then each alone) is read again line by line.
        Returns the indexes taken."""
        paths = [p for _, b in group for p in b.records.paths]
        until = [b.until[-1] for _, b in group]
        try:
            taken = self.read_archive(paths, group[0][1].records.route, until)
        except Exception:  # noqa: BLE001 - these files are read again line by line, which reports any failure
            if self.ctrl_c.hit or self.loader.write_failed is not None:
                raise
            taken = set()
        if not taken and len(group) > 1:
            for i, one in enumerate(group):
                if self.read_files([one]):
                    taken.add(i)
            return taken
        for i, (unit, batch) in enumerate(group):
            if i in taken:
                self.done[unit.key] = until[i]
            elif batch.gather:
                self._as_lines(unit)
        return taken

    def read_archive(self, paths: list[str], route: str, until: list[Progress]) -> set[int]:
        """Files of one route read by DuckDB's JSON reader, committed with the progress of those taken whole
        (`until`, one per path; a whole file's record count is what DuckDB read). Straight into the store
        when every record is stored (`normalise.whole_archive`), else staged (`normalise.normalise_archive`),
        which leaves out the files it cannot take. Returns the indexes of the files taken."""
        whole = normalise.whole_archive(self.con, paths, route)
        if whole is not None and self.loader.commit_whole(
                whole.selects, whole.records,
                lambda held: _taken(until, {i: held.get(i, 0) for i in range(len(paths))})) is not None:
            return set(range(len(paths)))
        self._stop_if_interrupted()
        taken, _, built = normalise.normalise_archive(self.con, paths, route)
        if not taken:
            return set()
        self.loader.commit(built, sum(taken.values()), _taken(until, taken), staged_rejects=False)
        return set(taken)

    def _stop_if_interrupted(self) -> None:
        """A Ctrl-C DuckDB turned into an error inside a statement stops the run here."""
        if self.ctrl_c.hit:
            raise KeyboardInterrupt

    # -- committing --------------------------------------------------------------------------------------------
    def commit(self, batch: Batch) -> Counts:
        """One batch: staged part by part; its progress and read-time rejects with its last part."""
        records = batch.records
        counts = Counts()
        if records is None:
            counts = self.loader.commit_rejects(batch.rejects, batch.until)
        elif isinstance(records, Rollups):
            counts = self.loader.replace_rollups(records, batch.until)
        elif isinstance(records, MetricPoints):
            counts = self.loader.replace_metrics(records, batch.until)
        # a CSV export of one table, of any size, read by DuckDB on every thread straight into the store; if
        # it cannot be stored whole, staged whole (which finds out whether any row is refused: then row by row)
        elif isinstance(records, CsvFile) and (direct := self._csv_whole([batch])) is not None:
            counts = direct
        elif isinstance(records, CsvFile) and (
                whole := normalise.normalise_csv(self.con, records.path, records.log_table)) is not None:
            counts = self.loader.commit(whole[0], whole[1], batch.until, batch.rejects, staged_rejects=False)
        else:
            original = ((lambda wanted: stage.original_csv_lines(records.path, wanted))
                        if isinstance(records, CsvFile) else None)
            for part in stage.stage(self.con, records, batch.source, self.limits, self.ctx.scratch):
                built = normalise.normalise_batch(self.con, tabular=part.tabular) if part.records else []
                rejects = [*part.rejects, *(batch.rejects if part.last else [])]
                counts.add(self.loader.commit(built, part.records, batch.until if part.last else [], rejects,
                                              staged_rejects=bool(part.records), original_lines=original))
        for p in batch.until:
            self.done[p.source] = p
        return counts

    def _csv_whole(self, group: list[Batch]) -> Counts | None:
        """CSV exports straight into the store in one transaction (`normalise.whole_csv`), or None, with
        nothing written: read them staged."""
        exports = [(b.records.path, b.records.log_table) for b in group]
        whole = None if any(b.rejects for b in group) else normalise.whole_csv(self.con, exports)
        until = [p for b in group for p in b.until]
        counts = None if whole is None else self.loader.commit_whole(whole.selects, whole.records, lambda held: until)
        if counts is None:
            self._stop_if_interrupted()
        return counts


def _taken(until: list[Progress], taken: dict[int, int]) -> list[Progress]:
    """The progress of the files taken ({index: records read}): a complete file's records are those read.
    `until` is updated in place (the loop then notes each file's progress as done)."""
    for i, n in taken.items():
        if until[i].complete and not until[i].records_done:
            until[i] = replace(until[i], records_done=n)
    return [until[i] for i in sorted(taken)]


def plan(units: list[Unit]) -> list[Unit]:
    """The order units are read in: archive blobs DuckDB reads first, route by route (each route's whole
    blobs, gathered into full reads, before its large ones read in pieces, whose time range then holds only
    the rows the whole blobs of their hour stored), then every other unit in the order found."""
    routes = list(ROUTES)

    def key(item: tuple[int, Unit]) -> tuple:
        i, u = item
        if u.route is None or u.skip:
            return (1, 0, 0, i)
        whole = not (u.resume and u.resume.offset_done)
        return (0, routes.index(u.route) if u.route in routes else len(routes), not whole, i)

    return [u for _, u in sorted(enumerate(units), key=key)]


def _nbytes(batch: Batch) -> int:
    return batch.records.table.nbytes if batch.records is not None else 0


def scratch_prefix(con) -> Path:
    """Where readers put scratch files: beside the store (its lock keeps them to one run at a time), or in
    the temporary directory for a store in memory."""
    (db,) = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0]
    if db:
        path = Path(db).resolve()
        return path.parent / f".{path.name}"
    return Path(tempfile.gettempdir()) / f"egresslens-{os.getpid()}"


def explain(exc: BaseException) -> str:
    """One sentence for an error that stopped reading one unit (no traceback, no log text)."""
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, MemoryError):
        return "too large to read in memory"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"could not be read ({type(exc).__name__}: {first[:160]})"


class _CtrlC:
    """Notes a Ctrl-C during the run. DuckDB turns one that lands inside a query into an ordinary
    error ("Query interrupted"); the note tells it apart from a unit that failed, so the run stops."""

    def __init__(self):
        self.hit = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handler(self, signum, frame):
        self.hit = True
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
