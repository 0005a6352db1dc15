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
        padded = [line for line in out.splitlines() if line != line.rstrip()]
        assert padded == [], (name, padded[:3])  # no line ends in spaces (a short title, a table's last cell)
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


def test_at_80_columns_each_line_keeps_what_matters_the_destination_or_the_rule(store):
    db, logs = store
    out = _run(["recommend", "--policy", str(logs / "policy.json")], 80, db)
    doc = json.loads(_run(["recommend", "--policy", str(logs / "policy.json"), "--json"], 80, db))
    lines = {line[:10]: line for line in out.splitlines() if re.match(r"[0-9a-f]{10}  ", line)}
    assert re.search(r"^id +risk +hits +what$", out, re.M)  # the columns are named
    for r in doc["recommendations"]:
        line = lines[r["id"]]
        if r["kind"].startswith("add-"):
            p = r["rule"]
            first = ([f"FQDN tag {t}" for t in p["fqdn_tags"]] + p["target_fqdns"] if p["rule_type"] == "ApplicationRule"
                     else p["destination_addresses"] + p["destination_fqdns"])[0]
            assert first in line, (line, first)  # whole: the ellipsis takes the sources instead
        elif r["kind"] in ("narrow-rule", "remove-rule"):
            assert r["existing_rule"]["rule"] in line, line
    assert any(len(r["title"]) > 50 for r in doc["recommendations"] if r["kind"].startswith("add-"))  # the case arises


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


def test_in_a_terminal_no_line_ends_in_spaces_even_among_its_style_sequences(store):
    db, _ = store
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    for cmd in ("snat", "dns"):
        raw = _in_a_terminal([cmd, "--db", str(db)], env)
        assert b"\x1b[1m" in raw  # bold table headers: their padding sits between style sequences
        for line in raw.decode().replace("\r\n", "\n").split("\n"):
            assert not re.search(r"[ \t](\x1b\[[0-9;]*m)*$", line), (cmd, line[-60:])


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


def test_every_document_a_help_text_points_to_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runner, named = CliRunner(), set()
    for cmd in (["recommend"], ["snat"], ["dns"], ["report"], ["drilldown"], ["nightly"], ["sql"], ["simulate"],
                ["demo"], ["ingest", "files"], ["ingest", "loganalytics"], ["ingest", "storage"], ["ingest", "metrics"],
                ["recommend", "show"], []):
        help_text = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "250"}).stdout
        named |= set(re.findall(r"docs/[\w./-]+\.md", help_text))
        assert "README section" not in help_text, cmd
    assert len(named) >= 5, named
    assert [d for d in sorted(named) if not (root / d).is_file()] == []


def test_one_field_per_line_breaks_a_long_value_at_its_separators_never_inside_a_token():
    from egresslens.sqlout import line

    arm = ("/subscriptions/3f1c2a9e-7b4d-4e61-9a0c-5d2e8b7f4a13/resourcegroups/rg-hub-networking-weu/providers/"
           "microsoft.network/azurefirewalls/fw-hub-weu-01")
    words = "allowed by a rule whose name is much longer than the screen is wide, so it wraps at its spaces"
    out = line(["firewall", "reason", "label"], [(arm, words, "a" * 90)], wrap=60).splitlines()
    firewall = out[:out.index(next(x for x in out if x.lstrip().startswith("reason =")))]
    assert len(firewall) > 1 and all(len(x) <= 60 for x in firewall)
    assert all(x.endswith("/") for x in firewall[:-1])  # each line ends at a separator
    assert "".join(x.strip() for x in firewall) == f"firewall = {arm}"
    reason = out[len(firewall):-1]
    assert len(reason) > 1 and " ".join(x.split(" = ", 1)[-1].strip() for x in reason) == words
    assert out[-1] == "   label = " + "a" * 90  # a token longer than the line stays whole


def test_sql_one_field_per_line_folds_an_arm_id_to_the_screen_and_loses_no_character(store, tmp_path):
    db, _ = store
    query = "SELECT firewall, icmp_type, destination_fqdn FROM flows WHERE firewall LIKE '/subscriptions/%' LIMIT 1"
    arm = CliRunner().invoke(app, ["sql", query, "--db", str(db), "--format", "csv"]).stdout.splitlines()[1].split(",")[0]
    assert len(arm) > 80 and " " not in arm
    out = _run(["sql", query, "--format", "line"], 80, db)
    written = tmp_path / "row.txt"
    _run(["sql", query, "--format", "line", "--out", str(written)], 160, db)
    for text in (out, written.read_text()):  # on the screen, and in a file (80 columns)
        lines = text.splitlines()
        assert all(len(x) <= 80 and x == x.rstrip() for x in lines), lines
        firewall = lines[:lines.index(next(x for x in lines if x.lstrip().startswith("icmp_type")))]
        assert len(firewall) > 1 and all(x.endswith("/") for x in firewall[:-1])  # broken after a separator
        assert "".join(x.strip() for x in firewall) == f"firewall = {arm}"  # every character, in order
        assert "       icmp_type =" in lines  # an empty value: no space left behind


