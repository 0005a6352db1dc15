"""Storage-archive files read by DuckDB's own JSON reader, whole files (or, for a large one, whole pieces
of it) at a time.

A storage archive holds hourly JSON Lines blobs, one category per container (the legacy categories
share one). A file that is plainly one (not compressed, every line ended, its first record of a
category the fast route takes, legacy ones included) is read by DuckDB in parallel with no line passing
through Python, straight into canonical rows (`normalise.normalise_archive`). A file with anything else
in it (a record refused or of another shape, a line that is not JSON or not UTF-8) is left to the line
reader (`egresslens/sources/files.py`), which gives every record its position and every refusal its
reason. Both end in the same canonical SQL; tests/test_fast_route.py holds them to the same rows.

A blob larger than a whole read may be (a busy firewall's hourly application log runs to gigabytes) is
read in pieces of whole lines: each is copied to a scratch file beside the store (the next piece while
DuckDB reads one), read whole, and committed with the blob's progress (its offset and line count), as
the line reader commits its batches, so a run that stops mid-blob resumes after the last piece. A piece
with anything odd in it ends the pieces, and the line reader reads on from its start, every line keeping
its position.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

from egresslens.ingest import Counts, Ingestor
from egresslens.normalise import FAST_CATEGORIES, LEGACY, LEGACY_CATEGORIES

# What a blob's first line names, and how its files are read: by table, or as legacy text (a legacy blob
# mixes the categories, all read by the same grammars).
_ROUTES = {**FAST_CATEGORIES, LEGACY: LEGACY_CATEGORIES}
_CATEGORY_OF = {f'"category":"{c}"'.encode(): name for name, cats in _ROUTES.items() for c in cats}
# Pieces are copied in blocks of this size (no more of the blob is held in memory at once).
_COPY_BLOCK = 8 << 20


class Blob(NamedTuple):
    """A file DuckDB reads: whole, or (`split`) in pieces from `offset`, after `lines` lines already read."""
    path: Path
    table: str
    stat: os.stat_result
    split: bool = False
    offset: int = 0
    lines: int = 0


def table_of(path: Path, size: int) -> str | None:
    """The table a file's records would fill (LEGACY for legacy text), when the file looks like a plain
    archive blob: its first line a compact record of a fast-route category, its last byte a line end,
    not gzip. A guess only: `normalise_archive` checks every record."""
    if not 0 < size:
        return None
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(size - 1)
        last = f.read(1)
    first = head.split(b"\n", 1)[0]
    if last != b"\n" or not first.startswith(b"{") or head[:2] == b"\x1f\x8b":
        return None
    found = {name for text, name in _CATEGORY_OF.items() if text in first}
    return found.pop() if len(found) == 1 else None


def plan(files: list[Path], states: dict[str, dict], *, force: bool, max_bytes: int) -> list[Blob]:
    """The files DuckDB can read: new ones, or changed since read (read again from the start: event ids
    keep them duplicate-free), whole when at most `max_bytes`, else in pieces; and files an earlier run
    stopped in (resumed in pieces from where it stopped, unless the file has shrunk since)."""
    chosen = []
    for path in files:
        try:
            stat = path.stat()
            state = None if force else states.get(str(path.resolve()))
            offset = lines = 0
            if state and not state["complete"] and state["size"] <= stat.st_size:
                offset, lines = state["offset_done"], state["records_done"]
            elif state and state["complete"] and (state["size"], state["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                continue  # read before, unchanged
            table = table_of(path, stat.st_size) if offset < stat.st_size else None
        except OSError:
            continue  # the line reader reports it
        if table:
            chosen.append(Blob(path, table, stat, offset > 0 or stat.st_size > max_bytes, offset, lines))
    return chosen


def ingest(ingestor: Ingestor, chosen: list[Blob], *, read_bytes: int, on_bytes,
           states: dict[str, dict], interrupted=lambda: False) -> tuple[Counts, set[Path]]:
    """Read the chosen files, one table at a time, at most about `read_bytes` per statement: whole files
    gathered into batches of up to that size, a file to split in pieces of about that size. Returns the
    counts and the files DuckDB read to the end (every other file is for the line reader, which also
    reports any failure, and reads on from where a split read stopped: `states` is updated with what was
    committed).
    `interrupted()` tells a Ctrl-C (DuckDB reports one inside a query as an ordinary error) from a failure."""
    counts, done = Counts(), set()
    for table in _ROUTES:
        # the whole files first, gathered into full batches (whose rows DuckDB writes straight to the store
        # file, not through the WAL); then each large one in pieces, whose time range then holds only the
        # rows the whole files of its hour stored
        group = sorted((b for b in chosen if b.table == table), key=lambda b: b.split)
        batch: list[Blob] = []
        size = 0
        for blob in group + [None]:
            if batch and (blob is None or blob.split or size + blob.stat.st_size > read_bytes):
                try:
                    got, taken = _batch(ingestor, table, batch)
                except Exception:  # noqa: BLE001 - the line reader reads these files again, and reports
                    if interrupted():
                        raise
                    got, taken = Counts(), set()
                counts.add(got)
                for b in batch:
                    if b.path in taken:
                        done.add(b.path)
                        on_bytes(b.stat.st_size)
                batch, size = [], 0
            if blob is None:
                continue
            if blob.split:
                got, finished = _pieces(ingestor, blob, read_bytes, on_bytes, states, interrupted)
                counts.add(got)
                if finished:
                    done.add(blob.path)
            else:
                batch.append(blob)
                size += blob.stat.st_size
    return counts, done


def _batch(ingestor: Ingestor, table: str, batch: list[Blob]) -> tuple[Counts, set[Path]]:
    sources = [str(b.path.resolve()) for b in batch]
    progress = [dict(source=s, size=b.stat.st_size, mtime_ns=b.stat.st_mtime_ns, offset_done=b.stat.st_size,
                     complete=True) for s, b in zip(sources, batch)]
    counts, taken = ingestor.ingest_archive(sources, table, progress)
    if not taken and len(batch) > 1:
        # one line the reader cannot take stops the whole batch: try its files one by one
        for i, one in enumerate(batch):
            got, done = _batch(ingestor, table, [one])
            counts.add(got)
            if done:
                taken.add(i)
    return counts, {b.path for i, b in enumerate(batch) if i in taken}


def _pieces(ingestor: Ingestor, blob: Blob, piece_bytes: int, on_bytes, states: dict[str, dict],
            interrupted) -> tuple[Counts, bool]:
    """A large blob in pieces of whole lines (about `piece_bytes` each), each read whole and committed
    with the blob's progress. Stops at a piece DuckDB does not take whole (a line longer than a piece, a
    refused or odd record): the line reader reads on from there. Returns (counts, read to the end)."""
    source = str(blob.path.resolve())
    size, counts = blob.stat.st_size, Counts()
    offset, lines = blob.offset, blob.lines
    with closing(_copied_pieces(blob.path, offset, size, piece_bytes, _scratch_files(ingestor))) as pieces:
        for piece, length, newlines in pieces:
            progress = dict(source=source, size=size, mtime_ns=blob.stat.st_mtime_ns, records_done=lines + newlines,
                            offset_done=offset + length, complete=offset + length == size)
            try:
                got, taken = ingestor.ingest_archive([str(piece)], blob.table, [progress])
            except Exception:  # noqa: BLE001 - the line reader reads this piece again, and reports
                if interrupted():
                    raise
                got, taken = Counts(), set()
            if not taken:
                break
            counts.add(got)
            states[source] = progress
            on_bytes(length)
            offset, lines = offset + length, lines + newlines
    return counts, offset == size


def _copied_pieces(path: Path, offset: int, size: int, piece_bytes: int, scratch: tuple[Path, Path]):
    """The pieces of `path` from `offset`, each copied to one of the two scratch files while DuckDB reads
    the one before (the copy overlaps the read): (scratch file, bytes, lines) per piece, until the end,
    a range in which no line ends, or a copy that fails. The scratch files are removed at the end."""
    def copy(start: int, dest: Path) -> tuple[int, int]:
        with open(path, "rb") as f:
            return _copy_piece(f, start, min(piece_bytes, size - start), dest)

    pool, k = ThreadPoolExecutor(max_workers=1), 0
    try:
        pending = pool.submit(copy, offset, scratch[0]) if offset < size else None
        while pending is not None:
            try:
                length, newlines = pending.result()
            except OSError:  # no room for the copy, say: the line reader reads on from here
                return
            if not length:
                return
            following = offset + length
            pending = pool.submit(copy, following, scratch[(k + 1) % 2]) if following < size else None
            yield scratch[k % 2], length, newlines
            offset, k = following, k + 1
    finally:  # a copy still under way ends before its file is removed
        pool.shutdown(wait=True, cancel_futures=True)
        for p in scratch:
            p.unlink(missing_ok=True)


def _copy_piece(f, offset: int, length: int, dest: Path) -> tuple[int, int]:
    """Copy the whole lines of `f` in [offset, offset + length) to `dest`, a block at a time: (bytes
    copied, lines). (0, 0) when no line ends in that range."""
    f.seek(offset)
    copied = last_end = newlines = 0
    with open(dest, "wb") as out:
        while copied < length:
            block = f.read(min(_COPY_BLOCK, length - copied))
            if not block:
                break
            out.write(block)
            if (cut := block.rfind(b"\n")) >= 0:
                last_end = copied + cut + 1
                newlines += block.count(b"\n")
            copied += len(block)
        out.truncate(last_end)
    return last_end, newlines


def _scratch_files(ingestor: Ingestor) -> tuple[Path, Path]:
    """Where pieces are copied: two files beside the store (the store's lock keeps them to one run at a
    time), or in the temporary directory for a store in memory."""
    (db,) = ingestor.con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()[0]
    if db:
        path = Path(db).resolve()
        return path.parent / f".{path.name}.piece-0.json", path.parent / f".{path.name}.piece-1.json"
    base = Path(tempfile.gettempdir()) / f"egresslens-{os.getpid()}"
    return Path(f"{base}.piece-0.json"), Path(f"{base}.piece-1.json")
