"""The ingest loop and its readers: a source only reads, the loop commits, for every source alike.

Adding a source is writing a reader (`discover` and `read`, egresslens/sources/batch.py) and nothing else:
the loop gives it exact counts, resume after a kill, quarantine with reasons and no duplicate on a
second run. And a reader can be called alone, on a file, to look at its batches.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import rows
from egresslens import ingest, store
from egresslens.sources.batch import Batch, Context, Lines, Progress, Reject, Unit, line_schema
from egresslens.sources.files import FilesSource

FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = (FIXTURES / "reference_records.jsonl").read_text().splitlines()
NET = json.loads(next(r for r in RECORDS if '"AZFWNetworkRule"' in r))


def _record(i: int) -> str:
    return json.dumps(dict(NET, time=f"2026-03-01T10:00:{i % 60:02d}.{i:07d}Z",
                           properties={**NET["properties"], "SourcePort": 1024 + i}))


class PagedSource:
    """A made-up service that returns records a page at a time, each page resumable by its number: what a
    newcomer writes to add a source. Page 3 holds a record the service itself says is broken."""

    kind = "paged"
    description = "a paged service"

    def __init__(self, pages: int, per_page: int, *, stop_after: int | None = None):
        self.pages, self.per_page, self.stop_after, self.served = pages, per_page, stop_after, 0

    def discover(self, ctx: Context) -> list[Unit]:
        done = ctx.progress.get("paged")
        return [Unit("paged", resume=done)] if not (done and done.complete) else []

    def read(self, unit: Unit, ctx: Context):
        start = unit.resume.offset_done if unit.resume else 0
        for page in range(start, self.pages):
            if self.stop_after is not None and self.served == self.stop_after:
                raise KeyboardInterrupt  # killed mid-way
            self.served += 1
            raws = [_record(page * self.per_page + i) for i in range(self.per_page)]
            rejects = [Reject("paged", page * self.per_page + 1, "<bad bytes>", "the service marked it broken")] \
                if page == 3 else []
            table = pa.table({"source": ["paged"] * len(raws), "position": [page * self.per_page + i + 2 for i in
                                                                             range(len(raws))],
                              "record_index": pa.nulls(len(raws), pa.int32()), "raw": raws}, schema=line_schema())
            yield Batch("paged", Lines(table), rejects=rejects, gather=False,
                        until=[Progress("paged", offset_done=page + 1, complete=page + 1 == self.pages)])


def test_a_new_source_is_one_reader_and_the_loop_gives_it_every_guarantee(tmp_path):
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    with pytest.raises(KeyboardInterrupt):
        ingest.run(con, PagedSource(6, 50, stop_after=4))
    first = rows(con, "SELECT status, records_read, stored, quarantined FROM ingest_runs")
    assert first == [{"status": "interrupted", "records_read": 4 * 50 + 1, "stored": 200, "quarantined": 1}]
    result = ingest.run(con, PagedSource(6, 50))  # resumes at page 5: nothing read twice
    assert (result.counts.read, result.counts.stored, result.counts.duplicates) == (100, 100, 0)
    assert ingest.run(con, PagedSource(6, 50)).counts.read == 0, "a finished source is not read again"
    forced = ingest.run(con, PagedSource(6, 50), force=True).counts
    assert (forced.read, forced.stored, forced.duplicates, forced.quarantined) == (301, 0, 301, 0)
    assert con.execute("SELECT count(*) FROM flows").fetchall() == [(300,)]
    assert rows(con, "SELECT source, position, raw, reason FROM quarantine") == [
        {"source": "paged", "position": 151, "raw": "<bad bytes>", "reason": "the service marked it broken"}]
    con.close()


def _batches(path: Path, tmp_path: Path, **limits) -> list[Batch]:
    from egresslens.sources.batch import Limits

    source = FilesSource([path])
    ctx = Context(progress={}, scratch=tmp_path / ".scratch", limits=Limits(**limits))
    (unit,) = source.discover(ctx)
    return list(source.read(unit, ctx))


def test_a_reader_alone_on_a_torn_gzip_gives_its_records_the_torn_one_as_a_reject_and_its_progress(tmp_path):
    path = tmp_path / "hub.json.gz"
    data = gzip.compress(("\n".join(RECORDS) + "\n").encode())
    path.write_bytes(data[: len(data) - 30])
    batches = _batches(path, tmp_path)
    records = [r for b in batches if isinstance(b.records, Lines) for r in b.records.table.column("raw").to_pylist()]
    assert records == RECORDS[: len(records)] and 0 < len(records) < len(RECORDS)
    (torn,) = [r for b in batches for r in b.rejects]
    assert torn.reason.startswith("torn last record: gzip stream ends before its end marker")
    assert torn.position == len(records) + 1
    assert batches[-1].until[-1].complete and batches[-1].problem


def test_a_line_longer_than_the_record_bound_is_a_reject_with_its_first_bytes_never_held_whole(tmp_path):
    path = tmp_path / "PT1H.json"
    long = '{"category":"' + "x" * 5000 + '"}'
    path.write_text("\n".join([RECORDS[0], long, RECORDS[1], long + "  "]))  # the last line unterminated
    batches = _batches(path, tmp_path, batch_bytes=1024, line_bytes=1000)
    records = [r for b in batches if isinstance(b.records, Lines) for r in b.records.table.column("raw").to_pylist()]
    assert records == RECORDS[:2]
    rejects = [r for b in batches for r in b.rejects]
    assert [r.position for r in rejects] == [2, 4]
    assert rejects[0].reason.startswith("line of 5,015 bytes is longer than the 1,000-byte bound for one record")
    assert "unterminated" in rejects[1].reason and rejects[1].raw.startswith('{"category":"xxx')
    assert batches[-1].until[-1] == Progress(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns, 4,
                                             path.stat().st_size, True)


def test_a_batch_whose_write_fails_leaves_none_of_its_rows_quarantine_progress_or_counts(tmp_path, monkeypatch):
    """A batch is one transaction: its rows, its refusals and its progress are committed together or not at all."""
    from egresslens import load

    con = store.connect(tmp_path / "s.duckdb")
    with pytest.raises(KeyboardInterrupt):
        ingest.run(con, PagedSource(5, 20, stop_after=3))  # pages 0-2 committed
    saved = load.Loader._save_progress

    def fail_after_the_rows(self, until):
        saved(self, until)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(load.Loader, "_save_progress", fail_after_the_rows)
    with pytest.raises(OSError):
        ingest.run(con, PagedSource(5, 20))  # page 3 holds a refused record
    assert con.execute("SELECT count(*) FROM flows").fetchall() == [(60,)]
    assert con.execute("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
    assert rows(con, "SELECT offset_done, complete FROM ingest_sources") == [{"offset_done": 3, "complete": False}]
    assert rows(con, "SELECT records_read, stored, quarantined FROM ingest_runs ORDER BY run_id")[-1] == {
        "records_read": 0, "stored": 0, "quarantined": 0}
    con.close()


@pytest.mark.parametrize(("budget", "expected"), [
    (None, dict(batch_bytes=128 << 20, whole_bytes=512 << 20, part_rows=500_000, document_bytes=64 << 20)),
    ("512MiB", dict(batch_bytes=32 << 20, whole_bytes=128 << 20, part_rows=131_072, document_bytes=16 << 20)),
    ("8GiB", dict(batch_bytes=128 << 20, whole_bytes=512 << 20, part_rows=500_000, document_bytes=64 << 20)),
])
def test_the_loops_batch_sizes_come_from_the_memory_budget(monkeypatch, tmp_path, budget, expected):
    """A smaller budget reads in smaller batches; a larger one does not read more at once than is faster."""
    for name in ("EGRESSLENS_CHUNK_BYTES", "EGRESSLENS_ARCHIVE_FILE_BYTES", "EGRESSLENS_MAX_DOCUMENT_BYTES"):
        monkeypatch.delenv(name, raising=False)
    if budget is None:
        monkeypatch.delenv("EGRESSLENS_MEMORY_LIMIT", raising=False)
    else:
        monkeypatch.setenv("EGRESSLENS_MEMORY_LIMIT", budget)
    limits = Context(progress={}, scratch=tmp_path).limits
    assert {k: getattr(limits, k) for k in expected} == expected
    monkeypatch.setenv("EGRESSLENS_CHUNK_BYTES", str(1 << 20))  # one size set by hand: the whole read follows it
    assert (Context(progress={}, scratch=tmp_path).limits.batch_bytes,
            Context(progress={}, scratch=tmp_path).limits.whole_bytes) == (1 << 20, 4 << 20)


@pytest.mark.parametrize("fmt,layout", [("structured", "storage"), ("legacy", "storage"), ("structured", "csv")])
def test_an_ingest_duckdb_reads_whole_loads_neither_arrow_numpy_nor_pandas(tmp_path, fmt, layout):
    """`egresslens ingest files` on a storage archive (either form) or a CSV export, each read whole by
    DuckDB: Arrow, NumPy and pandas are for batches Python builds, and importing them costs about 0.12 s of
    every run (pyarrow imports pandas, where it is installed, as soon as it builds arrays from Python lists,
    as progress once did), so a run that builds none never loads them."""
    import subprocess
    import sys
    from datetime import datetime

    from egresslens.simulate import simulate_to_dir

    data = tmp_path / "logs"
    simulate_to_dir(data, start=datetime(2026, 3, 1), hours=1, events_per_hour=300, seed=3, fmt=fmt, layout=layout)
    for meta in ("truth.json", "policy.json"):
        (data / meta).unlink()
    script = ("import sys; from egresslens.cli import app\n"
              f"sys.argv = ['egresslens', 'ingest', 'files', {str(data)!r}, '--db', {str(tmp_path / 's.duckdb')!r}]\n"
              "try:\n    app()\nexcept SystemExit as e:\n    code = e.code\n"
              "print(code, *sorted(m for m in ('pyarrow', 'numpy', 'pandas') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    summary, loaded = run.stdout.splitlines()[0], run.stdout.splitlines()[-1]
    assert "quarantined 0" in summary and "stored 0" not in summary
    assert loaded == "0", f"the run loaded {loaded.split()[1:]}"