def test_a_table_breaks_a_name_after_its_dots_and_dashes_never_inside_a_label():
    from egresslens.cliout import NUM, Col, fit_table, fold, render

    assert fold("stbackupweu01.blob.core.windows.net:443/HTTPS", 22) == [
        "stbackupweu01.blob.", "core.windows.net:443/", "HTTPS"]
    assert fold("use a private endpoint for this account", 22) == ["use a private endpoint", "for this account"]
    assert fold("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]  # a token wider than the column: split, kept
    assert fold("a" * 25, 10, split_long=False) == ["a" * 25]
    assert fold("one\n\ntwo", 10) == ["one", "", "two"]
    names = ["malware-cdn-example.com", "stbackupweu01.blob.core.windows.net", "10.244.3.17"]
    table, dropped = fit_table(None, [Col("reason", min_width=12), Col("domain", min_width=12), Col("queries", NUM),
                                      Col("detail", min_width=30)],
                               [["threat_intel", n, "1,440", "threat intelligence: Bot Networks (88 events) " * 2]
                                for n in names], 80)
    text = render(lambda c: c.print(table), width=80)
    assert not dropped and max(len(x) for x in text.splitlines()) <= 80
    domain = [x[16:30].strip() for x in text.splitlines()[2:]]  # the domain column, line by line
    for n in names:
        i = next(k for k, x in enumerate(domain) if n.startswith(x) and x)
        parts = [domain[i]]
        while "".join(parts) != n:
            i += 1
            assert domain[i] and n.startswith("".join(parts) + domain[i]), (n, parts, domain[i])
            parts.append(domain[i])
        assert all(p[-1] in ".-" for p in parts[:-1]), parts  # each line ends after a dot or a dash
    assert "1,440" in text


def test_on_a_narrow_screen_each_snat_fix_is_printed_under_the_table_a_line_per_option(tmp_path):
    db, _ = simulated_store(tmp_path, hours=24, events_per_hour=300, batch=True)
    doc = json.loads(_run(["snat", "--since", "30d", "--json"], 80, db))
    fixes = [f["fix"] for f in doc["findings"]]
    assert fixes  # the nightly backup's destination is over the warning level
    for width in (80, 100):
        out = _run(["snat", "--since", "30d"], width, db)
        dropped = re.search(r"not shown to fit the width: ([^(]*)", out.replace("\n", " "))
        assert dropped is None or "fix" not in dropped.group(1)  # shown, not left out
        below = out.split("\nFixes\n", 1)[1]
        options = re.split(r"\n  - ", "\n" + below)[1:]
        as_read = [" ".join(line.strip() for line in o.splitlines() if not line.startswith(("warning", "critical")))
                   for o in options]
        assert as_read == [part for fix in fixes for part in fix.split("; ")]  # every option, whole, in order
        assert max(len(line) for line in out.splitlines()) <= width
    wide = _run(["snat", "--since", "30d"], 200, db)
    assert "\nFixes\n" not in wide and "fix" in wide.split("Destinations near SNAT exhaustion", 1)[1]


def test_on_a_narrow_screen_a_compromised_sources_evidence_is_printed_under_the_table_a_line_each(store):
    db, _ = store
    doc = json.loads(_run(["dns", "--json"], 80, db))
    sources = doc["suspicion"]["sources"]
    assert sources  # the simulated day's compromised pod
    out = _run(["dns"], 80, db)
    table = out.split("Compromised sources", 1)[1].split("\nEvidence\n", 1)[0]
    assert "evidence" not in table  # no column a few words wide
    below = out.split("\nEvidence\n", 1)[1].split("\nPer source group", 1)[0]
    for s in sources:
        assert f"\n{s['source_ip']}\n" in "\n" + below
        as_read = " ".join(line.strip() for line in below.splitlines())
        for e in s["evidence"][:5]:
            assert f"- {e['kind']}: {e['detail']}" in as_read  # whole, on lines of its own
    wide = _run(["dns"], 200, db)
    assert "\nEvidence\n" not in wide and "evidence" in wide.split("Compromised sources", 1)[1]
