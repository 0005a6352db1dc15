"""A blob larger than a whole read may be (a busy firewall's hourly application log runs to gigabytes) is
read by DuckDB in pieces of whole lines, and stores exactly what the line reader stores: the same rows,
the same quarantine (positions included), the same progress per blob. A piece with anything odd in it
hands the rest of the blob to the line reader, and a run stopped mid-blob resumes after its last piece.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egresslens import ingest, store
from egresslens.simulate import simulate_to_dir
from egresslens.sources import archive
from conftest import count_rows
from test_fast_route import APP, HIVE, NET, _store_contents

PIECE = 16_000  # the largest whole read in these tests: a larger blob is read in pieces of at most this size
BATCH = 8_000  # bytes per batch of the line reader (small blobs are gathered up to PIECE)


def _line(rec: dict, i: int, **props) -> str:
    rec = dict(rec, time=f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:07d}Z")
    rec["properties"] = {**rec["properties"], "SourcePort": 1024 + i, **props}
    return json.dumps(rec, separators=(",", ":"))


def _blob(logs: Path, hour: int, lines: list[str]) -> Path:
    path = logs / HIVE.format(hour=hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _progress(db: Path) -> list[tuple]:
    con = store.connect(db, read_only=True)
    try:
        return con.execute("SELECT source, size, records_done, offset_done, complete FROM ingest_sources "
                           "ORDER BY source").fetchall()
    finally:
        con.close()


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setenv("EGRESSLENS_ARCHIVE_FILE_BYTES", str(PIECE))
    monkeypatch.setenv("EGRESSLENS_CHUNK_BYTES", str(BATCH))


@pytest.fixture
def archive_reads(monkeypatch) -> list[dict]:
    """Every statement of DuckDB's archive reader, in order: the files it was given, and the progress
    committed for each file it took."""
    reads: list[dict] = []
    real = ingest.Pipeline.read_archive

    def spy(self, paths, route, until):
        got = real(self, paths, route, until)
        reads.append({"files": list(paths), "taken": [(paths[i], vars(until[i])) for i in sorted(got)]})
        return got

    monkeypatch.setattr(ingest.Pipeline, "read_archive", spy)
    return reads


def pieces_read(reads: list[dict]) -> list[dict]:
    """Every piece DuckDB took (a scratch copy of part of a blob): its blob's progress as committed."""
    return [progress for r in reads for path, progress in r["taken"] if ".piece-" in path]


def _ingest(logs: Path, db: Path):
    con = store.connect(db)
    try:
        return ingest.ingest_files(con, [logs])
    finally:
        con.close()


def _lines_only(logs: Path, db: Path, monkeypatch) -> None:
    """The directory ingested with every file read line by line."""
    route_of = archive.route_of
    monkeypatch.setattr(archive, "route_of", lambda *a, **k: None)
    _ingest(logs, db)
    monkeypatch.setattr(archive, "route_of", route_of)


