"""What a reader hands the ingest loop: units to read, and batches of raw records with their progress.

A source is a reader with two methods (see docs/ingest.md, "Adding a source"):

* ``discover(ctx) -> list[Unit]``: what there is to read, each a `Unit` that resumes on its own (a file,
  a blob, a query window), told where an earlier run stopped by ``ctx.progress``;
* ``read(unit, ctx) -> Iterator[Batch]``: the unit's records, batch by batch, each with the progress to
  commit with it (`until`), and the records refused while reading (`rejects`: a line too long, a torn
  gzip tail). A source that reads its units concurrently (Log Analytics windows, prefetched blobs)
  defines ``read_all(units, ctx) -> Iterator[Batch]`` instead.

A reader never opens the store, never quarantines and never saves progress: `egresslens.ingest` does,
one transaction per batch, for every source. A test can call a reader alone and look at its batches.
Nothing here imports the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Arrow is imported where a batch is built: a run DuckDB reads alone never loads it
    import pyarrow as pa


@cache
def line_schema() -> pa.Schema:
    """The raw records of a `Lines` batch: one JSON text per record, where it came from."""
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("position", pa.int64()), ("record_index", pa.int32()),
                      ("raw", pa.string())])


@dataclass(frozen=True)
class Progress:
    """How far a unit has been read, committed with the batch that got it there.

    `offset_done` and `records_done` are where a resumed read starts (bytes and lines of a file or blob;
    for a query window, the watermark in microseconds); `complete` says the unit was read to its end.
    `fingerprint` (remote objects: etag, format, the MD5 of its first bytes) tells an append from a rewrite."""
    source: str
    size: int | None = None
    mtime_ns: int | None = None
    records_done: int = 0
    offset_done: int = 0
    complete: bool = False
    fingerprint: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Reject:
    """A record refused while reading, before any parse: quarantined with its reason by the loop."""
    source: str
    position: int
    raw: str
    reason: str


@dataclass
class Counts:
    """What a batch, or a run, did with its records: read = stored + duplicates + quarantined."""
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


# -- the forms records come in ------------------------------------------------------------------------

@dataclass(frozen=True)
class Lines:
    """Records as JSON text (`line_schema()`), each in any shape the normaliser knows: an archive or Event Hub
    record, an envelope of records, a Log Analytics row as an object."""
    table: pa.Table


@dataclass(frozen=True)
class JsonFiles:
    """Whole JSON Lines files (archive blobs, or pieces of one copied to scratch files) DuckDB reads itself,
    every record of `route` (a table's categories, or legacy text). A file the loop does not take whole (a
    record refused, another shape) is read again as lines, from where its unit's progress stood."""
    paths: tuple[str, ...]
    route: str
    bytes: int


@dataclass(frozen=True)
class Rows:
    """Tabular rows with named columns (a query result); `log_table` names the table when rows lack `Type`.
    A row's position is its index plus `position_offset`."""
    table: pa.Table
    log_table: str | None = None
    position_offset: int = 0


@dataclass(frozen=True)
class CsvFile:
    """A Log Analytics CSV export, read by DuckDB's CSV reader; `log_table` as for `Rows`."""
    path: str
    log_table: str | None = None


@dataclass(frozen=True)
class JsonDocument:
    """One whole JSON document (a records envelope, a query-API response, an array of rows, one record),
    parsed by DuckDB; its size is within the document bound. `torn` says why its end is missing, if it is."""
    path: str
    log_table: str | None = None
    torn: str | None = None


@dataclass(frozen=True)
class Rollups:
    """Hourly rollups computed where the logs are (`kind` flows or dns), replacing the hours [start, end) of
    `firewall` (every firewall when None)."""
    kind: str
    start: datetime
    end: datetime
    firewall: str | None
    parts: tuple[pa.Table, ...]


@dataclass(frozen=True)
class MetricPoints:
    """Platform metric points, each replacing the point of the same firewall, metric, dimension and time."""
    table: pa.Table


Records = Lines | JsonFiles | Rows | CsvFile | JsonDocument | Rollups | MetricPoints


