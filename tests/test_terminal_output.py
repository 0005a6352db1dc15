"""What a person reads in a terminal: every command's output fits 80 and 160 columns without splitting a
number, `recommend`'s first screen holds the most urgent items, NO_COLOR and --no-color print no escape
sequence at all (not even bold) in a real terminal, and output piped to a file is plain and 80 wide."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from reportdata import simulated_store
from typer.testing import CliRunner

from egresslens.cli import app

COMMANDS = {
    "recommend": ["recommend"], "recommend show": None, "snat": ["snat"], "dns": ["dns"],
    "sql": ["sql", "SELECT action, destination_port, count(*) AS n FROM flows GROUP BY ALL ORDER BY n DESC LIMIT 8"],
    "sql wide": ["sql", "SELECT * FROM flows LIMIT 2"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("terminal")
    db, logs = simulated_store(d)
    return db, logs


def _run(args, width: int, db, **env):
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--db", str(db)], env={"COLUMNS": str(width), **env})
    assert result.exit_code in (0, 1), result.output
    return result.stdout


def _show_args(db, logs):
    out = _run(["recommend", "--policy", str(logs / "policy.json")], 160, db)
    rid = re.search(r"^([0-9a-f]{10}) ", out, re.M).group(1)
    return ["recommend", "show", rid, "--policy", str(logs / "policy.json")]


@pytest.mark.parametrize("width", [80, 160])
def test_every_command_fits_the_width_and_never_splits_a_number(store, width):
    db, logs = store
    for name, args in COMMANDS.items():
        args = args or _show_args(db, logs)
        out = _run(args, width, db)
        assert out.strip(), name
        too_long = [line for line in out.splitlines() if len(line) > width]
        assert too_long == [], (name, too_long[:3])
        assert "\x1b[" not in out  # not a terminal: plain
    # the numbers of `dns` appear whole: a count is never broken across two lines of its cell
    doc = json.loads(_run(["dns", "--json"], width, db))
    text = _run(["dns"], width, db)
    for g in doc["by_group"][:5]:
        assert f"{g['queries']:,}" in text, g
    sql = _run(COMMANDS["sql"], width, db)
    for row in CliRunner().invoke(app, [*COMMANDS["sql"], "--db", str(db), "--format", "csv"]).stdout.splitlines()[1:]:
        assert row.split(",")[2] in sql


def test_the_first_screen_of_recommend_holds_the_most_urgent_items(store):
    db, logs = store
    out = _run(["recommend", "--policy", str(logs / "policy.json")], 80, db)
    first_screen = out.splitlines()[:24]
    doc = json.loads(_run(["recommend", "--policy", str(logs / "policy.json"), "--json"], 80, db))
    urgent = [r for r in doc["recommendations"] if r["kind"] == "investigate" and r["risk"] == "high"]
    adds = [r for r in doc["recommendations"] if r["kind"].startswith("add-")]
    assert urgent and adds
    assert any(r["title"].startswith("Compromised source") for r in urgent)
    for r in urgent[:10]:
        assert any(line.startswith(r["id"]) for line in first_screen), r["title"]
    lines = out.splitlines()
    first_add = min(i for i, line in enumerate(lines) for r in adds if line.startswith(r["id"]))
    last_urgent = max(i for i, line in enumerate(lines) for r in urgent if line.startswith(r["id"]))
    assert last_urgent < first_add
    assert "\\-" not in out and "\\." not in out  # no Markdown escapes in the terminal view
    md = _run(["recommend", "--policy", str(logs / "policy.json"), "--format", "markdown"], 80, db)
    assert md.startswith("# EgressLens recommendations")


def test_an_unknown_recommendation_id_exits_3_with_one_sentence(store):
    db, _ = store
    result = CliRunner().invoke(app, ["recommend", "show", "ffffffffff", "--db", str(db)])
    assert result.exit_code == 3 and result.output.startswith("error: no recommendation 'ffffffffff'")


def _in_a_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """The bytes `egresslens ARGS` writes to a real (pseudo) terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "egresslens.cli", *args], stdout=follower, stderr=follower,
                            stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color", **env})
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(leader)
    return out


def test_no_color_and_the_no_color_flag_print_no_escape_sequence_in_a_terminal(store):
    db, _ = store
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    coloured = _in_a_terminal(["dns", "--db", str(db)], {**env})
    assert b"\x1b[" in coloured  # the test can tell: a terminal gets colour and bold by default
    assert b"\x1b[" not in _in_a_terminal(["dns", "--db", str(db)], {"NO_COLOR": "1"})
    assert b"\x1b[" not in _in_a_terminal(["dns", "--db", str(db), "--no-color"], {})
    assert b"\x1b[" not in _in_a_terminal(["recommend", "--help"], {"NO_COLOR": "1"})


def test_piped_to_a_file_the_output_is_plain_and_80_wide(store, tmp_path):
    db, _ = store
    out = tmp_path / "dns.txt"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    with out.open("w") as f:
        subprocess.run([sys.executable, "-m", "egresslens.cli", "dns", "--db", str(db)], stdout=f, env=env, timeout=120)
    text = out.read_text()
    assert "\x1b[" not in text and text.strip()
    assert max(len(line) for line in text.splitlines()) <= 80


def test_every_command_has_version_and_help_without_type_noise():
    runner = CliRunner()
    for cmd in (["recommend"], ["snat"], ["dns"], ["report"], ["drilldown"], ["nightly"], ["sql"], ["simulate"],
                ["demo"], ["ingest", "files"], ["ingest", "loganalytics"], ["ingest", "storage"], ["ingest", "metrics"]):
        version = runner.invoke(app, [*cmd, "--version"])
        assert version.exit_code == 0 and version.stdout.startswith("egresslens "), cmd
        help_text = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "100"}).stdout
        assert "<bool>" not in help_text and "<str>" not in help_text and "list[" not in help_text, cmd
    assert runner.invoke(app, ["--version"]).stdout.startswith("egresslens ")
