"""`egresslens ingest files`: every container format, idempotent, resumable after a kill, nothing lost."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIREWALL_ID, count_rows, legacy_record, rows
from egresslens import store
from egresslens.canonical import canonical_columns
from egresslens.schema import TABLES_BY_NAME
from egresslens.simulate import simulate_to_dir
from egresslens.ingest import ingest_files
from egresslens.sources.files import detect_format, discover
from egresslens.sources.sniff import blob_hour

FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = (FIXTURES / "reference_records.jsonl").read_text().splitlines()
START = datetime(2026, 3, 2)


def _ingest(db: Path, *paths, force=False, limits=None):
    con = store.connect(db)
    try:
        counts, results, run_id = ingest_files(con, list(paths), force=force, limits=limits)
        return counts
    finally:
        con.close()


def test_json_lines_archive_is_detected_and_stored(tmp_path):
    blob = tmp_path / "PT1H.json"
    blob.write_text("\n".join(RECORDS) + "\n")
    assert detect_format(blob) == "jsonl"
    counts = _ingest(tmp_path / "s.duckdb", blob)
    assert (counts.read, counts.stored, counts.quarantined) == (4, 4, 0)


def test_pre_2018_records_document_and_event_hub_bodies(tmp_path):
    records = [json.loads(r) for r in RECORDS]
    old = tmp_path / "old" / "PT1H.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"records": records}, indent=2))
    hub = tmp_path / "hub.json"
    hub.write_text("\n".join(json.dumps({"records": records[i:i + 2]}) for i in (0, 2)) + "\n")
    assert detect_format(old) == "json" and detect_format(hub) == "jsonl"
    db = tmp_path / "s.duckdb"
    counts = _ingest(db, old)
    assert (counts.read, counts.stored) == (4, 4)
    counts = _ingest(db, hub)  # the same four events, delivered again through Event Hub
    assert (counts.read, counts.stored, counts.duplicates) == (4, 0, 4)


def test_gzip_of_any_container(tmp_path):
    with gzip.open(tmp_path / "PT1H.json.gz", "wt") as f:
        f.write("\n".join(RECORDS) + "\n")
    counts = _ingest(tmp_path / "s.duckdb", tmp_path / "PT1H.json.gz")
    assert counts.stored == 4


def test_log_analytics_csv_export_any_column_order_booleans_as_digits(tmp_path):
    header = ["Fqdn", "TimeGenerated [UTC]", "Action", "SourceIp", "IsTlsInspected", "Protocol", "DestinationPort",
              "SourcePort", "Rule", "_ResourceId", "Type", "IsExplicitProxyRequest", "TenantId"]
    path = tmp_path / "export.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerow(["api.example.com", "11/26/2025, 2:16:47.139 PM", "Allow", "10.1.0.4", "1", "HTTPS", "443", "50001",
                    "allow-api ", FIREWALL_ID.lower(), "AZFWApplicationRule", "0", "t"])
        w.writerow(["x.example.com", "2025-11-26T14:17:00Z", "Deny", "10.1.0.5", "0", "HTTPS", "443", "50002",
                    "", FIREWALL_ID.lower(), "AZFWApplicationRule", "0", "t"])
        f.write("too,few\n")
    assert detect_format(path) == "csv"
    db = tmp_path / "s.duckdb"
    counts = _ingest(db, path)
    assert (counts.read, counts.stored, counts.quarantined) == (3, 2, 1)
    con = store.connect(db, read_only=True)
    got = rows(con, "SELECT * FROM flows ORDER BY time")
    quarantined = rows(con, "SELECT * FROM quarantine")
    con.close()
    assert got[0]["time"] == datetime(2025, 11, 26, 14, 16, 47, 139000)
    assert got[0]["is_tls_inspected"] is True and got[0]["rule"] == "allow-api"
    assert got[1]["action_reason"] == "Default Action"
    assert "malformed CSV line" in quarantined[0]["reason"] and quarantined[0]["raw"] == "too,few"


def test_csv_named_after_its_table_needs_no_type_column(tmp_path):
    path = tmp_path / "AZFWNetworkRule.csv"
    path.write_text("TimeGenerated,Protocol,SourceIp,SourcePort,DestinationIp,DestinationPort,Action,ActionReason\n"
                    "2025-11-26T14:17:00Z,UDP,10.1.0.4,40000,91.189.91.157,123,Deny,Default Action\n")
    counts = _ingest(tmp_path / "s.duckdb", path)
    assert counts.stored == 1


def test_csv_exports_in_one_run_each_quarantine_their_own_lines_at_their_positions(tmp_path, monkeypatch):
    """Two exports read in one run, each in several batches: every refused row and malformed line is
    quarantined once, under its own file, at its own line (rows are numbered across batches)."""
    from dataclasses import replace

    from egresslens.sources.batch import Limits

    parts = replace(Limits.from_env(), part_rows=2)
    header = "TimeGenerated,Protocol,SourceIp,SourcePort,DestinationIp,DestinationPort,Action,#row"
    good = "2025-11-26T14:17:0{i},UDP,10.1.0.4,4000{i},91.189.91.157,123,Deny,x"
    exports = tmp_path / "exports"
    exports.mkdir()
    lines = {
        "AZFWNetworkRule.csv": [header, *(good.format(i=i) for i in range(4)),
                                "2025-11-26T14:17:09Z,UDP,10.1.0.4,99999,91.189.91.157,123,Deny,x", "too,few"],
        "network-2.csv": [header.replace("#row", "Type"), "oops",
                          *(good.format(i=i).replace(",x", ",AZFWNetworkRule").replace("4000", "5000") for i in range(3))],
    }
    for name, text in lines.items():
        (exports / name).write_text("\n".join(text) + "\n")
    db = tmp_path / "s.duckdb"
    counts = _ingest(db, exports, limits=parts)
    assert (counts.read, counts.stored, counts.quarantined) == (10, 7, 3)
    con = store.connect(db, read_only=True)
    quarantined = rows(con, "SELECT source, position, raw, reason FROM quarantine ORDER BY source, position")
    con.close()
    assert [(Path(q["source"]).name, q["position"], q["raw"]) for q in quarantined] == [
        ("AZFWNetworkRule.csv", 6, lines["AZFWNetworkRule.csv"][5]), ("AZFWNetworkRule.csv", 7, "too,few"),
        ("network-2.csv", 2, "oops")]
    assert "port" in quarantined[0]["reason"] and "malformed CSV line" in quarantined[1]["reason"]
    assert _ingest(db, exports, force=True, limits=parts).stored == 0


def test_log_analytics_query_api_json(tmp_path):
    response = {"tables": [{"name": "PrimaryResult", "columns": [
        {"name": "TimeGenerated", "type": "datetime"}, {"name": "Type", "type": "string"},
        {"name": "SourceIp", "type": "string"}, {"name": "SourcePort", "type": "int"},
        {"name": "QueryName", "type": "string"}, {"name": "QueryType", "type": "string"},
        {"name": "ResponseCode", "type": "string"}, {"name": "DnssecOkBit", "type": "bool"},
        {"name": "RequestDurationSecs", "type": "real"}, {"name": "_ResourceId", "type": "string"}],
        "rows": [["2025-11-26T14:16:47.1397390Z", "AZFWDnsQuery", "10.1.0.4", 5353, "Example.COM.", "A", "NOERROR", False, 0.0012, "/x/fw"],
                 ["2025-11-26T14:16:48Z", "AZFWDnsQuery", "10.1.0.4", "5354", "b.example.com.", "TXT", "NXDOMAIN", "true", "0.5", "/x/fw"]]}]}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(response))
    db = tmp_path / "s.duckdb"
    counts = _ingest(db, path)
    assert counts.stored == 2
    con = store.connect(db, read_only=True)
    got = rows(con, "SELECT query_name, dnssec_ok, duration_s FROM dns_queries ORDER BY query_name")
    con.close()
    assert got == [{"query_name": "b.example.com", "dnssec_ok": True, "duration_s": 0.5},
                   {"query_name": "example.com", "dnssec_ok": False, "duration_s": 0.0012}]


def test_truncated_json_document_is_quarantined_whole(tmp_path):
    path = tmp_path / "PT1H.json"
    text = json.dumps({"records": [json.loads(r) for r in RECORDS]}, indent=1)[:-40]
    path.write_text(text)
    counts = _ingest(tmp_path / "s.duckdb", path)
    assert (counts.read, counts.quarantined) == (1, 1)


def test_reingest_adds_nothing_even_when_forced(tmp_path):
    blob = tmp_path / "logs" / "PT1H.json"
    blob.parent.mkdir()
    blob.write_text("\n".join(RECORDS + ["{broken"]) + "\n")
    db = tmp_path / "s.duckdb"
    first = _ingest(db, tmp_path / "logs")
    assert (first.read, first.stored, first.quarantined) == (5, 4, 1)
    again = _ingest(db, tmp_path / "logs")
    assert again.read == 0  # unchanged file: skipped
    forced = _ingest(db, tmp_path / "logs", force=True)
    assert (forced.read, forced.stored, forced.duplicates, forced.quarantined) == (5, 0, 5, 0)
    assert count_rows(db, "flows") == 3 and count_rows(db, "quarantine") == 1


def test_a_growing_blob_is_read_again_without_duplicates(tmp_path):
    blob = tmp_path / "PT1H.json"
    blob.write_text("\n".join(RECORDS[:2]) + "\n")
    db = tmp_path / "s.duckdb"
    assert _ingest(db, blob).stored == 2
    with open(blob, "a") as f:
        f.write("\n".join(RECORDS[2:]) + "\n")
    second = _ingest(db, blob)
    assert (second.stored, second.duplicates) == (2, 2)


def test_ingest_runs_record_the_invariant(tmp_path):
    blob = tmp_path / "PT1H.json"
    blob.write_text("\n".join(RECORDS + ["nope", ""]) + "\n")
    db = tmp_path / "s.duckdb"
    _ingest(db, blob)
    con = store.connect(db, read_only=True)
    run = rows(con, "SELECT * FROM ingest_runs")[0]
    con.close()
    assert run["status"] == "completed"
    assert run["records_read"] == run["stored"] + run["duplicates"] + run["quarantined"] == 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.text(max_size=200).filter(lambda s: "\n" not in s and "\r" not in s),
    st.sampled_from(RECORDS).map(lambda r: r[: len(r) // 2]),  # truncated JSON
    st.sampled_from(RECORDS),
    st.builds(lambda t: legacy_record(t), st.text(max_size=120).filter(lambda s: "\n" not in s)),
), min_size=1, max_size=30))
def test_garbage_never_crashes_and_every_record_is_accounted_for(con, lines):
    from conftest import ingest_raw

    lines = [line for line in lines if line.strip()]
    if not lines:
        return
    counts = ingest_raw(con, lines)
    assert counts.read == len(lines)
    assert counts.balanced


# -- a run killed mid-way, then resumed ------------------------------------------------------------

def _write_big_archive(directory: Path, files: int, lines_per_file: int, compact: bool = False) -> int:
    records = [json.loads(r) for r in RECORDS if '"AZFWNetworkRule"' in r]
    base = records[0]
    n = 0
    for i in range(files):
        path = directory / f"h={i:02d}" / "PT1H.json"
        path.parent.mkdir(parents=True)
        with open(path, "w") as f:
            for j in range(lines_per_file):
                rec = dict(base, time=f"2026-03-02T{i % 24:02d}:{j // 600 % 60:02d}:{j % 60:02d}.{j:06d}Z")
                rec["properties"] = dict(base["properties"], SourcePort=1024 + j % 60000, DestinationPort=1 + i)
                f.write(json.dumps(rec, separators=(",", ":") if compact else None) + "\n")
                n += 1
    return n


@pytest.mark.slow
@pytest.mark.parametrize("compact", [False, True], ids=["line reader", "duckdb pieces"])
def test_killed_run_resumes_with_exact_counts(tmp_path, compact):
    """Killed mid-way, the next run goes on after the last committed batch: line-reader batches, or (blobs
    as Azure writes them, compact and larger than a whole read) the pieces DuckDB reads."""
    logs = tmp_path / "logs"
    logs.mkdir()
    total = _write_big_archive(logs, files=6, lines_per_file=60_000, compact=compact)
    db = tmp_path / "s.duckdb"
    env = dict(os.environ, EGRESSLENS_CHUNK_BYTES=str(4 << 20))
    cmd = [sys.executable, "-m", "egresslens.cli", "ingest", "files", str(logs), "--db", str(db), "--quiet"]
    wal = Path(str(db) + ".wal")
    # kill once the store or its WAL has grown: a batch's rows are written to the store file before its
    # commit, so a kill can still come before the first commit; then the kill comes later, in a new store
    for grown in (8 << 20, 12 << 20, 16 << 20, 24 << 20):
        for leftover in (db, wal, *tmp_path.glob(".s.duckdb.piece-*")):
            leftover.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            size = (db.stat().st_size if db.exists() else 0) + (wal.stat().st_size if wal.exists() else 0)
            if size > grown:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stored = count_rows(db, "flows")
        if stored:
            break
    assert 0 < stored < total, "the run should have been killed mid-way"
    scratch = list(tmp_path.glob(".s.duckdb.piece-*"))
    assert bool(scratch) == compact, "the pieces' scratch copies, left by the killed run"
    result = subprocess.run(cmd[:-1] + ["--json"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["duplicates"] == 0  # resumed after the last committed batch, not from the start
    assert summary["records_read"] == total - stored
    assert count_rows(db, "flows") == total
    assert not list(tmp_path.glob(".s.duckdb.piece-*"))
    con = store.connect(db, read_only=True)
    statuses = [r[0] for r in con.execute("SELECT status FROM ingest_runs ORDER BY run_id").fetchall()]
    con.close()
    assert statuses == ["interrupted", "completed"]


def test_archive_blobs_are_read_hour_by_hour_across_every_path_given(tmp_path):
    """`ingest files <one container> <another>` reads as `ingest files <their parent>`: hour by hour across
    the categories, so each batch spans a short time and de-duplicates against a small slice of the store
    (read container after container, a later category's batches would span the whole day already stored)."""
    logs = tmp_path / "logs"
    simulate_to_dir(logs, hours=3, events_per_hour=40, seed=1, fmt="structured")
    containers = sorted(p for p in logs.iterdir() if p.is_dir())
    assert len(containers) > 2
    by_parent = [f for f in discover([logs]) if blob_hour(f.as_posix())]
    by_container = discover(containers)
    assert by_container == by_parent
    hours = [blob_hour(f.as_posix()) for f in by_container]
    assert hours == sorted(hours) and len(set(hours)) == 3
    b, a = tmp_path / "b.jsonl", tmp_path / "a.jsonl"
    b.write_text(RECORDS[0] + "\n"), a.write_text(RECORDS[1] + "\n")
    assert discover([b, containers[0], a])[:2] == [b, a], "other files in the order given, before the archive"


def test_an_event_id_is_the_md5_of_its_canonical_text_as_first_defined(tmp_path):
    """The id's definition never changes (a re-ingest of old logs must find their events): the table's name
    and every canonical column as text, NULL as chr(0), joined by chr(31), MD5 read as a 128-bit number."""
    blob = tmp_path / "PT1H.json"
    blob.write_text("\n".join(RECORDS) + "\n")
    db = tmp_path / "s.duckdb"
    assert _ingest(db, blob).stored == 4
    con = store.connect(db, read_only=True)
    for table in ("flows", "dns_queries", "threats"):
        text = (f"concat_ws(chr(31), '{table}', "
                + ", ".join(f"coalesce(CAST({c} AS VARCHAR), chr(0))" for c in canonical_columns(TABLES_BY_NAME[table]))
                + ")")
        (differ,) = con.execute(f"SELECT count(*) FILTER (event_id <> md5_number({text})::UUID) "
                                   f"FROM {table}").fetchall()[0]
        assert differ == 0, table
    assert con.execute("SELECT count(*) FROM flows").fetchall()[0][0] >= 1
    con.close()


def test_a_store_with_event_ids_as_md5_text_is_upgraded_and_keeps_every_event_once(tmp_path):
    """Stores written before event ids became UUIDs held the MD5 as 32 hex characters: opened for writing, they
    are upgraded in place to the same digests, so a re-ingest of the same logs adds nothing."""
    blob = tmp_path / "PT1H.json"
    blob.write_text("\n".join(RECORDS) + "\n")
    db = tmp_path / "s.duckdb"
    assert _ingest(db, blob).stored == 4
    con = store.connect(db)
    ids = sorted(str(i) for (i,) in con.execute("SELECT event_id FROM flows").fetchall())
    for table in ("flows", "dns_queries", "threats"):  # as the earlier version wrote them: md5(...) as text
        con.execute(f"ALTER TABLE {table} ALTER COLUMN event_id SET DATA TYPE VARCHAR USING "
                    f"md5(concat_ws(chr(31), '{table}', "
                    + ", ".join(f"coalesce(CAST({c} AS VARCHAR), chr(0))" for c in canonical_columns(TABLES_BY_NAME[table]))
                    + "))")
    assert len(con.execute("SELECT any_value(event_id) FROM flows").fetchall()[0][0]) == 32
    con.close()
    forced = _ingest(db, blob, force=True)
    assert (forced.read, forced.stored, forced.duplicates) == (4, 0, 4)
    con = store.connect(db, read_only=True)
    assert con.execute("SELECT DISTINCT typeof(event_id) FROM flows").fetchall() == [("UUID",)]
    assert sorted(str(i) for (i,) in con.execute("SELECT event_id FROM flows").fetchall()) == ids
    con.close()
