"""Read log files of every container format into record batches, streaming and resumable.

Formats, detected from content (not names): JSON Lines (storage archive PT1H.json since 2018,
Event Hub bodies one per line, exports), whole JSON documents (pre-2018 `{"records": [...]}`,
an Event Hub body, a Log Analytics query-API response `{"tables": [...]}`, a JSON array of rows),
and Log Analytics CSV exports. Any of them may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from egresslens.ingest import BATCH_SCHEMA, Counts, Ingestor
from egresslens.normalise import STRUCTURED_TARGETS

CHUNK_BYTES = 32 << 20  # raw text per batch: bounds memory whatever the file size
CSV_BATCH_ROWS = 200_000
LOG_TABLES = set(STRUCTURED_TARGETS) | {"AzureDiagnostics"}


@dataclass
class FileResult:
    path: str
    fmt: str
    counts: Counts
    skipped: bool = False
    resumed_from: int = 0


def discover(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """Files under the given paths, recursively, in a stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return found


def _open(path: Path) -> io.BufferedIOBase:
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    raw.seek(0)
    return raw


def detect_format(path: Path) -> str:
    """`jsonl`, `json` (one document), `csv`, or `empty`."""
    with _open(path) as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if not stripped:
        return "empty"
    if stripped[0] in "{[":
        first_line = stripped.split("\n", 1)[0].strip()
        try:
            doc = json.loads(first_line)
        except ValueError:
            return "json" if "\n" in stripped or len(head) == 1 << 16 else "jsonl"
        if isinstance(doc, dict) and "tables" in doc:
            return "json"
        if isinstance(doc, list):
            return "json"
        return "jsonl"
    return "csv"


def _table_hint(path: Path) -> str | None:
    """`AZFWNetworkRule.csv` → `AZFWNetworkRule`: exports often omit the `Type` column."""
    stem = path.name.split(".")[0]
    return stem if stem in LOG_TABLES else None


def _split_lines(block: bytes, source: str, first_line: int) -> pa.Table:
    """One chunk of complete lines → a batch, with no Python work per line."""
    text = block.decode("utf-8", errors="replace")
    lines = pc.list_flatten(pc.split_pattern(pa.array([text]), "\n"))
    lines = pc.utf8_rtrim(lines, characters="\r")
    positions = pa.array(range(first_line, first_line + len(lines)), pa.int64())
    keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    table = pa.table(
        {
            "source": pa.array([source] * len(lines), pa.string()),
            "position": positions,
            "record_index": pa.nulls(len(lines), pa.int32()),
            "raw": lines,
        },
        schema=BATCH_SCHEMA,
    )
    return table.filter(keep)


def read_jsonl(ingestor: Ingestor, path: Path, source: str, state: dict | None, stat: os.stat_result,
               on_bytes) -> tuple[Counts, int]:
    counts = Counts()
    offset = state["offset_done"] if state else 0
    line_no = state["records_done"] if state else 0
    resumed = offset
    with _open(path) as f:
        _skip(f, offset)
        carry = b""
        raw_file = getattr(f, "fileobj", f)
        last_pos = raw_file.tell()
        while True:
            data = f.read(CHUNK_BYTES)
            at_end = not data
            buf = carry + data
            if at_end:
                block, carry = buf, b""
            else:
                cut = buf.rfind(b"\n")
                if cut < 0:
                    carry = buf
                    continue
                block, carry = buf[: cut + 1], buf[cut + 1 :]
            if block:
                offset += len(block)
                block = block[:-1] if block.endswith(b"\n") else block
                batch = _split_lines(block, source, line_no + 1)
                line_no += block.count(b"\n") + 1
                progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                records_done=line_no, offset_done=offset, complete=False)
                counts.add(ingestor.ingest_lines(batch, progress=progress))
            pos = raw_file.tell()
            on_bytes(pos - last_pos)
            last_pos = pos
            if at_end:
                break
    ingestor.mark_source(source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                         records_done=line_no, offset_done=offset, complete=True)
    return counts, resumed


def _skip(f: io.BufferedIOBase, offset: int) -> None:
    if not offset:
        return
    if isinstance(f, gzip.GzipFile):
        remaining = offset
        while remaining:
            got = f.read(min(remaining, CHUNK_BYTES))
            if not got:
                break
            remaining -= len(got)
    else:
        f.seek(offset)


