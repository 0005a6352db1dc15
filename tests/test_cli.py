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


def test_simulate_an_estate_ingest_it_and_recommend_per_firewall_from_its_exports(tmp_path):
    """`simulate --firewalls 3`: a parent policy with two children, IP Groups, one classic firewall, logs per
    firewall; ingested and judged offline from its exports, each proposal goes to the policy that needs it."""
    out = tmp_path / "estate"
    sim = runner.invoke(app, ["simulate", "--out", str(out), "--firewalls", "3", "--hours", "2", "--events-per-hour",
                              "600", "--seed", "5", "--start", "2026-03-02T00:00:00Z"])
    assert sim.exit_code == 0, sim.output
    policies = {p["name"]: p for p in json.loads((out / "estate" / "policies.json").read_text())}
    (parent,) = [p for p in policies.values() if p.get("childPolicies")]
    assert len(parent["childPolicies"]) == 2 and all(p.get("basePolicy") for p in policies.values() if p is not parent)
    firewalls = json.loads((out / "estate" / "firewalls.json").read_text())
    assert sum(1 for f in firewalls if f.get("networkRuleCollections") and not f.get("firewallPolicy")) == 1
    assert json.loads((out / "estate" / "ip-groups.json").read_text())
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f["name"] for f in firewalls)
    db = tmp_path / "s.duckdb"
    ingested = runner.invoke(app, ["ingest", "files", str(out / "logs"), "--db", str(db), "--json"])
    assert ingested.exit_code == 0, ingested.output
    rec = runner.invoke(app, ["recommend", "--db", str(db), "--since", "2h", "--format", "json",
                              *[a for f in sorted((out / "estate").glob("*.json")) for a in ("--policy", str(f))]])
    assert rec.exit_code in (0, 1), rec.output
    goes_to = {r["policy"] for r in json.loads(rec.stdout)["recommendations"] if r["kind"].startswith("add-")}
    classic = next(f["name"] for f in firewalls if not f.get("firewallPolicy"))
    assert goes_to and goes_to <= set(policies) | {classic} and classic in goes_to
    assert runner.invoke(app, ["simulate", "--out", str(tmp_path / "x"), "--firewalls", "11"]).exit_code == 2
