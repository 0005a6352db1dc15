"""Read log files of every container format into record batches, streaming and resumable.

Formats, detected from content (not names): JSON Lines (storage archive PT1H.json since 2018,
Event Hub bodies one per line, exports), whole JSON documents (pre-2018 `{"records": [...]}`,
an Event Hub body, a Log Analytics query-API response `{"tables": [...]}`, a JSON array of rows),
and Log Analytics CSV exports. Any of them may be gzip-compressed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from egresslens import errors
from egresslens.escape import sql_identifier as _ident
from egresslens.escape import sql_string
from egresslens.ingest import BATCH_SCHEMA, Counts, Ingestor
from egresslens.sources import archive
from egresslens.normalise import INVALID_UTF8, STRUCTURED_TARGETS
from egresslens.sources.sniff import GzipStream, blob_hour, detect_format, json_complete, why_not_a_log
from egresslens.sources.sniff import open_log as _open

# Raw text per batch of the line reader (one transaction): bounds memory whatever the file size.
# 128 MB: a batch then fills whole row groups (about 122k rows), which DuckDB writes straight to the
# store file instead of through the WAL, and scans with every thread.
CHUNK_BYTES = int(os.environ.get("EGRESSLENS_CHUNK_BYTES", 128 << 20))
# Archive blobs up to this size are read whole by DuckDB (sources/archive.py), one batch each at most:
# an hourly blob of a busy firewall; larger ones are read by DuckDB too, in pieces of at most this size
# (measured at 10M records: 128 MB pieces took 1.4x as long as 231 MB blobs read whole). Smaller blobs
# are gathered into batches of this size too: DuckDB holds a batch's canonical rows either way, and each
# statement scans more rows per thread (measured at 1M records: 4.6 s in batches of 512 MB, 6.5 s in
# batches of 128 MB; peak 1.18 GiB at 10M against 2.1, and 2.16 GiB at 100M against 2.14: see
# docs/benchmarks.md).
ARCHIVE_FILE_BYTES = int(os.environ.get("EGRESSLENS_ARCHIVE_FILE_BYTES", 4 * CHUNK_BYTES))
# Rows of a CSV export per batch (one transaction): each batch pays a dozen statements whatever its size, and
# holds its canonical rows in memory once (about 150 MB at 500k flows).
CSV_BATCH_ROWS = 500_000
LOG_TABLES = set(STRUCTURED_TARGETS) | {"AzureDiagnostics"}


@dataclass
class FileResult:
    path: str
    fmt: str
    counts: Counts
    skipped: bool = False
    resumed_from: int = 0
    problem: str | None = None  # why the file was skipped, or what was wrong with it (a torn gzip)
    waiting: bool = False  # its last line is incomplete (still being written?): read on a later run


def _read_order(path: Path) -> tuple:
    """Archives are read hour by hour across their categories and across every path given, so each batch
    spans a short time and de-duplication looks at a small slice of the store (egresslens/ingest.py);
    other files first. A stable sort: files of the same hour, and other files, keep the order found."""
    hour = blob_hour(path.as_posix())
    return (hour is not None, hour)


def discover(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Files under the given paths, recursively, in a stable order: archive blobs hour by hour across
    all the paths (`ingest files container-a container-b` as `ingest files their-parent`), every other
    file in the order given, a directory's by path."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted((f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")), key=str))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    found.sort(key=_read_order)
    seen: set[Path] = set()  # a file named twice (a directory and a file in it) is read once
    return [f for f in found if not (f.resolve() in seen or seen.add(f.resolve()))]


def _table_hint(path: Path) -> str | None:
    """`AZFWNetworkRule.csv` → `AZFWNetworkRule`: exports often omit the `Type` column."""
    stem = path.name.split(".")[0]
    return stem if stem in LOG_TABLES else None


def _decode(block: bytes) -> str:
    """UTF-8 text of a chunk of lines. Lines that are not valid UTF-8 are never silently repaired: they
    get the normaliser's INVALID_UTF8 mark and their bad bytes as `\\xNN`, so they are quarantined."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                lines[i] = INVALID_UTF8.encode() + line.decode("utf-8", errors="backslashreplace").encode()
        return b"\n".join(lines).decode("utf-8")


