"""The command line as a user drives it: help, ingest summary line, read-only SQL, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from egresslens.cli import app

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"


def test_every_command_has_help():
    for args in (["--help"], ["ingest", "--help"], ["ingest", "files", "--help"], ["sql", "--help"],
                 ["simulate", "--help"], ["demo", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_ingest_files_prints_one_line_summary_and_exit_code(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "PT1H.json").write_text((FIXTURES / "reference_records.jsonl").read_text() + "garbage\n")
    db = tmp_path / "s.duckdb"
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet"])
    assert result.exit_code == 5  # some records quarantined
    assert "read 5 = stored 4 + duplicates 0 + quarantined 1" in result.output
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--json", "--force"])
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["records_read"] == 5 and summary["duplicates"] == 5 and summary["stored"] == 0


def test_missing_input_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["ingest", "files", str(tmp_path / "nope"), "--db", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 3
    assert "no such file or directory" in result.output


def test_sql_is_read_only_and_speaks_csv_and_json(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "PT1H.json").write_text((FIXTURES / "reference_records.jsonl").read_text())
    db = tmp_path / "s.duckdb"
    runner.invoke(app, ["ingest", "files", str(logs), "--db", str(db), "--quiet"])
    monkeypatch.setenv("EGRESSLENS_DB", str(db))
    result = runner.invoke(app, ["sql", "SELECT kind, count(*) AS n FROM flows GROUP BY 1 ORDER BY 1", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"kind": "application", "n": 1}, {"kind": "nat", "n": 1}, {"kind": "network", "n": 1}]
    result = runner.invoke(app, ["sql", "SELECT query_name FROM dns_queries", "--format", "csv"])
    assert result.output.splitlines() == ["query_name", "test.us.endpoint.security.microsoft.com"]
    result = runner.invoke(app, ["sql", "DELETE FROM flows"])
    assert result.exit_code == 2 and "read-only" in result.output.lower()


def test_sql_without_a_store_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["sql", "SELECT 1", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 3 and "egresslens demo" in result.output


def test_simulate_then_ingest_through_the_console_script(tmp_path):
    out = tmp_path / "sim"
    subprocess.run([sys.executable, "-m", "egresslens.cli", "simulate", "--out", str(out), "--hours", "1",
                    "--events-per-hour", "500", "--seed", "3", "--format", "legacy", "--layout", "eventhub",
                    "--start", "2026-03-02T00:00:00Z"], check=True, capture_output=True)
    assert (out / "truth.json").exists() and (out / "policy.json").exists()
    result = subprocess.run([sys.executable, "-m", "egresslens.cli", "ingest", "files", str(out / "eventhub"),
                             "--db", str(tmp_path / "s.duckdb"), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["quarantined"] == 0 and summary["stored"] >= 500


def test_demo_runs_offline_end_to_end(tmp_path):
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--events-per-hour", "300"])
    assert result.exit_code == 0, result.output
    assert "ingest" in result.output and "Top denied destinations" in result.output
