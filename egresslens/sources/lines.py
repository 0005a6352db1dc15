"""JSON Lines text into record batches: bytes in, whole lines out, with no Python work per line.

One splitter serves every reader of line-oriented logs (local files, blobs fetched in ranges). It is fed
the bytes of a unit in order and hands back the complete lines as an Arrow table (`line_schema()`), keeping
count of the bytes and lines consumed (the progress a resumed read starts from). A line longer than the
record bound is never held whole: its first bytes are kept for the quarantine, the rest skipped up to its
end, and it comes back as a `Reject`. Lines that are not UTF-8 are marked (`INVALID_UTF8`), never repaired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from egresslens.sources.batch import INVALID_UTF8, Reject, line_schema

if TYPE_CHECKING:  # Arrow and NumPy are imported where lines are split: not by a run DuckDB reads alone
    import pyarrow as pa

# What a refused line keeps of itself in the quarantine.
SAMPLE_BYTES = 64 << 10


def too_long(length: int, bound: int, *, ended: bool = True) -> str:
    """The reason a line is refused unread."""
    size = f"{length:,} bytes" if ended else f"more than {length:,} bytes, unterminated"
    return (f"line of {size} is longer than the {bound:,}-byte bound for one record: not read "
            f"(its first {SAMPLE_BYTES >> 10} KiB kept here)")


def decode(block: bytes) -> str:
    """UTF-8 text of a chunk of lines. Lines that are not valid UTF-8 are never silently repaired: they
    get the INVALID_UTF8 mark and their bad bytes as `\\xNN`, so they are quarantined."""
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


def sample(data: bytes) -> str:
    """The first SAMPLE_BYTES of a refused line, as text (bad bytes as `\\xNN`)."""
    return data[:SAMPLE_BYTES].decode("utf-8", errors="backslashreplace")


def _utf8_text(block: bytes) -> pa.Array:
    """The chunk as one Arrow string, validated as UTF-8 by Arrow without a Python str (the common case);
    a chunk with a line that is not UTF-8 goes through `decode`, which marks that line."""
    import numpy as np
    import pyarrow as pa

    buf = pa.py_buffer(block)
    raw = pa.Array.from_buffers(pa.binary(), 1, [None, pa.py_buffer(np.array([0, len(block)], dtype=np.int32)), buf])
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([decode(block)])


def split_lines(block: bytes, source: str, first_line: int, bound: int) -> tuple[pa.Table, int, list[Reject]]:
    """One chunk of complete lines (no final line end) → (its records, the number of lines, the lines longer
    than `bound`, refused). Blank lines are not records but are counted."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lines = pc.list_flatten(pc.split_pattern(_utf8_text(block), "\n"))
    if b"\r" in block:
        lines = pc.utf8_rtrim(lines, characters="\r")
    n = len(lines)
    table = pa.table({
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), [source]).cast(pa.string()),
        "position": pa.array(np.arange(first_line, first_line + n, dtype=np.int64)),
        "record_index": pa.nulls(n, pa.int32()),
        "raw": lines,
    }, schema=line_schema())
    keep = None
    rejects: list[Reject] = []
    if len(block) > bound:  # only a chunk longer than the bound can hold a line that is
        long = pc.indices_nonzero(pc.greater(pc.binary_length(lines), bound)).to_numpy()
        if len(long):
            keep = np.ones(n, dtype=bool)
            keep[long] = False
            taken = lines.take(pa.array(long))
            heads = pc.binary_slice(pc.utf8_ltrim(taken, characters=INVALID_UTF8).cast(pa.binary()), 0, SAMPLE_BYTES)
            for i, head, length in zip(long.tolist(), heads.to_pylist(), pc.binary_length(taken).to_pylist()):
                rejects.append(Reject(source, first_line + i, sample(head), too_long(length, bound)))
    # Blank lines are not records. Nearly every line starts with `{`: only the others are looked at.
    others = pc.indices_nonzero(pc.invert(pc.starts_with(lines, "{")))
    if len(others):
        blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines.take(others))), 0)
        drop = others.filter(blank).to_numpy()
        if len(drop):
            keep = np.ones(n, dtype=bool) if keep is None else keep
            keep[drop] = False
    if keep is not None:
        table = table.filter(pa.array(keep))
    return table, n, rejects


class Splitter:
    """Bytes of one unit, fed in order, into batches of whole lines.

    `offset` and `lines` count what has been handed back (bytes and lines, a refused long line included
    once it has ended): where a resumed read of the unit starts."""

    def __init__(self, source: str, *, offset: int = 0, lines: int = 0, bound: int):
        self.source, self.offset, self.lines, self.bound = source, offset, lines, bound
        self.carry = b""
        self._long: list | None = None  # a line longer than the bound, being skipped: [sample bytes, length]

    def feed(self, data: bytes) -> tuple[pa.Table | None, list[Reject]]:
        """The lines completed by `data`, and the long lines that ended in it."""
        rejects: list[Reject] = []
        if self._long is not None:
            end = data.find(b"\n")
            if end < 0:
                self._long[1] += len(data)
                return None, rejects
            rejects.append(self._end_long(end))
            data = data[end + 1:]
        buf = self.carry + data
        cut = buf.rfind(b"\n")
        block, self.carry = (buf[: cut + 1], buf[cut + 1:]) if cut >= 0 else (b"", buf)
        if len(self.carry) > self.bound:  # the last line goes on past the bound: skip to its end
            self._long, self.carry = [self.carry[:SAMPLE_BYTES], len(self.carry)], b""
        table = None
        if block:
            table, n, long = split_lines(block[:-1], self.source, self.lines + 1, self.bound)
            rejects[:0] = long
            self.offset += len(block)
            self.lines += n
        return table, rejects

    def _end_long(self, more: int) -> Reject:
        head, length = self._long
        length += more
        self._long = None
        self.lines += 1
        self.offset += length + 1
        return Reject(self.source, self.lines, sample(head), too_long(length, self.bound))

    @property
    def tail(self) -> bytes:
        """The unterminated last line so far (empty when the bytes end with a line end)."""
        return self.carry

    def take_tail(self) -> tuple[pa.Table | None, list[Reject]]:
        """The unterminated last line, as a record (the unit is final, or the line is whole JSON)."""
        if self._long is not None:
            head, length = self._long
            self._long = None
            self.lines += 1
            self.offset += length
            return None, [Reject(self.source, self.lines, sample(head), too_long(length, self.bound, ended=False))]
        tail, self.carry = self.carry, b""
        if not tail.strip():
            self.offset += len(tail)
            return None, []
        table, n, rejects = split_lines(tail, self.source, self.lines + 1, self.bound)
        self.offset += len(tail)
        self.lines += n
        return table, rejects

    def refuse_tail(self, why: str) -> list[Reject]:
        """The unterminated last line, quarantined (a torn gzip's last record)."""
        if self._long is not None:
            return self.take_tail()[1]
        tail, self.carry = self.carry, b""
        self.offset += len(tail)
        if not tail.strip():
            return []
        self.lines += 1
        return [Reject(self.source, self.lines, decode(tail).lstrip(INVALID_UTF8), f"torn last record: {why}")]

    @property
    def skipping(self) -> bool:
        """A long line is being skipped (it has not ended yet)."""
        return self._long is not None