def both_ways(logs: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """The directory ingested as usual and with every file read line by line: the two stores."""
    ours, lines = tmp_path / "pieces.duckdb", tmp_path / "lines.duckdb"
    _ingest(logs, ours)
    _lines_only(logs, lines, monkeypatch)
    return ours, lines


@pytest.mark.parametrize("fmt", ["structured", "legacy"])
def test_large_simulated_blobs_read_in_pieces_store_what_the_line_reader_stores(
        tmp_path, monkeypatch, small_pieces, archive_reads, fmt):
    logs = tmp_path / "logs"
    simulate_to_dir(logs, hours=2, events_per_hour=400, seed=3, fmt=fmt, incident=True)
    ours, lines = both_ways(logs, tmp_path, monkeypatch)
    assert _store_contents(ours) == _store_contents(lines)
    assert _progress(ours) == _progress(lines)  # offsets and line counts as the line reader keeps them
    large = [p for p in logs.rglob("PT1H.json") if p.stat().st_size > PIECE]
    pieces = pieces_read(archive_reads)
    in_pieces = {p["source"] for p in pieces}
    # (a blob whose first piece holds a record the simulator spoiled is read line by line)
    assert in_pieces and in_pieces <= {str(p.resolve()) for p in large}
    ends = [p["offset_done"] for p in pieces if p["source"] == pieces[0]["source"]]
    assert len(ends) > 1 and ends == sorted(ends), "a large blob is read in several pieces, in order"
    assert all(b - a <= PIECE for a, b in zip([0, *ends], ends)), "at most a piece each"


def test_a_refused_record_hands_the_rest_of_the_blob_to_the_line_reader_with_positions_intact(
        tmp_path, monkeypatch, small_pieces, archive_reads):
    logs = tmp_path / "logs"
    lines = [_line(NET, i) for i in range(200)]
    lines[150] = _line(NET, 150, SourceIp="10.0.0.0/8")  # not one address: refused, quarantined at line 151
    lines[170] = _line(APP, 170)  # another category in the blob: the line reader's too
    blob = _blob(logs, 10, lines)
    ours, by_lines = both_ways(logs, tmp_path, monkeypatch)
    contents = _store_contents(ours)
    assert contents == _store_contents(by_lines)
    assert [(q[1], q[3]) for q in contents["quarantine"]] == [(151, "source address is not an IP address: 10.0.0.0/8")]
    assert _progress(ours) == _progress(by_lines) == [(str(blob.resolve()), blob.stat().st_size, 200,
                                                        blob.stat().st_size, True)]
    read = pieces_read(archive_reads)[-1]["records_done"]
    assert 0 < read < 151, "the pieces before the refused record are read by DuckDB, the rest line by line"
    assert contents["run"] == [(200, 199, 0, 1)]


def test_a_line_longer_than_a_piece_goes_to_the_line_reader(tmp_path, monkeypatch, small_pieces, archive_reads):
    logs = tmp_path / "logs"
    lines = [_line(NET, i, Rule="r" * (2 * PIECE if i == 0 else 1)) for i in range(100)]
    _blob(logs, 10, lines)
    ours, by_lines = both_ways(logs, tmp_path, monkeypatch)
    assert _store_contents(ours) == _store_contents(by_lines)
    assert _store_contents(ours)["run"] == [(100, 100, 0, 0)]
    assert pieces_read(archive_reads) == []


def test_a_piece_that_cannot_be_copied_leaves_the_blob_to_the_line_reader(
        tmp_path, monkeypatch, small_pieces, archive_reads):
    logs = tmp_path / "logs"
    _blob(logs, 10, [_line(NET, i) for i in range(100)])
    nowhere = tmp_path / "no-such-directory"  # as a full disk would, the copy fails
    scratch = (nowhere / ".s.piece-0.json", nowhere / ".s.piece-1.json")
    monkeypatch.setattr(archive, "scratch_files", lambda ctx: scratch)
    ours, by_lines = both_ways(logs, tmp_path, monkeypatch)
    assert _store_contents(ours) == _store_contents(by_lines)
    assert _store_contents(ours)["run"] == [(100, 100, 0, 0)]
    assert pieces_read(archive_reads) == []


def test_a_run_stopped_mid_blob_resumes_after_its_last_piece(tmp_path, monkeypatch, small_pieces, archive_reads):
    logs = tmp_path / "logs"
    blob = _blob(logs, 10, [_line(NET, i) for i in range(300)])
    db = tmp_path / "s.duckdb"
    real = ingest.Pipeline.read_archive  # the spy: every statement is in archive_reads

    def ctrl_c_at_the_third_piece(self, paths, route, until):
        if len(pieces_read(archive_reads)) == 2:
            raise KeyboardInterrupt
        return real(self, paths, route, until)

    monkeypatch.setattr(ingest.Pipeline, "read_archive", ctrl_c_at_the_third_piece)
    with pytest.raises(KeyboardInterrupt):
        _ingest(logs, db)
    stopped_at = pieces_read(archive_reads)[-1]
    assert _progress(db) == [(str(blob.resolve()), blob.stat().st_size, stopped_at["records_done"],
                              stopped_at["offset_done"], False)]
    monkeypatch.setattr(ingest.Pipeline, "read_archive", real)
    counts, _, _ = _ingest(logs, db)
    resumed = pieces_read(archive_reads)[2]
    assert resumed["records_done"] > stopped_at["records_done"], "the second run read on in pieces"
    assert (counts.read, counts.stored, counts.duplicates) == (300 - stopped_at["records_done"],) * 2 + (0,)
    _lines_only(logs, tmp_path / "lines.duckdb", monkeypatch)
    ours, by_lines = _store_contents(db), _store_contents(tmp_path / "lines.duckdb")
    assert ours["flows"] == by_lines["flows"] and len(ours["flows"]) == 300
    assert [r[0] for r in ours["run"]] == [stopped_at["records_done"], 300 - stopped_at["records_done"]]
    assert not list(tmp_path.glob(".*.piece-*")), "the scratch copies of the pieces are removed"


def test_a_piece_is_whole_lines_and_counts_them(tmp_path):
    src = tmp_path / "blob"
    src.write_bytes(b"one\ntwo\nthree\nfour\n")
    dest = tmp_path / "piece"
    with open(src, "rb") as f:
        assert archive._copy_piece(f, 0, 10, dest) == (8, 2)
        assert dest.read_bytes() == b"one\ntwo\n"
        assert archive._copy_piece(f, 8, 100, dest) == (11, 2)
        assert dest.read_bytes() == b"three\nfour\n"
        assert archive._copy_piece(f, 8, 4, dest) == (0, 0)  # no line ends within the range


def test_small_blobs_are_gathered_into_batches_as_large_as_a_whole_read(tmp_path, small_pieces, archive_reads):
    """A batch of small blobs holds up to a whole read's bytes (not a line-reader batch's): each statement
    then scans more rows per thread, and the small blobs of a table fill as few batches as they can."""
    logs = tmp_path / "logs"
    blobs = [_blob(logs, h, [_line(NET, h * 100 + i) for i in range(12)]) for h in range(8)]
    size = blobs[0].stat().st_size
    assert {b.stat().st_size for b in blobs} == {size} and BATCH < 2 * size and 8 * size > PIECE > 3 * size, \
        "the blobs are sized for this test"
    _ingest(logs, tmp_path / "s.duckdb")
    batches = [r["files"] for r in archive_reads]
    assert sorted(p for b in batches for p in b) == sorted(str(p.resolve()) for p in blobs)
    assert all(sum(Path(p).stat().st_size for p in b) <= PIECE for b in batches)
    per_batch = PIECE // size  # blobs of the same size: this many fit in a whole read
    assert len(batches) == -(-8 // per_batch), "as few batches as a whole read allows"
    assert count_rows(tmp_path / "s.duckdb", "flows") == 8 * 12