def _utf8_text(block: bytes) -> pa.Array:
    """The chunk as one Arrow string, validated as UTF-8 by Arrow without a Python str (the common case);
    a chunk with a line that is not UTF-8 goes through `_decode`, which marks that line."""
    buf = pa.py_buffer(block)
    raw = pa.Array.from_buffers(pa.binary(), 1, [None, pa.py_buffer(np.array([0, len(block)], dtype=np.int32)), buf])
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([_decode(block)])


def _split_lines(block: bytes, source: str, first_line: int) -> tuple[pa.Table, int]:
    """One chunk of complete lines → (a batch, the number of lines), with no Python work per line."""
    lines = pc.list_flatten(pc.split_pattern(_utf8_text(block), "\n"))
    if b"\r" in block:
        lines = pc.utf8_rtrim(lines, characters="\r")
    n = len(lines)
    positions = pa.array(np.arange(first_line, first_line + n, dtype=np.int64))
    table = pa.table(
        {
            "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), [source]).cast(pa.string()),
            "position": positions,
            "record_index": pa.nulls(len(lines), pa.int32()),
            "raw": lines,
        },
        schema=BATCH_SCHEMA,
    )
    # Blank lines are not records. Nearly every line starts with `{`: only the others are looked at.
    others = pc.indices_nonzero(pc.invert(pc.starts_with(lines, "{")))
    if len(others):
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines.take(others))), 0)
        drop = others.filter(blank).to_numpy()
        if len(drop):
            keep = np.ones(n, dtype=bool)
            keep[drop] = False
            table = table.filter(pa.array(keep))
    return table, n


def jsonl_chunks(path: Path, source: str, state: dict | None, stat: os.stat_result,
                 on_bytes, tail: dict | None = None) -> Iterator[tuple[pa.Table | None, dict]]:
    """Complete lines in chunks of about CHUNK_BYTES, each with the progress to commit with it.

    Resumes after `state["offset_done"]` (uncompressed bytes) when an earlier run stopped mid-file.
    An unterminated last line that is not whole JSON is not read as a record: in a torn gzip it is
    handed back in `tail` (text, position, why) to be quarantined; in a plain file it may be a line
    still being written, so it is held back (the file stays incomplete) and read once the file has
    grown, or quarantined once the file stopped changing (unchanged since the last run, or an hour old).
    Without `tail`, a last line is read as a record whatever it holds (normalising quarantines it).
    """
    offset = state["offset_done"] if state else 0
    line_no = state["records_done"] if state else 0
    settled = bool(state and not state["complete"] and state["size"] == stat.st_size
                   and state["mtime_ns"] == stat.st_mtime_ns) or time.time() - stat.st_mtime_ns / 1e9 > 3600
    with _open(path) as f:
        _skip(f, offset)
        carry = b""
        raw_file = getattr(f, "fileobj", None) or f
        last_pos = raw_file.tell()
        while True:
            data = f.read(CHUNK_BYTES)
            at_end = not data
            buf = carry + data
            cut = buf.rfind(b"\n")
            complete = at_end
            if at_end and buf[cut + 1:].strip():
                torn = getattr(f, "torn", None)
                if tail is None or (not torn and (settled or json_complete(buf[cut + 1:]))):
                    cut = len(buf) - 1  # the last record is whole (or final, or the caller takes it): read it
                elif torn:
                    if tail is not None:
                        tail.update(text=buf[cut + 1:], position=line_no + buf[: cut + 1].count(b"\n") + 1, why=torn)
                    offset += len(buf) - cut - 1
                elif tail is not None:
                    tail.update(held=True)
                    complete = False
            elif cut < 0 and not at_end:
                carry = buf
                continue
            block, carry = buf[: cut + 1], buf[cut + 1 :]
            pos = raw_file.tell()
            on_bytes(pos - last_pos)
            last_pos = pos
            table = None
            if block:
                offset += len(block)
                block = block[:-1] if block.endswith(b"\n") else block
                table, lines = _split_lines(block, source, line_no + 1)
                line_no += lines
            progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                            records_done=line_no, offset_done=offset, complete=complete)
            if table is not None or at_end:
                yield table, progress
            if at_end:
                if getattr(f, "torn", None) and tail is not None and "why" not in tail:
                    tail.update(why=f.torn)  # torn exactly at a line end: nothing to quarantine
                return


