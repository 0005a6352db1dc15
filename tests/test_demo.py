"""`make demo` shows every feature on one simulated day, says so, and the README's quick start goes on
from its output: a SNAT warning (the VM spoke's nightly backup), a compromised pod with its drilldown,
rules to narrow, and recommend with the demo's policy."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egresslens.cli import app
from egresslens.simulate import generate
from egresslens.simulate.batch import BATCH_FQDN, BATCH_MINUTES, BATCH_PER_MINUTE

README = Path(__file__).resolve().parents[1] / "README.md"
runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`egresslens demo` into ./demo-output of a fresh directory (as `make demo` does), fewer events an hour."""
    cwd = tmp_path_factory.mktemp("demo")
    result = runner.invoke(app, ["demo", "--out", str(cwd / "demo-output"), "--events-per-hour", "2000"],
                           env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output[-3000:]
    return cwd, result.output


def test_the_batch_job_needs_more_ports_than_the_warning_level_of_one_public_ip_whatever_the_traffic():
    quiet = generate(hours=6, events_per_hour=200, seed=3, hot_share=0.0, batch=True)
    job = quiet.truth["snat_batch_job"]
    rows = quiet.flows.filter(quiet.flows["destination_fqdn"] == BATCH_FQDN)
    assert set(rows["action"]) == {"Allow"} and set(rows["rule"]) == {job["rule"]}
    assert set(rows["source_ip"]) == set(job["sources"]) and len(job["connections_per_minute"]) == BATCH_MINUTES
    assert rows.height == sum(job["connections_per_minute"])
    # at the firewall's 240 s hold, ~1,100 new connections a minute need ~4,400 of 4,992 ports: warning, not critical
    peak = max(job["connections_per_minute"]) * 4 / 4_992
    assert 0.8 <= peak < 0.95 and BATCH_PER_MINUTE * 4 / 4_992 >= 0.8
    assert generate(hours=2, events_per_hour=200, seed=3).truth["snat_batch_job"] is None  # only when asked for


def test_the_demo_shows_a_snat_warning_a_compromised_pod_and_rules_to_narrow_and_says_so(demo):
    cwd, output = demo
    shown = " ".join(output.split()[output.split().index("shows") + 1:])
    assert re.search(rf"SNAT warning: {re.escape(BATCH_FQDN)}:443 peaks at (8\d|9[0-4])% of 4,992 ports", shown)
    assert "compromised pod 10.244.3.17 (" in shown and "drilldown-10.244.3.17.html" in shown
    assert re.search(r"\d+ rule\(s\) to narrow, e\.g\. \S+/\S+/\S+ \(egresslens recommend show [0-9a-f]{10}", shown)
    assert "egresslens recommend --policy" in shown and "Investigate: never allowed" in output
    # the report says the same: a SNAT warning, a compromised source, rules to narrow
    report = json.loads((cwd / "demo-output" / "report.json").read_text())
    messages = [(f["severity"], f["message"]) for f in report["findings"]]
    assert any(s == "finding" and m.startswith(f"SNAT warning: {BATCH_FQDN}") for s, m in messages), messages
    assert any(s == "critical" and "10.244.3.17 looks compromised" in m for s, m in messages)
    assert any("rules to narrow" in m for _, m in messages)
    page = (cwd / "demo-output" / "drilldown-10.244.3.17.html").read_text()
    assert 'data-verdict="compromised"' in page and "Isolate it:" in page


def _quick_start() -> list[str]:
    """The egresslens commands of the README's quick start that run on the demo's output."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Quick start\n+```sh\n(.*?)```", text, re.S).group(1)
    lines = []
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        if command.startswith("az login"):
            break  # from here on: the reader's own firewall
        if command.startswith("egresslens "):
            lines.append(command)
    return lines


def test_the_readme_quick_start_runs_on_the_demo_output_with_its_policy(demo, monkeypatch):
    cwd, _ = demo
    monkeypatch.chdir(cwd)
    env = {"EGRESSLENS_DB": "demo-output/egresslens.duckdb", "COLUMNS": "100", "NO_COLOR": "1"}
    commands = _quick_start()
    assert len(commands) >= 6
    recommend = [c for c in commands if c.startswith("egresslens recommend")]
    assert recommend and all("--policy demo-output/logs/policy.json" in c for c in recommend)
    listing = runner.invoke(app, shlex.split(recommend[0])[1:], env=env)
    first_id = re.search(r"^([0-9a-f]{10}) ", listing.stdout, re.M).group(1)
    for command in commands:
        args = shlex.split(command.replace(" ID ", f" {first_id} "))[1:]
        result = runner.invoke(app, args, env=env)
        assert result.exit_code in (0, 1), (command, result.output[-2000:])
        assert "no policy" not in result.output and "n/a (no policy)" not in result.output, command
    assert Path("plan.tf").read_text().count('resource "azurerm_firewall_policy_rule_collection_group"') >= 1
    assert 'data-verdict="compromised"' in Path("drilldown.html").read_text()
