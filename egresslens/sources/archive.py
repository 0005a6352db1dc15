"""Storage-archive blobs DuckDB reads itself: whole files, or (for a large one) whole pieces of it.

A storage archive holds hourly JSON Lines blobs, one category per container (the legacy categories
share one). A file that is plainly one (not compressed, every line ended, its first record of a
category a fast route takes, legacy ones included) gets a `route`, and its records reach the loop as a
`JsonFiles` batch: DuckDB reads the file on every thread with no line passing through Python, straight into
canonical rows (`normalise.normalise_archive`). A file with anything else in it (a record refused or of
another shape, a line that is not JSON or not UTF-8) is read again line by line by the loop's request,
where every record gets its position and every refusal its reason. Both end in the same canonical SQL;
tests/test_fast_route.py holds them to the same rows.

A blob larger than a whole read (a busy firewall's hourly application log runs to gigabytes) is read in
pieces of whole lines: each is copied to a scratch file beside the store (the next piece while DuckDB
reads one) and handed over with the blob's progress (its offset and line count), as the line reader hands
its batches, so a run that stops mid-blob resumes after the last piece. When a piece cannot be copied, or
no line ends within a piece's size, the rest of the blob is read line by line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from egresslens.azfw import ROUTES
from egresslens.sources.batch import Batch, Context, JsonFiles, Progress, Unit

_CATEGORY_OF = {f'"category":"{c}"'.encode(): name for name, cats in ROUTES.items() for c in cats}
# Pieces are copied in blocks of this size (no more of the blob is held in memory at once).
_COPY_BLOCK = 8 << 20


def route_of(path: Path, size: int) -> str | None:
    """The route of a file's records (a table, or LEGACY for legacy text), when the file looks like a plain
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


def read(unit: Unit, path: Path, stat: os.stat_result, ctx: Context,
         lines: Callable[[Progress], Iterator[Batch]]) -> Iterator[Batch]:
    """A routed file: whole (one batch the loop may gather with other files of its route) when it fits a
    whole read and is read from its start, else in pieces from where the last run stopped; `lines` reads on
    from a progress when the pieces stop short of the end."""
    size, key = stat.st_size, unit.key
    offset = unit.resume.offset_done if unit.resume else 0
    done = unit.resume.records_done if unit.resume else 0
    if not offset and size <= ctx.limits.whole_bytes:
        yield Batch(key, JsonFiles((key,), unit.route, size), bytes=size, status="jsonl",
                    until=[Progress(key, size, stat.st_mtime_ns, offset_done=size, complete=True)])
        return
    with closing(_copied_pieces(path, offset, size, ctx.limits.whole_bytes, scratch_files(ctx))) as pieces:
        for piece, length, newlines in pieces:
            offset, done = offset + length, done + newlines
            yield Batch(key, JsonFiles((str(piece),), unit.route, length), gather=False, bytes=length, status="jsonl",
                        until=[Progress(key, size, stat.st_mtime_ns, done, offset, complete=offset == size)])
    if offset < size:
        yield from lines(Progress(key, size, stat.st_mtime_ns, done, offset))


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


def scratch_files(ctx: Context) -> tuple[Path, Path]:
    """Where pieces are copied: two files beside the store (its lock keeps them to one run at a time)."""
    return Path(f"{ctx.scratch}.piece-0.json"), Path(f"{ctx.scratch}.piece-1.json")
