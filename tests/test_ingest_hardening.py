"""Hostile and broken input at ingest: non-IP sources never reach a rule, a bad file never stops a run,
torn gzip and half-written lines lose nothing, invalid UTF-8 is never silently repaired, Ctrl-C resumes."""

from __future__ import annotations

import builtins
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIREWALL_ID, count_rows, ingest_raw, legacy_record, rows
from egresslens import exitcodes, store
from egresslens.cli import app
from egresslens.sources import sniff
from egresslens.ingest import ingest_files
from hostile import NON_IP_SOURCES

runner = CliRunner()


def _record(category: str, time: str, **props) -> str:
    return json.dumps({"time": time, "category": category, "resourceId": FIREWALL_ID, "properties": props})


def _net(i: int, source: str = "10.0.0.5") -> str:
    return _record("AZFWNetworkRule", f"2026-03-02T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z", Protocol="TCP",
                   SourceIp=source, SourcePort=1024 + i % 60_000, DestinationIp="20.1.2.3", DestinationPort=443, Action="Allow")


# -- item 1: a source that is not an IP address ------------------------------------------------------

@pytest.mark.parametrize("source", NON_IP_SOURCES, ids=[repr(s) for s in NON_IP_SOURCES])
def test_non_ip_sources_are_quarantined_at_ingest_in_every_table(con, source):
    t = "2026-03-02T10:00:00Z"
    records = [
        _record("AZFWApplicationRule", t, Protocol="HTTPS", SourceIp=source, SourcePort=1, DestinationPort=443,
                Fqdn="api.example.com", Action="Allow"),
        _record("AZFWNetworkRule", t, Protocol="TCP", SourceIp=source, SourcePort=1, DestinationIp="20.1.2.3",
                DestinationPort=443, Action="Deny"),
        _record("AZFWDnsQuery", t, SourceIp=source, SourcePort=1, QueryId=1, QueryType="A", QueryClass="IN",
                QueryName="api.example.com.", Protocol="udp", ResponseCode="NOERROR"),
        _record("AZFWThreatIntel", t, Protocol="HTTP", SourceIp=source, SourcePort=1, DestinationIp="",
                DestinationPort=80, Fqdn="bad.example", Action="Deny", ThreatDescription="Bot Networks"),
    ]
    counts = ingest_raw(con, records)
    assert (counts.stored, counts.quarantined) == (0, 4)
    for r in rows(con, "SELECT reason FROM quarantine"):
        assert "not an IP address" in r["reason"] or r["reason"] == "missing source address"


def test_legacy_text_with_a_non_ip_source_is_quarantined(con):
    counts = ingest_raw(con, [legacy_record("TCP request from *:1234 to 20.1.2.3:443. Action: Allow"),
                              legacy_record("TCP request from any:1234 to 20.1.2.3:443. Action: Allow")])
    assert (counts.stored, counts.quarantined) == (0, 2)


def test_ipv4_and_ipv6_sources_are_accepted(con):
    counts = ingest_raw(con, [_net(1, "10.1.2.3"), _net(2, "2001:db8::1"), _net(3, "fe80::1:2:3:4")])
    assert (counts.stored, counts.quarantined) == (3, 0)


