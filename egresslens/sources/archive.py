"""Storage-archive files read by DuckDB's own JSON reader, whole files at a time.

A storage archive holds hourly JSON Lines blobs, one category per container (the legacy categories
share one). A file that is plainly one (not compressed, not read before, every line ended, its first
record of a category the fast route takes, legacy ones included) is read by DuckDB in parallel with no
line passing through Python, straight into canonical rows (`normalise.normalise_archive`). A file with
anything else in it (a record refused or of another shape, a line that is not JSON or not UTF-8) is
left to the line reader (`egresslens/sources/files.py`), which gives every record its position and
every refusal its reason. Both end in the same canonical SQL; tests/test_fast_route.py holds them to
the same rows.
"""

from __future__ import annotations

import os
from pathlib import Path

from egresslens.ingest import Counts, Ingestor
from egresslens.normalise import FAST_CATEGORIES, LEGACY, LEGACY_CATEGORIES

# What a blob's first line names, and how its files are read: by table, or as legacy text (a legacy blob
# mixes the categories, all read by the same grammars).
_ROUTES = {**FAST_CATEGORIES, LEGACY: LEGACY_CATEGORIES}
_CATEGORY_OF = {f'"category":"{c}"'.encode(): name for name, cats in _ROUTES.items() for c in cats}


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


def plan(files: list[Path], states: dict[str, dict], *, force: bool,
         max_bytes: int) -> list[tuple[Path, str, os.stat_result]]:
    """The files DuckDB can read whole, with their table: new ones (or changed since read, which are read
    again from the start anyway), each at most `max_bytes` (a larger blob is read line by line, in
    batches of bounded size). Each comes with its table and its stat."""
    chosen = []
    for path in files:
        try:
            stat = path.stat()
            state = None if force else states.get(str(path.resolve()))
            if state and not (state["complete"] and (state["size"], state["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns)):
                continue  # unchanged, or an interrupted read to resume: the line reader's
            if stat.st_size > max_bytes:
                continue
            table = table_of(path, stat.st_size)
        except OSError:
            continue  # the line reader reports it
        if table:
            chosen.append((path, table, stat))
    return chosen


def ingest(ingestor: Ingestor, chosen: list[tuple[Path, str, os.stat_result]], *, batch_bytes: int, on_bytes,
           interrupted=lambda: False) -> tuple[Counts, set[Path]]:
    """Read the chosen files, one table at a time, in batches of about `batch_bytes` (a larger file is a
    batch of its own). Returns the counts
    and the files DuckDB took (every other file is for the line reader, which also reports any failure).
    `interrupted()` tells a Ctrl-C (DuckDB reports one inside a query as an ordinary error) from a failure."""
    counts, done = Counts(), set()
    for table in _ROUTES:
        group = [(p, st) for p, t, st in chosen if t == table]
        batch: list[tuple[Path, os.stat_result]] = []
        size = 0
        for path, stat in group + [(None, None)]:
            if batch and (path is None or size + stat.st_size > batch_bytes):
                try:
                    got, taken = _batch(ingestor, table, batch)
                except Exception:  # noqa: BLE001 - the line reader reads these files again, and reports
                    if interrupted():
                        raise
                    got, taken = Counts(), set()
                counts.add(got)
                for p, st in batch:
                    if p in taken:
                        done.add(p)
                        on_bytes(st.st_size)
                batch, size = [], 0
            if path is not None:
                batch.append((path, stat))
                size += stat.st_size
    return counts, done


def _batch(ingestor: Ingestor, table: str, batch: list[tuple[Path, os.stat_result]]) -> tuple[Counts, set[Path]]:
    sources = [str(p.resolve()) for p, _ in batch]
    progress = [dict(source=s, size=st.st_size, mtime_ns=st.st_mtime_ns, records_done=0, offset_done=st.st_size,
                     complete=True) for s, (_, st) in zip(sources, batch)]
    counts, taken = ingestor.ingest_archive(sources, table, progress)
    if not taken and len(batch) > 1:
        # one line the reader cannot take stops the whole batch: try its files one by one
        for i, one in enumerate(batch):
            got, done = _batch(ingestor, table, [one])
            counts.add(got)
            if done:
                taken.add(i)
    return counts, {p for i, (p, _) in enumerate(batch) if i in taken}
