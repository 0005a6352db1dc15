"""`egresslens ingest storage`: the storage-account archive through the real azure-storage-blob client,
against Azurite (the storage emulator from the npm registry) that these tests install and start.

No SDK mocks: blobs are uploaded, appended and rewritten in the emulator, then read back by the reader.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import FIREWALL_ID, count_rows, legacy_record, rows
from typer.testing import CliRunner

from egresslens import store
from egresslens.cli import app
from egresslens.simulate import generate, write
from egresslens.ingest import ingest_files
from egresslens.sources.sniff import blob_hour
from egresslens import ingest
from egresslens.sources.storage import HEAD_BYTES, StorageSource, container_client

REPO = Path(__file__).resolve().parent.parent
AZURITE_DIR = Path(os.environ.get("EGRESSLENS_AZURITE_DIR", REPO / ".azurite"))
# Azurite's documented development account (public, not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = (FIXTURES / "reference_records.jsonl").read_text().splitlines()
BLOB = ("resourceId=/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000001/RESOURCEGROUPS/HUB/PROVIDERS/"
        "MICROSOFT.NETWORK/AZUREFIREWALLS/FW-HUB/y=2026/m=03/d=02/h={h:02d}/m=00/PT1H.json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _azurite_bin() -> Path:
    exe = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Azurite (the storage emulator) comes from the npm registry")
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(AZURITE_DIR),
                           "azurite@3"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not exe.exists():
        pytest.fail(f"npm install azurite@3 failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return exe


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A connection string to a fresh Azurite blob service on a free loopback port."""
    exe = _azurite_bin()
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([str(exe), "--silent", "--location", str(location), "--blobHost", "127.0.0.1",
                             "--blobPort", str(port), "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"Azurite did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.1)
    try:
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def container(azurite):
    """A new, empty container; yields its ContainerClient."""
    client = container_client(f"insights-logs-t{uuid.uuid4().hex[:12]}", connection_string=azurite)
    client.create_container()
    yield client
    client.delete_container()
    client.close()


def _run(db: Path, client, prefix=None, *, force=False, progress=None, **kw):
    con = store.connect(db)
    try:
        source = StorageSource(client, prefix, **kw)
        return source.summary(ingest.run(con, source, force=force, progress=progress))
    finally:
        con.close()


def _net(i: int, minute: int = 0) -> str:
    """A distinct legacy network-rule record."""
    return legacy_record(f"TCP request from 10.1.{i // 250}.{i % 250 + 1}:{40000 + i % 20000} to 20.1.2.3:443. "
                         "Action: Allow. Rule Collection: rc. Rule: r",
                         time=f"2026-03-02T10:{minute:02d}:{i % 60:02d}.{i:07d}Z")


def _lines(ids, **kw) -> bytes:
    return "".join(_net(i, **kw) + "\n" for i in ids).encode()


# -- a simulated day ----------------------------------------------------------------------------------

def test_simulated_day_ingests_exactly_and_rerun_downloads_nothing(azurite, tmp_path):
    sc = generate(hours=24, events_per_hour=300, seed=11, start=datetime(2026, 3, 2))
    tree = tmp_path / "tree"
    files = [f for f in write(sc, tree, fmt="structured", layout="storage") if f.name == "PT1H.json"]
    by_container: dict[str, list[Path]] = {}
    for f in files:
        by_container.setdefault(f.relative_to(tree).parts[0], []).append(f)
    assert len(by_container) >= 3  # network, application, DNS, ... one container per category
    suffix = uuid.uuid4().hex[:6]
    clients = []
    for name, paths in sorted(by_container.items()):
        client = container_client(f"{name}-{suffix}"[:63], connection_string=azurite)
        client.create_container()
        for f in paths:
            client.upload_blob(f.relative_to(tree / name).as_posix(), f.read_bytes())
        clients.append(client)
    n_lines = sum(len(f.read_bytes().splitlines()) for f in files)
    n_bytes = sum(f.stat().st_size for f in files)

    db = tmp_path / "s.duckdb"
    first = [_run(db, c) for c in clients]
    assert sum(s.blobs for s in first) == len(files)
    assert sum(s.counts.read for s in first) == n_lines
    assert sum(s.counts.quarantined for s in first) == 0
    assert sum(s.bytes_downloaded for s in first) == n_bytes
    assert all(s.counts.balanced for s in first)

    # the same tree through `ingest files` stores exactly the same events
    ref = tmp_path / "ref.duckdb"
    con = store.connect(ref)
    files_counts, _, _ = ingest_files(con, [tree])
    con.close()
    assert sum(s.counts.stored for s in first) == files_counts.stored
    for table in ("flows", "dns_queries", "threats"):
        assert count_rows(db, table) == count_rows(ref, table)
    assert count_rows(db, "flows") == sc.flows.height

    again = [_run(db, c) for c in clients]
    assert sum(s.unchanged for s in again) == len(files)
    assert sum(s.bytes_downloaded for s in again) == 0 and sum(s.requests for s in again) == 0
    assert sum(s.counts.read for s in again) == 0
    con = store.connect(db, read_only=True)
    statuses = con.execute("SELECT status, source_kind FROM ingest_runs ORDER BY run_id").fetchall()
    con.close()
    assert all(s == ("completed", "storage") for s in statuses)
    for c in clients:
        c.delete_container()
        c.close()


# -- the current hour keeps growing ---------------------------------------------------------------------

def test_growing_append_blob_is_read_from_the_stored_offset(container, tmp_path):
    db = tmp_path / "s.duckdb"
    name = BLOB.format(h=10)
    blob = container.get_blob_client(name)
    blob.create_append_blob()
    first = _lines(range(0, 40))
    blob.append_block(first)
    s1 = _run(db, container)
    assert (s1.counts.read, s1.counts.stored, s1.new) == (40, 40, 1)

    more = _lines(range(40, 55))
    blob.append_block(more)
    s2 = _run(db, container)
    assert (s2.counts.read, s2.counts.stored, s2.counts.duplicates) == (15, 15, 0)
    assert s2.appended == 1 and s2.results[0].resumed_from == len(first)
    assert s2.bytes_downloaded == len(more) + HEAD_BYTES  # the new bytes plus the 1 KiB start check
    assert count_rows(db, "flows") == 55

    s3 = _run(db, container)
    assert (s3.unchanged, s3.requests, s3.counts.read) == (1, 0, 0)


def test_block_blob_reuploaded_with_more_lines_stores_only_the_new_records(container, tmp_path):
    db = tmp_path / "s.duckdb"
    name = BLOB.format(h=11)
    base = _lines(range(100, 130))
    container.upload_blob(name, base)
    assert _run(db, container).counts.stored == 30
    container.upload_blob(name, base + _lines(range(130, 140)), overwrite=True)  # new etag, same start
    s = _run(db, container)
    assert (s.appended, s.rewritten, s.counts.read, s.counts.stored) == (1, 0, 10, 10)


def test_partial_last_line_waits_for_the_next_run(container, tmp_path):
    db = tmp_path / "s.duckdb"
    name = BLOB.format(h=12)
    blob = container.get_blob_client(name)
    blob.create_append_blob()
    whole = _lines(range(200, 210))
    nxt = _net(210).encode() + b"\n"
    blob.append_block(whole + nxt[:37])  # the writer is mid-record
    s1 = _run(db, container)
    assert (s1.counts.read, s1.counts.stored, s1.counts.quarantined) == (10, 10, 0)
    con = store.connect(db, read_only=True)
    (offset, complete), = con.execute("SELECT offset_done, complete FROM ingest_sources").fetchall()
    con.close()
    assert (offset, complete) == (len(whole), True)  # read to the end; the partial line waits

    again = _run(db, container)
    assert (again.unchanged, again.requests, again.counts.read) == (1, 0, 0)  # unchanged, still partial
    blob.append_block(nxt[37:] + _lines([211]))
    s2 = _run(db, container)
    assert (s2.counts.read, s2.counts.stored, s2.counts.quarantined) == (2, 2, 0)
    assert count_rows(db, "flows") == 12


def test_trailing_record_without_newline_is_whole_and_a_final_partial_line_is_quarantined(container, tmp_path):
    db = tmp_path / "s.duckdb"
    container.upload_blob(BLOB.format(h=13), _lines(range(300, 305)) + _net(305).encode())  # no final newline
    assert _run(db, container).counts.stored == 6
    container.upload_blob(BLOB.format(h=14), _lines(range(400, 403)) + b'{"category": "AZFWNetw')
    s = _run(db, container)
    assert (s.counts.stored, s.counts.quarantined) == (3, 0)
    later = datetime.now(timezone.utc) + timedelta(hours=2)  # the hour is long over: that line is final
    s = _run(db, container, now=later)
    assert (s.counts.read, s.counts.quarantined) == (1, 1)
    assert _run(db, container, now=later).counts.read == 0


def test_rewritten_blob_is_read_again_without_duplicates(container, tmp_path):
    db = tmp_path / "s.duckdb"
    name = BLOB.format(h=15)
    container.upload_blob(name, _lines(range(500, 520)))
    assert _run(db, container).counts.stored == 20
    # same records in another order and 5 new ones: the start changed, so the whole blob is read again
    container.upload_blob(name, _lines(list(range(524, 499, -1))), overwrite=True)
    s = _run(db, container)
    assert (s.rewritten, s.counts.read, s.counts.stored, s.counts.duplicates) == (1, 25, 5, 20)
    container.upload_blob(name, _lines(range(500, 503)), overwrite=True)  # shrank
    s = _run(db, container)
    assert (s.rewritten, s.counts.read, s.counts.stored) == (1, 3, 0)
    assert count_rows(db, "flows") == 25


def test_bad_line_is_quarantined_and_documents_and_gzip_are_read(container, tmp_path):
    db = tmp_path / "s.duckdb"
    container.upload_blob(BLOB.format(h=16), _lines(range(600, 603)) + b"not json at all\n" + _lines([603]))
    records = [json.loads(r) for r in RECORDS]
    container.upload_blob(BLOB.format(h=17).replace("y=2026", "y=2017"), json.dumps({"records": records}, indent=2))
    container.upload_blob(BLOB.format(h=18) + ".gz", gzip.compress(_lines(range(700, 710))))
    s = _run(db, container)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (4 + 1 + len(records) + 10, 18, 1)
    q = rows(db_con := store.connect(db, read_only=True), "SELECT source, position, raw FROM quarantine")
    db_con.close()
    assert q == [{"source": f"devstoreaccount1/{container.container_name}/{BLOB.format(h=16)}", "position": 4,
                  "raw": "not json at all"}]
    assert _run(db, container).unchanged == 3


def test_prefix_limits_the_listing(container, tmp_path):
    db = tmp_path / "s.duckdb"
    container.upload_blob(BLOB.format(h=1), _lines(range(800, 805)))
    container.upload_blob(BLOB.format(h=1).replace("d=02", "d=03"), _lines(range(805, 808)))
    s = _run(db, container, prefix=BLOB.split("d=02")[0] + "d=03/")
    assert (s.blobs, s.counts.stored) == (1, 3)


def test_since_skips_blobs_filed_under_older_hours(container, tmp_path):
    db = tmp_path / "s.duckdb"
    for h, ids in ((1, range(900, 903)), (20, range(903, 905)), (21, range(905, 907)), (22, range(907, 908))):
        container.upload_blob(BLOB.format(h=h), _lines(ids))
    now = datetime(2026, 3, 2, 23, 30, tzinfo=timezone.utc)
    # the window starts at 21:30: the h=21 blob (received 21:00-21:59) overlaps it, h=20 ended before
    s = _run(db, container, now=now, since=timedelta(hours=2))
    assert (s.blobs, s.counts.stored) == (2, 3)
    assert blob_hour(BLOB.format(h=20)) == datetime(2026, 3, 2, 20, tzinfo=timezone.utc)
    assert blob_hour("no-hour-in-this-name.json") is None


# -- the command line ----------------------------------------------------------------------------------

def test_cli_end_to_end_with_json_summary_and_clear_errors(azurite, container, tmp_path):
    container.upload_blob(BLOB.format(h=20), _lines(range(900, 950)) + b"{broken\n")
    db = tmp_path / "s.duckdb"
    args = ["ingest", "storage", "--connection-string", azurite, "--container", container.container_name,
            "--db", str(db), "--json"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 5, res.output  # one record quarantined
    summary = json.loads(res.stdout)
    assert (summary["records_read"], summary["stored"], summary["quarantined"], summary["blobs"]) == (51, 50, 1, 1)
    assert summary["stored_per_table"] == {"flows": 50}
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and json.loads(res.stdout)["blobs_unchanged"] == 1

    res = runner.invoke(app, args[:-1] + ["--quiet"], env={"AZURE_STORAGE_CONNECTION_STRING": azurite})
    assert res.exit_code == 0 and "1 blobs" in res.stdout and "read 0 = stored 0" in res.stdout

    missing = runner.invoke(app, ["ingest", "storage", "--connection-string", azurite, "--container",
                                  "insights-logs-nosuchcontainer", "--db", str(db)])
    text = " ".join(missing.output.split())  # rich wraps long lines
    assert missing.exit_code == 4 and "was not found (404)" in text and "Traceback" not in text
    wrong_key = azurite.replace(DEV_KEY, "A" * 86 + "==")
    denied = runner.invoke(app, ["ingest", "storage", "--connection-string", wrong_key, "--container",
                                 container.container_name, "--db", str(db)])
    text = " ".join(denied.output.split())
    assert denied.exit_code == 4 and "(403 Authorization" in text and "Storage Blob Data Reader" in text, text
    assert "A" * 20 not in denied.output and DEV_KEY[:20] not in denied.output
    assert FIREWALL_ID  # the records carry the fixture firewall


def test_sas_url_works_and_is_never_printed(azurite, container, tmp_path):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container.upload_blob(BLOB.format(h=21), _lines(range(1000, 1010)))
    sas = generate_container_sas("devstoreaccount1", container.container_name, account_key=DEV_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    url = azurite.split("BlobEndpoint=")[1].rstrip(";") + "?" + sas
    res = CliRunner().invoke(app, ["ingest", "storage", "--account-url", url, "--container", container.container_name,
                                   "--db", str(tmp_path / "s.duckdb"), "--quiet"], env={"AZURE_STORAGE_CONNECTION_STRING": None})
    assert res.exit_code == 0, res.output
    assert "read 10 = stored 10" in res.stdout and "sig=" not in res.output
    no_list = generate_container_sas("devstoreaccount1", container.container_name, account_key=DEV_KEY,
                                     permission=ContainerSasPermissions(read=True),
                                     expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    res = CliRunner().invoke(app, ["ingest", "storage", "--account-url", url.split("?")[0] + "?" + no_list,
                                   "--container", container.container_name, "--db", str(tmp_path / "s.duckdb")],
                             env={"AZURE_STORAGE_CONNECTION_STRING": None})
    assert res.exit_code == 4 and "Traceback" not in res.output and "sig=" not in res.output, res.output


def test_killed_run_resumes_mid_blob_with_exact_counts(container, tmp_path, monkeypatch):
    import egresslens.sources.storage as storage_mod

    monkeypatch.setattr(storage_mod, "RANGE_BYTES", 4096)  # many ranges and batches per blob
    monkeypatch.setenv("EGRESSLENS_CHUNK_BYTES", "8192")
    for h in range(3):
        container.upload_blob(BLOB.format(h=h), _lines(range(2000 + 100 * h, 2100 + 100 * h)))
    db = tmp_path / "s.duckdb"
    seen = {"bytes": 0}

    def progress(total):
        def advance(n):
            seen["bytes"] += n
            if seen["bytes"] > total // 2:
                raise KeyboardInterrupt  # a kill halfway through the second blob
        return advance

    with pytest.raises(KeyboardInterrupt):
        _run(db, container, progress=progress)
    partial = count_rows(db, "flows")
    assert 0 < partial < 300
    s = _run(db, container)
    assert s.counts.read == 300 - partial and s.counts.duplicates == 0
    assert count_rows(db, "flows") == 300
    con = store.connect(db, read_only=True)
    assert [r[0] for r in con.execute("SELECT status FROM ingest_runs ORDER BY run_id").fetchall()] == ["interrupted", "completed"]
    con.close()


def test_missing_credential_is_one_sentence_quickly(azurite, tmp_path):
    from azure.core.exceptions import ClientAuthenticationError

    from egresslens.sources.storage import StorageError

    class NoCredential:  # what DefaultAzureCredential raises when nothing is signed in
        def get_token(self, *scopes, **kw):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                            "credentials.\nAttempted credentials: ...")

    url = "https://127.0.0.1:9/devstoreaccount1"  # never reached: signing in fails first
    client = container_client("insights-logs-azfwnetworkrule", account_url=url, credential=NoCredential())
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="No Azure credential could sign in .* run az login"):
        _run(tmp_path / "s.duckdb", client)
    assert time.monotonic() - t0 < 5