def count_rows_in(con, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_no_proposal_in_any_format_gets_any_source_from_non_ip_sources(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = []
    for hour in (10, 11, 12):
        for i in range(5):
            t = f"2026-03-02T{hour}:{i:02d}:00Z"
            for source in [*NON_IP_SOURCES, "10.0.0.5"]:
                lines.append(_record("AZFWApplicationRule", t, Protocol="HTTPS", SourceIp=source, SourcePort=4000 + i,
                                     DestinationPort=443, Fqdn="api.example.com", Action="Deny",
                                     ActionReason="Default Action"))
                lines.append(_record("AZFWNetworkRule", t, Protocol="TCP", SourceIp=source, SourcePort=4000 + i,
                                     DestinationIp="20.1.2.3", DestinationPort=8443, Action="Deny",
                                     ActionReason="Default Action"))
    (logs / "PT1H.json").write_text("\n".join(lines) + "\n")
    db = str(tmp_path / "s.duckdb")
    assert runner.invoke(app, ["ingest", "files", str(logs), "--db", db, "--quiet"]).exit_code == exitcodes.PARTIAL
    outputs = {}
    for fmt in ("json", "az", "terraform", "bicep", "markdown"):
        result = runner.invoke(app, ["recommend", "--db", db, "--format", fmt])
        assert result.exit_code == exitcodes.FINDINGS, result.output
        outputs[fmt] = result.stdout
    proposals = [r["rule"] for r in json.loads(outputs["json"])["recommendations"] if r["rule"]]
    assert len(proposals) == 2
    for rule in proposals:
        assert rule["source_addresses"] and all(a.startswith("10.0.0.") for a in rule["source_addresses"])
    assert "--source-addresses '*'" not in outputs["az"] and "--source-addresses *" not in outputs["az"]
    assert "source_addresses = []" not in outputs["terraform"]
    assert "sourceAddresses: []" not in outputs["bicep"]
    for text in outputs.values():
        assert "$(id)" not in text and "rm -rf" not in text and "999.1.1.1" not in text


# -- item 4: one bad file never stops the run ------------------------------------------------------

def _torn_gzip(path: Path, lines: list[str]) -> int:
    """Write a gzip cut at two thirds; return how many complete lines its decodable part holds."""
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    cut = data[: len(data) * 2 // 3]
    path.write_bytes(cut)
    decodable = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)
    return decodable.count(b"\n")


def test_bad_files_are_each_named_with_a_reason_and_every_valid_record_is_stored(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a-valid.json").write_text("\n".join(_net(i) for i in range(300)) + "\n")
    complete = _torn_gzip(logs / "b-torn.json.gz", [_net(i) for i in range(300, 3300)])
    unreadable = logs / "c-unreadable.json"
    unreadable.write_text(_net(5000) + "\n")
    unreadable.chmod(0)
    if os.geteuid() == 0:  # root reads any file: refuse it the way the kernel refuses other users
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == unreadable:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(sniff, "open", refusing_open, raising=False)
    (logs / "d-deep.json").write_text('{"a":' * 10_000 + "1" + "}" * 10_000 + "\n")
    (logs / "e-huge-line.txt").write_text("x" * (50 << 20) + "\n")
    shutil.copy(sys.executable, logs / "f-program")
    store.connect(logs / "g-stray.duckdb").close()  # another store left in the log directory
    (logs / "h-empty.json").write_bytes(b"")
    (logs / "i-valid.json").write_text("\n".join(_net(i) for i in range(6000, 6100)) + "\n")
    db = str(tmp_path / "s.duckdb")

    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", db, "--quiet"])
    assert result.exit_code == exitcodes.PARTIAL
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert count_rows(db, "flows") == 300 + complete + 100
    said = result.stderr.splitlines()
    expected = {
        "b-torn.json.gz": "gzip stream ends before its end marker (truncated file)",
        "c-unreadable.json": "cannot be read: permission denied",
        "e-huge-line.txt": "first line is longer than 64 KB",
        "f-program": "binary file (an ELF executable), not a log",
        "g-stray.duckdb": "a DuckDB database file, not a log",
    }
    for name, reason in expected.items():
        assert [line for line in said if str(logs / name) in line and reason in line], (name, said)
    assert len(said) == len(expected)  # one line per bad file, nothing else
    con = store.connect(db, read_only=True)
    run = rows(con, "SELECT * FROM ingest_runs")[0]
    quarantined = {Path(r["source"]).name: r["reason"] for r in rows(con, "SELECT source, reason FROM quarantine")}
    con.close()
    for name in ("c-unreadable.json", "e-huge-line.txt", "f-program", "g-stray.duckdb"):
        assert name in run["message"]
    assert run["status"] == "completed"
    assert quarantined == {"b-torn.json.gz": "torn last record: gzip stream ends before its end marker (truncated file)",
                           "d-deep.json": "no category or table name: not an Azure Firewall log record"}

    again = runner.invoke(app, ["ingest", "files", str(logs), "--db", db, "--quiet", "--json"])
    summary = json.loads(again.stdout)
    assert (summary["stored"], summary["quarantined"]) == (0, 0)
    assert again.exit_code == exitcodes.PARTIAL  # the bad files are still there, and still named
    assert count_rows(db, "flows") == 300 + complete + 100


# -- item 3: a truncated gzip -----------------------------------------------------------------------

def test_truncated_gzip_keeps_every_complete_record_and_the_next_run_goes_on(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    complete = _torn_gzip(logs / "a.json.gz", [_net(i) for i in range(5000)])
    (logs / "b.json").write_text(_net(9000) + "\n")
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    counts, results, _ = ingest_files(con, [logs])
    assert 0 < complete < 5000
    assert (counts.stored, counts.quarantined) == (complete + 1, 1)
    assert "truncated" in results[0].problem
    (logs / "c.json").write_text(_net(9001) + "\n")  # the directory is not blocked: later files are read
    counts, results, _ = ingest_files(con, [logs])
    con.close()
    assert (counts.read, counts.stored) == (1, 1)
    assert [r.fmt for r in results] == ["unchanged", "unchanged", "jsonl"]


# -- item 8: invalid UTF-8, half-written lines, Ctrl-C ------------------------------------------------

def test_invalid_utf8_line_is_quarantined_with_its_bytes_shown_not_repaired(tmp_path):
    path = tmp_path / "PT1H.json"
    bad = _net(2).encode().replace(b"20.1.2.3", b"20.1.2.3\xff\xfe")
    path.write_bytes(_net(1).encode() + b"\n" + bad + b"\n" + _net(3).encode() + b"\n")
    con = store.connect(tmp_path / "s.duckdb")
    counts, _, _ = ingest_files(con, [path])
    q = rows(con, "SELECT position, raw, reason FROM quarantine")
    con.close()
    assert (counts.read, counts.stored, counts.quarantined) == (3, 2, 1)
    assert q[0]["position"] == 2 and "invalid UTF-8" in q[0]["reason"]
    assert "20.1.2.3\\xff\\xfe" in q[0]["raw"] and "\ufffd" not in q[0]["raw"]


def test_half_written_last_line_is_read_once_the_file_has_grown(tmp_path):
    path = tmp_path / "PT1H.json"
    third = _net(3)
    path.write_text(_net(1) + "\n" + _net(2) + "\n" + third[:40])
    con = store.connect(tmp_path / "s.duckdb")
    counts, results, _ = ingest_files(con, [path])
    assert (counts.stored, counts.quarantined) == (2, 0) and results[0].waiting
    with open(path, "a") as f:
        f.write(third[40:] + "\n")
    counts, results, _ = ingest_files(con, [path])
    assert (counts.read, counts.stored, counts.quarantined) == (1, 1, 0) and not results[0].waiting
    assert count_rows_in(con, "quarantine") == 0
    con.close()


def test_half_written_last_line_is_quarantined_once_the_file_stops_changing(tmp_path):
    path = tmp_path / "PT1H.json"
    path.write_text(_net(1) + "\n" + _net(2)[:40])
    con = store.connect(tmp_path / "s.duckdb")
    first, _, _ = ingest_files(con, [path])
    second, _, _ = ingest_files(con, [path])  # unchanged since: it will not grow any more
    third, _, _ = ingest_files(con, [path])
    con.close()
    assert (first.stored, first.quarantined) == (1, 0)
    assert (second.read, second.quarantined) == (1, 1)
    assert third.read == 0


def test_ctrl_c_prints_one_line_exits_130_and_the_next_run_resumes(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    total = 0
    for h in range(4):
        with open(logs / f"h{h}.json", "w") as f:
            for i in range(40_000):
                f.write(_net(h * 100_000 + i).replace("2026-03-02T10", f"2026-03-02T{10 + h}") + "\n")
                total += 1
    db = tmp_path / "s.duckdb"
    env = dict(os.environ, EGRESSLENS_CHUNK_BYTES=str(2 << 20))
    cmd = [sys.executable, "-m", "egresslens.cli", "ingest", "files", str(logs), "--db", str(db), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wal = Path(str(db) + ".wal")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if (db.stat().st_size if db.exists() else 0) + (wal.stat().st_size if wal.exists() else 0) > 4 << 20:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == exitcodes.OK:
        pytest.skip("the run finished before Ctrl-C reached it")
    assert proc.returncode == exitcodes.INTERRUPTED
    assert err.strip().splitlines() == ["interrupted, the next run resumes"]
    resumed = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == exitcodes.OK, resumed.stderr
    assert json.loads(resumed.stdout)["duplicates"] == 0  # resumed after the last committed batch
    assert count_rows(db, "flows") == total
    con = store.connect(db, read_only=True)
    statuses = [r[0] for r in con.execute("SELECT status FROM ingest_runs ORDER BY run_id").fetchall()]
    con.close()
    assert statuses == ["interrupted", "completed"]


def test_file_names_and_categories_from_hostile_text_are_printed_escaped(tmp_path):
    from hostile import TEXTS, assert_no_raw_controls

    logs = tmp_path / "logs"
    logs.mkdir()
    names = {k: v for k, v in TEXTS.items() if "/" not in v and len(v.encode()) < 200}
    for i, text in enumerate(names.values()):
        (logs / f"{i}-{text}.bin").write_bytes(b"\x7fELF" + bytes(64))
    categories = [_record("AZFW" + text, f"2026-03-02T10:00:{i:02d}Z", Protocol="TCP")
                  for i, text in enumerate(TEXTS.values())]
    (logs / "PT1H.json").write_text("\n".join(categories) + "\n")
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(tmp_path / "s.duckdb"), "--quiet"])
    assert result.exit_code == exitcodes.PARTIAL
    assert_no_raw_controls(result.stderr, "ingest stderr")
    lines = result.stderr.splitlines()
    assert len([line for line in lines if line.startswith("skipped ")]) == len(names)  # one line each
    assert len([line for line in lines if line.startswith("unknown Azure Firewall log categories")]) == 1
