"""No line, record or document is held whole beyond its bound: a gzip that expands to one enormous line, a
document of millions of records or a document larger than the bound is quarantined (or streamed) with its
reason, the rest of the file is read, the counts stay exact, and memory stays bounded."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import rows
from egresslens import store
from egresslens.ingest import ingest_files

FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = (FIXTURES / "reference_records.jsonl").read_text().splitlines()

# Runs a command and reports its own peak RSS (a child's peak, from os.wait4, starts at its parent's
# high-water mark: the launcher is small, so the peak is the command's).
LAUNCHER = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
json.dump({"exit": os.waitstatus_to_exitcode(status), "peak_mib": usage.ru_maxrss / 1024, "stdout": out.decode()},
          open(sys.argv[1], "w"))
"""


def _ingest_measured(tmp_path: Path, path: Path, **env) -> dict:
    result = tmp_path / "measured.json"
    subprocess.run([sys.executable, "-c", LAUNCHER, str(result), sys.executable, "-m", "egresslens.cli", "ingest",
                    "files", str(path), "--db", str(tmp_path / "s.duckdb"), "--json", "--quiet"],
                   env={**os.environ, **env}, check=True, timeout=600)
    out = json.loads(result.read_text())
    return {**out, "summary": json.loads(out["stdout"])}


def test_a_gzip_that_expands_to_one_enormous_line_quarantines_that_line_unread_in_bounded_memory(tmp_path):
    path = tmp_path / "hub.json.gz"
    head, tail = b'{"category":"AZFWNetworkRule","properties":{"Rule":"', b'"}}'
    line = len(head) + (400 << 20) + len(tail)  # a 400 MB line from about 400 KB of gzip
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write((RECORDS[0] + "\n").encode())
        f.write(head)
        for _ in range(100):
            f.write(b"x" * (4 << 20))
        f.write(tail + b"\n")
        f.write((RECORDS[1] + "\n").encode())
    assert path.stat().st_size < 2 << 20
    got = _ingest_measured(tmp_path, path, EGRESSLENS_MAX_RECORD_BYTES=str(1 << 20),
                           EGRESSLENS_CHUNK_BYTES=str(16 << 20))
    assert got["exit"] == 5
    summary = got["summary"]
    assert (summary["records_read"], summary["stored"], summary["quarantined"]) == (3, 2, 1)
    assert got["peak_mib"] < 300, f"the line was held whole: peak {got['peak_mib']:.0f} MiB"
    con = store.connect(tmp_path / "s.duckdb", read_only=True)
    (q,) = rows(con, "SELECT position, length(raw) AS kept, reason FROM quarantine")
    con.close()
    assert q["position"] == 2 and q["kept"] == 64 << 10
    assert q["reason"].startswith(f"line of {line:,} bytes is longer than the 1,048,576-byte bound for one record")


def test_a_records_document_of_a_million_records_is_streamed_record_by_record(tmp_path):
    """Parsed whole, a document's records are one list in memory (millions of them in a few MB of `{},`);
    a `{"records": [...]}` document is streamed instead, in a memory limit its whole parse exceeds."""
    path = tmp_path / "PT1H.json"
    n = 1_000_000
    with open(path, "w") as f:
        f.write('{\n  "records": [\n')
        f.write(",\n".join([json.dumps(json.loads(RECORDS[0]), separators=(",", ":"))] + ["{}"] * (n - 1)))
        f.write("\n  ]\n}\n")
    got = _ingest_measured(tmp_path, path, EGRESSLENS_MEMORY_LIMIT="384MiB")  # DuckDB: 192 MiB
    assert got["exit"] == 5
    summary = got["summary"]
    assert (summary["records_read"], summary["stored"], summary["quarantined"]) == (n, 1, n - 1)
    assert got["peak_mib"] < 700, got["peak_mib"]
    con = store.connect(tmp_path / "s.duckdb", read_only=True)
    assert rows(con, "SELECT min(position) AS p, max(position) AS q FROM quarantine") == [{"p": 1, "q": 1}]
    con.close()


def test_a_document_larger_than_the_document_bound_is_quarantined_unread_plain_or_compressed(tmp_path, monkeypatch):
    monkeypatch.setenv("EGRESSLENS_MAX_DOCUMENT_BYTES", str(1 << 20))
    records = [json.loads(r) for r in RECORDS] * 4000
    text = json.dumps({"records": records}, indent=1)
    assert len(text) > 2 << 20
    plain, packed = tmp_path / "old" / "PT1H.json", tmp_path / "hub" / "PT1H.json.gz"
    plain.parent.mkdir(), packed.parent.mkdir()
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"records": [json.loads(r) for r in RECORDS]}, indent=1))
    con = store.connect(tmp_path / "s.duckdb")
    counts, results, _ = ingest_files(con, [plain, packed, small])
    quarantined = rows(con, "SELECT source, position, length(raw) AS kept, reason FROM quarantine ORDER BY source")
    con.close()
    assert (counts.read, counts.stored, counts.quarantined) == (2 + len(RECORDS), len(RECORDS), 2)
    reasons = {Path(q["source"]).name: q["reason"] for q in quarantined}
    assert reasons.keys() == {"PT1H.json", "PT1H.json.gz"}
    assert all(q["kept"] == 64 << 10 and q["position"] == 1 for q in quarantined)
    assert reasons["PT1H.json"].startswith(f"JSON document of {len(text):,} bytes is larger than the 1,048,576")
    assert reasons["PT1H.json.gz"].startswith("JSON document decompresses to more than the 1,048,576 bytes")
    assert {Path(r.path).name: r.problem for r in results if r.problem} == {
        "PT1H.json": "JSON document too large: quarantined unread",
        "PT1H.json.gz": "JSON document too large: quarantined unread"}