def _skip(f, offset: int) -> None:
    if not offset:
        return
    if isinstance(f, GzipStream):
        remaining = offset
        while remaining:
            got = f.read(min(remaining, CHUNK_BYTES))
            if not got:
                break
            remaining -= len(got)
    else:
        f.seek(offset)


def read_json_document(ingestor: Ingestor, path: Path, source: str, stat: os.stat_result) -> Counts:
    """A whole JSON document: records envelope, query-API response or array of rows.

    The document is parsed by DuckDB, not in Python: these are bounded (an hourly blob, one
    Event Hub body, one query result of at most 64 MB) but may hold half a million rows."""
    with _open(path) as f:
        data = f.read()
        torn = getattr(f, "torn", None)
    progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    records_done=1, offset_done=len(data), complete=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ingestor.quarantine_raw(source, [(1, data.decode("utf-8", errors="backslashreplace"),
                                                 f"invalid UTF-8 at byte {exc.start}: JSON document not read")],
                                       progress=progress)
    con = ingestor.con
    con.execute("CREATE OR REPLACE TEMP TABLE json_doc AS SELECT ?::VARCHAR AS d", [text])
    valid, kind, tables = con.execute(
        "SELECT json_valid(d), CASE WHEN json_valid(d) THEN json_type(d) END, "
        "CASE WHEN json_valid(d) THEN json_array_length(d, '$.tables') END FROM json_doc"
    ).fetchall()[0]
    if not valid:
        why = f"truncated JSON document ({torn})" if torn else "truncated or invalid JSON document"
        return ingestor.quarantine_raw(source, [(1, text, why)], progress=progress)
    if kind == "ARRAY":  # a JSON export: an array of row objects
        return ingestor.ingest_select(
            """SELECT ?::VARCHAR AS source, (row_number() OVER ())::BIGINT AS position, NULL::INTEGER AS record_index,
                      r::VARCHAR AS raw FROM (SELECT unnest(json_extract(d, '$[*]')) AS r FROM json_doc)""",
            [source], progress=progress)
    if tables:
        return _ingest_query_api_response(ingestor, source, _table_hint(path), tables, progress)
    if _is_envelope(con):
        return _ingest_envelope(ingestor, source, progress)
    return ingestor.ingest_select(  # a single record, pretty-printed
        "SELECT ?::VARCHAR AS source, 1::BIGINT AS position, NULL::INTEGER AS record_index, d::JSON::VARCHAR AS raw "
        "FROM json_doc", [source], progress=progress)


def _is_envelope(con) -> bool:
    return con.execute("SELECT coalesce(json_type(d, '$.records') = 'ARRAY', false) FROM json_doc").fetchall()[0][0]


def _ingest_envelope(ingestor: Ingestor, source: str, progress: dict) -> Counts:
    return ingestor.ingest_select(
        """SELECT ?::VARCHAR AS source, 1::BIGINT AS position, (i + 1)::INTEGER AS record_index,
                  recs[i + 1]::VARCHAR AS raw
           FROM (SELECT json_extract(d, '$.records[*]') AS recs FROM json_doc),
                range(0, len(recs)) AS t(i)""",
        [source], progress=progress)


