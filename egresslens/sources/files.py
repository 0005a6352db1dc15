"""Local log files of every container format, read into batches: streaming, resumable, bounded.

Formats, detected from content (not names): JSON Lines (storage archive PT1H.json since 2018,
Event Hub bodies one per line, exports), whole JSON documents (pre-2018 `{"records": [...]}`,
an Event Hub body, a Log Analytics query-API response `{"tables": [...]}`, a JSON array of rows),
and Log Analytics CSV exports. Any of them may be gzip-compressed.

Each file is a unit, keyed by its absolute path. Plain archive blobs are read by DuckDB itself
(`archive`); other JSON Lines are split into lines here (`lines`); a CSV export or a JSON document is
handed over as a file for DuckDB to read (a compressed one decompressed to a scratch file first). No
line longer than the record bound and no document larger than the document bound is ever held whole:
each is quarantined with its reason instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from egresslens.azfw import LOG_TABLES
from egresslens.sources import archive
from egresslens.sources.batch import Batch, Context, CsvFile, JsonDocument, Lines, Progress, Reject, Unit
from egresslens.sources.lines import SAMPLE_BYTES, Splitter, sample
from egresslens.sources.sniff import GzipStream, blob_hour, detect_format, json_complete, why_not_a_log
from egresslens.sources.sniff import open_log as _open


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


def table_hint(path: Path) -> str | None:
    """`AZFWNetworkRule.csv` → `AZFWNetworkRule`: exports often omit the `Type` column."""
    stem = path.name.split(".")[0]
    return stem if stem in LOG_TABLES else None


class FilesSource:
    """`egresslens ingest files PATH...`: files and directories, searched recursively."""

    kind = "files"

    def __init__(self, paths: list[str | os.PathLike[str]]):
        self.paths = list(paths)
        self.description = " ".join(str(p) for p in self.paths)

    def discover(self, ctx: Context) -> list[Unit]:
        """Every file, with where an earlier run stopped in it: unchanged files are not read again, changed
        ones are read from the start (event ids keep them duplicate-free)."""
        units = []
        for path in discover(self.paths):
            key = str(path.resolve())
            try:
                stat = path.stat()
            except OSError:  # gone since listed, say: reading it reports why
                units.append(Unit(key, ref=(path, None)))
                continue
            state = ctx.progress.get(key)
            if state and state.complete and (state.size, state.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                units.append(Unit(key, stat.st_size, skip="unchanged", ref=(path, stat)))
                continue
            if state and (state.complete or (state.size or 0) > stat.st_size):
                state = None  # changed since: read again from the start
            try:
                route = archive.route_of(path, stat.st_size) if not state or state.offset_done < stat.st_size else None
            except OSError:
                route = None
            units.append(Unit(key, stat.st_size, resume=state, route=route, ref=(path, stat)))
        return units

    def read(self, unit: Unit, ctx: Context) -> Iterator[Batch]:
        path, stat = unit.ref
        stat = stat or path.stat()
        if unit.route:
            yield from archive.read(unit, path, stat, ctx, lambda at: read_jsonl(path, unit.key, at, stat, ctx))
            return
        yield from read_file(path, unit.key, stat, unit.resume, ctx)


def read_file(path: Path, key: str, stat, resume: Progress | None, ctx: Context) -> Iterator[Batch]:
    """One log file of any format, from `resume` (JSON Lines) or whole (a document, a CSV export); `stat` is
    the size and modification time its progress records (a downloaded blob's own)."""
    problem = why_not_a_log(path)
    if problem:
        yield Batch(key, bytes=stat.st_size, status="skipped", problem=problem)
        return
    fmt = detect_format(path, ctx.limits.line_bytes)
    done = Progress(key, stat.st_size, stat.st_mtime_ns, records_done=1, offset_done=stat.st_size, complete=True)
    if fmt == "empty":
        yield Batch(key, until=[Progress(key, stat.st_size, stat.st_mtime_ns, complete=True)], bytes=stat.st_size,
                    status=fmt)
    elif fmt == "jsonl":
        yield from read_jsonl(path, key, resume, stat, ctx)
    elif fmt == "json":
        yield from whole_file(path, key, done, ctx, lambda p, torn: JsonDocument(str(p), table_hint(path), torn),
                              "json", ctx.limits.document_bytes)
    else:
        yield from whole_file(path, key, done, ctx, lambda p, torn: CsvFile(str(p), table_hint(path)), "csv", None)


def read_jsonl(path: Path, key: str, state: Progress | None, stat: os.stat_result, ctx: Context) -> Iterator[Batch]:
    """Complete lines in batches of about `batch_bytes`, each with the progress to commit with it.

    Resumes after `state.offset_done` (uncompressed bytes) when an earlier run stopped mid-file. An
    unterminated last line that is not whole JSON is not read as a record: in a torn gzip it is
    quarantined; in a plain file it may be a line still being written, so it is held back (the file stays
    incomplete) and read once the file has grown, or quarantined once the file stopped changing
    (unchanged since the last run, or an hour old)."""
    settled = bool(state and not state.complete and state.size == stat.st_size
                   and state.mtime_ns == stat.st_mtime_ns) or time.time() - stat.st_mtime_ns / 1e9 > 3600
    split = Splitter(key, offset=state.offset_done if state else 0, lines=state.records_done if state else 0,
                     bound=ctx.limits.line_bytes)

    def batch(table, rejects, complete: bool, used: int, **note) -> Batch:
        return Batch(key, Lines(table) if table is not None and table.num_rows else None, rejects=rejects,
                     until=[Progress(key, stat.st_size, stat.st_mtime_ns, split.lines, split.offset, complete)],
                     bytes=used, status="jsonl", **note)

    with _open(path) as f:
        _skip(f, split.offset, ctx.limits.batch_bytes)
        raw_file = getattr(f, "fileobj", None) or f
        last_pos = raw_file.tell()
        while True:
            data = f.read(ctx.limits.batch_bytes)
            pos = raw_file.tell()
            used, last_pos = pos - last_pos, pos
            if data:
                table, rejects = split.feed(data)
                if table is not None or rejects:
                    yield batch(table, rejects, False, used)
                elif used:
                    yield batch(None, [], False, used)
                continue
            torn = getattr(f, "torn", None)
            if torn:  # every complete record read; the torn last one, if any, quarantined
                rejects = split.refuse_tail(torn)
                yield batch(None, rejects, True, used, problem=f"{torn}: every complete record read"
                            + (", the torn last one quarantined" if rejects else ""))
            elif split.skipping or not split.tail.strip() or settled or json_complete(split.tail):
                table, rejects = split.take_tail()  # the last record is whole, or final: read it
                yield batch(table, rejects, True, used)
            else:  # the last line may still be being written: read on a later run
                yield batch(None, [], False, used, waiting=True)
            return


def _skip(f, offset: int, block: int) -> None:
    if not offset:
        return
    if isinstance(f, GzipStream):
        remaining = offset
        while remaining:
            got = f.read(min(remaining, block))
            if not got:
                break
            remaining -= len(got)
    else:
        f.seek(offset)


# What a file read whole is called in a message, by its format.
_WHAT = {"json": "JSON document", "csv": "CSV export"}


def whole_file(path: Path, key: str, done: Progress, ctx: Context, records, fmt: str,
               bound: int | None) -> Iterator[Batch]:
    """A file DuckDB reads whole (a JSON document, a CSV export: `fmt`): handed over as it is, or, compressed,
    decompressed to a scratch file first. One larger than `bound` (uncompressed) is quarantined unread,
    with its first bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if not compressed:
        if bound is not None and size > bound:
            yield _too_large(path, key, done, size, fmt, bound)
        else:
            # the file stays as it is after the reader moves on: the loop may read it with others
            yield Batch(key, records(path, None), until=[done], bytes=size, status=fmt)
        return
    scratch = Path(f"{ctx.scratch}.document")
    try:
        written, torn = 0, None
        with _open(path) as src, open(scratch, "wb") as out:
            while block := src.read(8 << 20):
                written += len(block)
                if bound is not None and written > bound:
                    break
                out.write(block)
            torn = src.torn
        if bound is not None and written > bound:
            yield _too_large(path, key, done, written, fmt, bound, compressed=True)
        else:
            yield Batch(key, records(scratch, torn), until=[done], gather=False, bytes=size, status=fmt)
    finally:
        scratch.unlink(missing_ok=True)


def _too_large(path: Path, key: str, done: Progress, size: int, fmt: str, bound: int, *,
               compressed: bool = False) -> Batch:
    with _open(path) as f:
        head = f.read(SAMPLE_BYTES)
    larger = (f"decompresses to more than the {bound:,} bytes a document may be" if compressed else
              f"of {size:,} bytes is larger than the {bound:,} bytes a document may be")
    why = (f"{_WHAT[fmt]} {larger}: not read (its first {SAMPLE_BYTES >> 10} KiB kept here); split it into JSON "
           "Lines, one record a line")
    return Batch(key, None, until=[done], rejects=[Reject(key, 1, sample(head), why)], gather=False,
                 bytes=path.stat().st_size, status=fmt, problem=f"{_WHAT[fmt]} too large: quarantined unread")
