"""What a file holds, judged from its first bytes: a log container format, or no log at all.

Also the gzip stream every reader decompresses through, which survives a torn end, and the hour a
storage-archive blob is filed under.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from datetime import datetime, timezone
from pathlib import Path

from egresslens.azfw import FLAT_FIELDS, STRUCTURED_FIELDS

SNIFF_BYTES = 64 << 10
# A CSV export's header names at least one of these (compared case-insensitively, `[UTC]` suffixes dropped).
LOG_COLUMNS = {c.lower() for c in (*STRUCTURED_FIELDS, *FLAT_FIELDS, "TenantId", "Category", "OperationName")}


class GzipStream(io.RawIOBase):
    """Decompress a gzip file as a stream that survives a torn end.

    `gzip.GzipFile` raises at a truncated or corrupt end and loses what it had decoded in that read;
    here every decodable byte is returned, then the stream ends and `torn` says why. Multi-member
    files (concatenated gzip) are read whole."""

    def __init__(self, raw):
        self.fileobj = raw  # the compressed file: its position measures progress
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._buf = b""
        self._pending = b""  # compressed bytes read but not yet decompressed
        self._done = False
        self.torn: str | None = None

    def readable(self) -> bool:
        return True

    def _fill(self, want: int) -> None:
        """Decompress until `want` bytes are buffered (or the end): never much more, whatever the ratio (a
        few KB of gzip can expand to gigabytes)."""
        while len(self._buf) < want and not self._done:
            chunk, self._pending = self._pending or self.fileobj.read(1 << 20), b""
            try:
                if not chunk:
                    self._buf += self._z.flush()
                    self._done = True
                    if not self._z.eof:
                        self.torn = "gzip stream ends before its end marker (truncated file)"
                    return
                self._buf += self._z.decompress(chunk, max(want - len(self._buf), 1 << 16))
                self._pending = self._z.unconsumed_tail
                if self._z.eof and self._z.unused_data:  # next member of a concatenated gzip
                    self._pending = self._z.unused_data
                    self._z = zlib.decompressobj(zlib.MAX_WBITS | 16)
            except zlib.error as exc:
                self._done = True
                self.torn = f"gzip data is corrupt from here on ({exc})"

    def read(self, size: int = -1) -> bytes:
        self._fill(size if size >= 0 else 1 << 62)
        n = len(self._buf) if size < 0 else size
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 or self._done or (0 <= limit <= len(self._buf)):
                n = i + 1 if i >= 0 else len(self._buf)
                return self.read(min(n, limit) if limit >= 0 else n)
            self._fill(len(self._buf) + (1 << 20))

    def close(self) -> None:
        self.fileobj.close()
        super().close()


def open_log(path: Path):
    """The file's bytes, decompressed when it is gzip (by content, not name)."""
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return GzipStream(raw)
    raw.seek(0)
    return raw


def why_not_a_log(path: Path) -> str | None:
    """One sentence saying why a file is no log at all (binary, a database, text without a log
    header), or None. Read from the first 64 KB only, so a huge junk file costs nothing."""
    with open_log(path) as f:
        head = f.read(SNIFF_BYTES)
        torn = getattr(f, "torn", None)
    if not head:
        return f"not a log: {torn}" if torn else None
    if head.startswith(b"\x7fELF"):
        return "binary file (an ELF executable), not a log"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16 text, not a log export (export the logs as UTF-8 CSV or JSON)"
    if head[8:12] == b"DUCK":
        return "a DuckDB database file, not a log"
    if b"\x00" in head:
        return "binary file (contains NUL bytes), not a log"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text or text[:1] in b"{[":
        return None
    if b"\n" not in text and len(head) == SNIFF_BYTES:
        return "not a log: its first line is longer than 64 KB and is not JSON"
    header = text.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    names = {c.strip().strip('"').split(" [", 1)[0].strip().lower() for c in header.split(",")}
    if not names & LOG_COLUMNS:
        return "not a log: neither JSON nor a CSV export whose header names log columns"
    return None


# A first line up to this long is parsed to tell a record from a document; a longer one by its start.
_PARSED_LINE = 1 << 20


def detect_format(path: Path, line_bytes: int = 16 << 20) -> str:
    """`jsonl`, `json` (one document), `csv`, or `empty`, from the first non-blank line (read up to
    `line_bytes`, the longest record: a longer first line is a record the line reader refuses)."""
    with open_log(path) as f:
        first = b""
        while not first.strip():
            line = f.readline(line_bytes + 1)  # a whole Event Hub body can be one long line
            if not line:
                return "empty"
            if len(line) > line_bytes:
                return "jsonl"
            first = line
        complete = first.endswith(b"\n") or not f.read(1)
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not text or text[0] not in "{[":
        return "csv"
    if len(text) > _PARSED_LINE:  # told by its start: parsing it here would hold millions of objects
        return "json" if text[0] == "[" or re.match(r'\{\s*"tables"\s*:', text) else "jsonl"
    try:
        doc = json.loads(text) if complete else None
    except RecursionError:
        return "jsonl"  # a record nested deeper than Python parses: the store's parser judges it
    except ValueError:
        doc = None
    if doc is None:
        return "json"  # a document spread over lines (pretty-printed) or too long to be a record
    if isinstance(doc, list) or (isinstance(doc, dict) and "tables" in doc):
        return "json"
    return "jsonl"


def json_complete(piece: bytes) -> bool:
    """Whether an unterminated last line is a whole JSON value (a final record without a newline)."""
    try:
        json.loads(piece)
        return True
    except (ValueError, RecursionError):
        return False


# The hour a storage-archive blob holds, from its path: .../y=2026/m=03/d=01/h=02/m=00/PT1H.json
_HOUR_RE = re.compile(r"/y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/")


def blob_hour(name: str) -> datetime | None:
    """The hour a blob is filed under (`.../y=YYYY/m=MM/d=DD/h=HH/...`), UTC; None if not in the name."""
    m = _HOUR_RE.search(name)
    if not m:
        return None
    y, mo, d, h = (int(g) for g in m.groups())
    try:
        return datetime(y, mo, d, h, tzinfo=timezone.utc)
    except ValueError:
        return None