@dataclass
class Batch:
    """One batch: its records (or none: progress alone), where they came from (`source`, the unit's key), the
    progress of its units to commit with them, and the records refused while reading.

    `gather`: the loop may hold the batch and commit it with later ones (its data stays valid after the
    reader moves on); a batch over a scratch file is committed before the reader is asked for the next.
    `status`, `problem` and `waiting` say what the reader found in the unit (its format, why it was skipped
    or what was wrong with it, a last line held back until the file grows); `bytes` is how much of the
    unit this batch read, for the progress bar."""
    source: str
    records: Records | None = None
    until: list[Progress] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    gather: bool = True
    bytes: int = 0
    status: str | None = None
    problem: str | None = None
    waiting: bool = False


@dataclass(frozen=True)
class Unit:
    """What resumes on its own, with a stable `key` (the `source` of its progress and quarantine rows).

    `resume` is where an earlier run stopped (None: from the start); `route` marks a plain archive blob
    DuckDB can read whole (the table its records fill), None to read it line by line; `skip` a unit not to
    read (`unchanged` since the last run); `ref` is the reader's own handle (a path, a blob, a window)."""
    key: str
    size: int = 0
    resume: Progress | None = None
    route: str | None = None
    skip: str | None = None
    ref: Any = None


def _env_bytes(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Limits:
    """Sizes the loop and the readers keep to, so that any input fits the memory budget.

    `batch_bytes`: raw text per transaction of the line reader; `whole_bytes`: archive blobs DuckDB reads in
    one statement (larger ones in pieces of this size); `part_rows`: records normalised in one transaction
    when a batch holds more (a CSV export, a document or envelopes of many records);
    `line_bytes`: the longest line (record) read, a longer one is quarantined unread; `document_bytes`: the
    largest whole JSON document parsed, a larger one is quarantined unread."""
    batch_bytes: int = 128 << 20
    whole_bytes: int = 512 << 20
    part_rows: int = 500_000
    line_bytes: int = 16 << 20
    document_bytes: int = 64 << 20

    @classmethod
    def from_budget(cls, duckdb_bytes: int) -> "Limits":
        """The sizes for DuckDB's share of the memory budget (egresslens.budget): a whole read is half of
        it (512 MB at most: larger reads are no faster), a line-reader batch a quarter of a whole read,
        a document a sixteenth of the share, and a transaction of a part of a batch about one record
        per 2 KiB of it. The default budget (2 GiB, DuckDB's half 1 GiB) gives the defaults above."""
        whole = max(32 << 20, min(cls.whole_bytes, duckdb_bytes // 2))
        return cls(batch_bytes=whole // 4, whole_bytes=whole, part_rows=max(50_000, min(cls.part_rows, duckdb_bytes >> 11)),
                   line_bytes=cls.line_bytes, document_bytes=max(4 << 20, min(cls.document_bytes, duckdb_bytes // 16)))

    @classmethod
    def from_env(cls) -> "Limits":
        """`from_budget` for this process's budget; EGRESSLENS_CHUNK_BYTES, EGRESSLENS_ARCHIVE_FILE_BYTES,
        EGRESSLENS_MAX_RECORD_BYTES and EGRESSLENS_MAX_DOCUMENT_BYTES set one size each."""
        from egresslens import budget

        sized = cls.from_budget(budget.current().duckdb)
        batch = _env_bytes("EGRESSLENS_CHUNK_BYTES", sized.batch_bytes)
        whole = _env_bytes("EGRESSLENS_ARCHIVE_FILE_BYTES", 4 * batch if "EGRESSLENS_CHUNK_BYTES" in os.environ
                           else sized.whole_bytes)
        return cls(batch_bytes=batch, whole_bytes=whole, part_rows=sized.part_rows,
                   line_bytes=_env_bytes("EGRESSLENS_MAX_RECORD_BYTES", sized.line_bytes),
                   document_bytes=_env_bytes("EGRESSLENS_MAX_DOCUMENT_BYTES", sized.document_bytes))


@dataclass
class Context:
    """What the loop tells a reader: the progress committed so far (empty with --force), where scratch files
    go (beside the store), and the sizes to keep to."""
    progress: Mapping[str, Progress]
    scratch: Path
    limits: Limits = field(default_factory=Limits.from_env)
    force: bool = False


# Readers mark a line that is not UTF-8 with this first character (its bad bytes shown as \xNN), so that it is
# quarantined with its reason, never repaired.
INVALID_UTF8 = "\x00"
