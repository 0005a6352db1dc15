"""A store held by another process: every command says in one sentence what kind of process holds
it and exits BUSY; `ingest --wait SECONDS` waits for it to be released."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egresslens import exitcodes, store
from egresslens.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"


def hold(tmp_path, db, *, argv: list[str], seconds: float = 30, read_only: bool = False) -> subprocess.Popen:
    """A separate process that opens the store and keeps it open for `seconds`; its command line is
    `python <tmp>/<argv[0]> <argv[1:]>`, so a test can make it look like any kind of program."""
    script = tmp_path / argv[0]
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from egresslens import store
        con = store.connect({str(db)!r}, read_only={read_only})
        print("holding", flush=True)
        time.sleep({seconds})
        con.close()
    """))
    proc = subprocess.Popen([sys.executable, str(script), *argv[1:]], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


@pytest.fixture
def logs(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    (d / "PT1H.json").write_text((FIXTURES / "reference_records.jsonl").read_text())
    return d


@pytest.fixture
def db(tmp_path, logs):
    path = tmp_path / "s.duckdb"
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    return path


def one_sentence(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_second_ingest_says_an_ingest_holds_the_store_and_exits_busy(tmp_path, logs, db):
    holder = hold(tmp_path, db, argv=["egresslens", "ingest", "storage", "--container", "x"])
    try:
        result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == exitcodes.BUSY
    line = one_sentence(result)
    assert f"is locked by an `egresslens ingest storage` run (PID {holder.pid})" in line
    assert "--wait" in line


@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["recommend"], ["dns"], ["snat"], ["report", "-o", "r.html"],
                                  ["drilldown", "example.com", "-o", "d.html"], ["nightly", "--out-dir", "nightly-out"],
                                  ["ingest", "loganalytics", "--workspace-id", "00000000-0000-0000-0000-000000000000"],
                                  ["ingest", "metrics", "--resource-id", "/subscriptions/x", "--endpoint", "https://x"],
                                  ["ingest", "storage", "--container", "c", "--account-url", "https://a.blob.core.windows.net"]])
def test_every_command_exits_busy_in_one_sentence(tmp_path, db, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    holder = hold(tmp_path, db, argv=["notebook.py"])
    try:
        result = runner.invoke(app, [*args, "--db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == exitcodes.BUSY, result.output
    assert f"locked by a Python process such as a notebook or script (PID {holder.pid})" in one_sentence(result)


def test_readers_do_not_block_each_other_but_block_an_ingest(tmp_path, logs, db):
    holder = hold(tmp_path, db, argv=["reader.py"], read_only=True)
    try:
        assert runner.invoke(app, ["sql", "SELECT count(*) FROM flows", "--db", str(db)]).exit_code == 0
        result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet"])
        assert result.exit_code == exitcodes.BUSY
    finally:
        holder.kill()
        holder.wait()


def test_ingest_waits_for_the_holder_with_wait(tmp_path, logs, db):
    holder = hold(tmp_path, db, argv=["egresslens", "ingest", "files"], seconds=1.5)
    t0 = time.monotonic()
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet", "--force", "--wait", "30"])
    holder.wait()
    assert result.exit_code == exitcodes.OK, result.output
    assert time.monotonic() - t0 < 25


def test_ingest_gives_up_after_wait_seconds(tmp_path, logs, db):
    holder = hold(tmp_path, db, argv=["egresslens", "ingest", "files"])
    try:
        t0 = time.monotonic()
        result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet", "--wait", "1"])
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == exitcodes.BUSY
    assert 1 <= waited < 10


@pytest.mark.parametrize(("argv", "kind"), [
    (["python3", "/venv/bin/egresslens", "ingest", "files", "logs/"], "an `egresslens ingest files` run"),
    (["python3", "-m", "egresslens.cli", "recommend", "--format", "json"], "an `egresslens recommend` run"),
    (["duckdb", "egresslens.duckdb"], "the duckdb command-line client"),
    (["python3", "-m", "ipykernel_launcher", "-f", "k.json"], "a Jupyter notebook kernel"),
    (["/usr/bin/python3.12", "script.py"], "a Python process such as a notebook or script"),
    (["/opt/tool/bin/backup-agent"], "the program backup-agent"),
])
def test_the_holder_is_named_by_its_kind(argv, kind):
    assert store.process_kind(argv) == kind


@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["dns"], ["ingest", "files", "."]])
def test_a_file_that_is_not_a_store_is_one_sentence(tmp_path, args):
    db = tmp_path / "notes.duckdb"
    db.write_text("not a database\n")
    result = runner.invoke(app, [*args, "--db", str(db)])
    assert result.exit_code == exitcodes.INPUT_ERROR
    assert one_sentence(result).startswith(f"error: cannot open the store {db}: ")