def read_json_document(ingestor: Ingestor, path: Path, source: str, stat: os.stat_result) -> Counts:
    """A whole JSON document: records envelope, query-API response or array of rows."""
    with _open(path) as f:
        text = f.read().decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return ingestor.quarantine_raw(
            source, [(1, text, f"truncated or invalid JSON document: {exc}")],
            progress=dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                          records_done=1, offset_done=len(text), complete=True),
        )
    progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    records_done=1, offset_done=len(text), complete=True)
    if isinstance(doc, dict) and isinstance(doc.get("tables"), list):
        return _ingest_query_api_response(ingestor, doc, source, _table_hint(path), progress)
    if isinstance(doc, list):
        rows = [json.dumps(r) for r in doc]  # one document, already in memory: bounded by its size
        batch = pa.table({"source": [source] * len(rows), "position": list(range(1, len(rows) + 1)),
                          "record_index": pa.nulls(len(rows), pa.int32()), "raw": rows}, schema=BATCH_SCHEMA)
        return ingestor.ingest_lines(batch, progress=progress)
    compact = json.dumps(doc)
    batch = pa.table({"source": [source], "position": [1], "record_index": pa.nulls(1, pa.int32()),
                      "raw": [compact]}, schema=BATCH_SCHEMA)
    return ingestor.ingest_lines(batch, progress=progress)


def _ingest_query_api_response(ingestor: Ingestor, doc: dict, source: str, hint: str | None,
                               progress: dict) -> Counts:
    counts = Counts()
    tables = doc["tables"]
    offset = 0
    for i, table in enumerate(tables):
        last = i == len(tables) - 1
        try:
            names = [c["name"] for c in table["columns"]]
            rows = table["rows"]
            columns = list(zip(*rows)) if rows else [[] for _ in names]
            arrow = pa.table({n: pa.array([None if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for v in col], pa.string())
                              for n, col in zip(names, columns)})
        except (KeyError, TypeError, ValueError) as exc:
            counts.add(ingestor.quarantine_raw(source, [(i + 1, json.dumps(table)[:1_000_000], f"malformed query-API table: {exc}")],
                                               progress=progress if last else None))
            continue
        counts.add(ingestor.ingest_rows(arrow, source=source, log_table=hint, position_offset=offset,
                                        progress=progress if last else None))
        offset += arrow.num_rows
    return counts


def read_csv(ingestor: Ingestor, path: Path, source: str, stat: os.stat_result, on_bytes) -> Counts:
    """Log Analytics CSV export: any column order, `[UTC]` header suffixes, booleans as 0/1."""
    import duckdb  # noqa: F401  (the ingestor's connection does the reading)

    counts = Counts()
    reader_con = ingestor.con.cursor()
    try:
        reader_con.execute("SET TimeZone = 'UTC'")
        rel = reader_con.execute(
            "SELECT * FROM read_csv(?, all_varchar = true, header = true, store_rejects = true, "
            "rejects_table = 'csv_rejects', rejects_scan = 'csv_scans', strict_mode = false, "
            "null_padding = false, parallel = false)",
            [str(path)],
        )
        names = [d[0] for d in rel.description]
        clean = [n.split(" [", 1)[0].strip() for n in names]
        reader = rel.fetch_record_batch(CSV_BATCH_ROWS)
        offset = 0
        hint = _table_hint(path)
        for rb in reader:
            table = pa.Table.from_batches([rb]).rename_columns(clean)
            counts.add(ingestor.ingest_rows(table, source=source, log_table=hint, position_offset=offset))
            offset += table.num_rows
        rejects = reader_con.execute(
            "SELECT line, csv_line, error_message FROM csv_rejects ORDER BY line"
        ).fetchall()
    finally:
        reader_con.close()
    on_bytes(stat.st_size)
    progress = dict(source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                    records_done=offset + len(rejects), offset_done=stat.st_size, complete=True)
    if rejects:
        counts.add(ingestor.quarantine_raw(
            source, [(int(line), text or "", f"malformed CSV line: {err}") for line, text, err in rejects],
            progress=progress))
    else:
        ingestor.mark_source(**progress)
    return counts


def ingest_file(ingestor: Ingestor, path: Path, *, force: bool = False, on_bytes=lambda n: None) -> FileResult:
    source = str(path.resolve())
    stat = path.stat()
    state = None if force else ingestor.source_state(source)
    if state and state["complete"] and state["size"] == stat.st_size and state["mtime_ns"] == stat.st_mtime_ns:
        on_bytes(stat.st_size)
        return FileResult(source, "unchanged", Counts(), skipped=True)
    if state and (state["complete"] or state["size"] > stat.st_size):
        state = None  # changed since: read again from the start; event ids keep it duplicate-free
    fmt = detect_format(path)
    if fmt == "empty":
        ingestor.mark_source(source, size=stat.st_size, mtime_ns=stat.st_mtime_ns, complete=True)
        on_bytes(stat.st_size)
        return FileResult(source, fmt, Counts())
    if fmt == "jsonl":
        counts, resumed = read_jsonl(ingestor, path, source, state, stat, on_bytes)
        return FileResult(source, fmt, counts, resumed_from=resumed)
    if fmt == "json":
        counts = read_json_document(ingestor, path, source, stat)
        on_bytes(stat.st_size)
        return FileResult(source, fmt, counts)
    return FileResult(source, fmt, read_csv(ingestor, path, source, stat, on_bytes))


def iter_files(paths: list[str | os.PathLike[str]]) -> Iterator[Path]:
    yield from discover(paths)