def _ingest_query_api_response(ingestor: Ingestor, source: str, hint: str | None, tables: int,
                               progress: dict) -> Counts:
    """`{"tables": [{"columns": [{"name", "type"}], "rows": [[...]]}]}`: rows become objects in SQL."""
    counts = Counts()
    offset = 0
    for i in range(tables):
        names = ingestor.con.execute(
            f"SELECT json_extract_string(d, '$.tables[{i}].columns[*].name') FROM json_doc").fetchall()[0][0] or []
        if not names or any(n is None for n in names):
            counts.add(ingestor.quarantine_raw(
                source, [(i + 1, ingestor.con.execute(f"SELECT json_extract(d, '$.tables[{i}]')::VARCHAR FROM json_doc")
                          .fetchall()[0][0] or "", "query-API table without column names")],
                progress=progress if i == tables - 1 else None))
            continue
        add_type = "Type" not in names and hint is not None
        pairs = ", ".join(f"?, r->{j}" for j in range(len(names)))
        type_pair = ", 'Type', ?" if add_type else ""
        n = ingestor.con.execute(f"SELECT json_array_length(d, '$.tables[{i}].rows') FROM json_doc").fetchall()[0][0]
        counts.add(ingestor.ingest_select(
            f"""SELECT ?::VARCHAR AS source, (row_number() OVER () + ?)::BIGINT AS position,
                       NULL::INTEGER AS record_index, json_object({pairs}{type_pair})::VARCHAR AS raw
                FROM (SELECT unnest(json_extract(d, '$.tables[{i}].rows[*]')) AS r FROM json_doc)""",
            [source, offset, *names, *([hint] if add_type else [])],
            progress=progress if i == tables - 1 else None))
        offset += n or 0
    return counts


# The CSV reader's temporary tables: the file's rows and the lines DuckDB rejected. DuckDB adds a scan's
# rejects to those its rejects tables already hold: all are dropped before and after each file.
_CSV_TABLES = ("temp.main.csv_rows", "temp.main.csv_rejects", "temp.main.csv_scans")
# The rows' number in the file, the first column of csv_rows (a file's own column of that name is renamed
# `#row_1` by DuckDB, not lost).
_CSV_ROW = "#row"


def read_csv(ingestor: Ingestor, path: Path, source: str, stat: os.stat_result, on_bytes) -> Counts:
    """Log Analytics CSV export: any column order, `[UTC]` header suffixes, booleans as 0/1.

    DuckDB reads the whole file into a temporary table in one statement (one thread, so the rows are
    numbered in file order; no row passes through Python or Arrow), which the tabular route then reads in
    batches of CSV_BATCH_ROWS. The table is bounded by DuckDB's memory limit: beyond it, it spills to the
    store's temporary directory. Progress is per file: a run stopped mid-file reads it again, and event
    ids keep that duplicate-free."""
    con = ingestor.con
    counts = Counts()
    _drop_csv_tables(con)
    try:
        rows = con.execute(
            f"CREATE TEMP TABLE csv_rows AS SELECT row_number() OVER () AS {_ident(_CSV_ROW)}, * FROM read_csv("
            "$path, all_varchar = true, header = true, store_rejects = true, rejects_table = 'csv_rejects', "
            "rejects_scan = 'csv_scans', strict_mode = false, null_padding = false, parallel = false)",
            {"path": str(path)}).fetchall()[0][0]
        columns = [c for (c,) in con.execute("SELECT name FROM pragma_table_info('temp.main.csv_rows')").fetchall()][1:]
        names = [c.split(" [", 1)[0].strip() for c in columns]
        select = [f"{_ident(c)} AS {_ident(n)}" for c, n in zip(columns, names)]
        hint = _table_hint(path)
        if "Type" not in names and hint is not None:
            select.append(f"{sql_string(hint)}::VARCHAR AS Type")
            names.append("Type")
        for first in range(1, rows + 1, CSV_BATCH_ROWS):
            batch = (f"(SELECT {_ident(_CSV_ROW)} AS rid, {', '.join(select)} FROM csv_rows "
                     f"WHERE {_ident(_CSV_ROW)} BETWEEN {first} AND {first + CSV_BATCH_ROWS - 1})")
            # position: the file line (the header is line 1; values spanning lines are not counted)
            counts.add(ingestor.ingest_tabular(batch, names, source=source, position_offset=1))
        rejects = con.execute(
            "SELECT line, ltrim(any_value(csv_line), chr(13) || chr(10)), arg_min(error_message, column_idx) "
            "FROM csv_rejects GROUP BY line ORDER BY line"
        ).fetchall()
    finally:
        _drop_csv_tables(con)
    if counts.quarantined:
        _quarantine_original_lines(ingestor, path, source)
    on_bytes(stat.st_size)
    progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    records_done=rows + len(rejects), offset_done=stat.st_size, complete=True)
    if rejects:
        counts.add(ingestor.quarantine_raw(
            source, [(int(line), text or "", f"malformed CSV line: {err}") for line, text, err in rejects],
            progress=progress))
    else:
        ingestor.mark_source(**progress)
    return counts


def _drop_csv_tables(con) -> None:
    for table in _CSV_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _quarantine_original_lines(ingestor: Ingestor, path: Path, source: str) -> None:
    """CSV rows are normalised as JSON objects; the quarantine shows the line a user would open instead.

    Only rows quarantined by this run, and only when there are some, so the file is read again rarely."""
    con = ingestor.con
    wanted = {p for (p,) in con.execute("SELECT position FROM quarantine WHERE source = ? AND ingest_run_id = ? "
                                         "AND starts_with(raw, '{')", [source, ingestor.run_id]).fetchall()}
    if not wanted:
        return
    found: list[tuple[str, int]] = []
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            if number in wanted:
                found.append((line.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace"), number))
    con.executemany("UPDATE quarantine SET raw = ? WHERE source = ? AND position = ? AND ingest_run_id = ?",
                    [(text, source, number, ingestor.run_id) for text, number in found])


class LineBatcher:
    """Gathers line chunks of many small files (hourly blobs) into one batch per ~CHUNK_BYTES:
    each batch has a fixed cost, so one per file would dominate on archives of small blobs."""

    def __init__(self, ingestor: Ingestor):
        self.ingestor = ingestor
        self.tables: list[pa.Table] = []
        self.progress: list[dict] = []
        self.bytes = 0

    def add(self, table: pa.Table | None, progress: dict) -> None:
        if table is not None:
            self.tables.append(table)
            self.bytes += table.nbytes
        self.progress.append(progress)
        if self.bytes >= CHUNK_BYTES:
            self.flush()

    def drop(self, source: str) -> None:
        """Drop what is gathered of one source (it failed): nothing of it was committed."""
        self.tables = [t for t in self.tables if not t.num_rows or t.column("source")[0].as_py() != source]
        self.progress = [p for p in self.progress if p["source"] != source]
        self.bytes = sum(t.nbytes for t in self.tables)

    def flush(self) -> Counts:
        if not self.progress:
            return Counts()
        tables = [t for t in self.tables if t.num_rows]
        batch = pa.concat_tables(tables) if tables else BATCH_SCHEMA.empty_table()
        counts = self.ingestor.ingest_lines(batch, progress=self.progress)
        self.tables, self.progress, self.bytes = [], [], 0
        return counts


def ingest_file(ingestor: Ingestor, path: Path, *, force: bool = False, on_bytes=lambda n: None,
                batcher: LineBatcher | None = None, states: dict[str, dict] | None = None) -> FileResult:
    """Ingest one file. `states` (from `Ingestor.source_states`, read once per run) saves a query per file."""
    source = str(path.resolve())
    stat = path.stat()
    state = None if force else (states.get(source) if states is not None else ingestor.source_state(source))
    if state and state["complete"] and state["size"] == stat.st_size and state["mtime_ns"] == stat.st_mtime_ns:
        on_bytes(stat.st_size)
        return FileResult(source, "unchanged", Counts(), skipped=True)
    if state and (state["complete"] or state["size"] > stat.st_size):
        state = None  # changed since: read again from the start; event ids keep it duplicate-free
    problem = why_not_a_log(path)
    if problem:
        on_bytes(stat.st_size)
        return FileResult(source, "skipped", Counts(), problem=problem)
    fmt = detect_format(path)
    if fmt == "empty":
        ingestor.mark_source(source, size=stat.st_size, mtime_ns=stat.st_mtime_ns, complete=True)
        on_bytes(stat.st_size)
        return FileResult(source, fmt, Counts())
    if fmt == "jsonl":
        own = batcher is None
        batcher = batcher or LineBatcher(ingestor)
        tail: dict = {}
        for table, progress in jsonl_chunks(path, source, state, stat, on_bytes, tail):
            batcher.add(table, progress)
        counts = batcher.flush() if own else Counts()
        result = FileResult(source, fmt, counts, resumed_from=state["offset_done"] if state else 0)
        if "text" in tail:  # a torn gzip: every complete record is read, the torn one is quarantined
            counts.add(ingestor.quarantine_raw(source, [(tail["position"], _decode(tail["text"]).lstrip(INVALID_UTF8),
                                                          f"torn last record: {tail['why']}")]))
            result.problem = f"{tail['why']}: every complete record read, the torn last one quarantined"
        elif "why" in tail:
            result.problem = f"{tail['why']}: every complete record read"
        elif tail.get("held"):
            result.waiting = True
        return result
    if batcher is not None:
        batcher.flush()
    if fmt == "json":
        counts = read_json_document(ingestor, path, source, stat)
        on_bytes(stat.st_size)
        return FileResult(source, fmt, counts)
    return FileResult(source, fmt, read_csv(ingestor, path, source, stat, on_bytes))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone since listed: reported when it is read
        return 0


def explain(exc: BaseException) -> str:
    """One sentence for an error that stopped reading one file (no traceback, no log text)."""
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
    error ("Query interrupted"); the note tells it apart from a file that failed, so the run stops."""

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


def ingest_paths(con, paths: list[str | os.PathLike[str]], *, force: bool = False,
                 progress=None) -> tuple[Counts, list[FileResult], int]:
    """Ingest files and directories as one run. Returns (counts, per-file results, run id).

    One bad file never stops the run: it is skipped with the reason in its FileResult and in the
    run's `ingest_runs.message`. `progress`, if given, is a callable (total_bytes) -> callable(n_bytes)
    used for a progress bar. Ctrl-C marks the run `interrupted` (committed batches stay) and re-raises.
    """
    files = discover(paths)
    ingestor = Ingestor(con, "files", " ".join(str(p) for p in paths))
    advance = progress(sum(_size(f) for f in files)) if progress else (lambda n: None)
    results: list[FileResult] = []
    batcher = LineBatcher(ingestor)
    states = ingestor.source_states()
    try:
        with _CtrlC() as ctrl_c:
            # plain archive blobs first, read by DuckDB (whole, or a large one in pieces); the rest, and
            # whatever DuckDB leaves (from the piece it stopped at), line by line
            chosen = archive.plan(files, states, force=force, max_bytes=ARCHIVE_FILE_BYTES)
            _, whole = archive.ingest(ingestor, chosen, read_bytes=ARCHIVE_FILE_BYTES,
                                      on_bytes=advance, states=states, interrupted=lambda: ctrl_c.hit)
            results.extend(FileResult(str(p.resolve()), "jsonl", Counts()) for p in files if p in whole)
            for path in files:
                if path in whole:
                    continue
                try:
                    results.append(ingest_file(ingestor, path, force=force, on_bytes=advance, batcher=batcher,
                                               states=states))
                except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, the run goes on
                    if ctrl_c.hit:
                        raise KeyboardInterrupt from exc
                    batcher.drop(str(path.resolve()))
                    results.append(FileResult(str(path.resolve()), "skipped", Counts(), problem=explain(exc)))
            batcher.flush()
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or ctrl_c.hit
        try:
            ingestor.finish("interrupted" if interrupted else "failed", errors.sentence(exc)[:500])
        except Exception:  # noqa: BLE001 - the connection may be mid-statement: the next run marks this one
            pass
        if interrupted and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        raise
    skipped = [r for r in results if r.fmt == "skipped"]
    message = None
    if skipped:
        message = (f"{len(skipped)} file(s) skipped: "
                   + "; ".join(f"{r.path}: {r.problem}" for r in skipped))[:4000]
    counts = ingestor.finish(message=message)
    return counts, results, ingestor.run_id
