"""No line a person reads or a tool diffs ends in spaces: every format of every command, written to a
file (--out) or printed, and the documentation's committed examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from reportdata import simulated_store
from typer.testing import CliRunner

from egresslens.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("trailing"))


def _padded(text: str) -> list[str]:
    return [line for line in text.splitlines() if line != line.rstrip()]


def _outputs(db: Path, logs: Path, out: Path):
    """(name, text) of every format each command writes, through --out and on standard output."""
    policy = ["--policy", str(logs / "policy.json")]
    runs = [(f"recommend {f}", ["recommend", *policy, "--format", f])
            for f in ("table", "markdown", "json", "az", "draft", "terraform", "bicep")]
    runs += [(f"snat {f}", ["snat", "--format", f]) for f in ("table", "json", "csv")]
    runs += [(f"dns {f}", ["dns", "--format", f]) for f in ("table", "json")]
    runs += [(f"sql {f}", ["sql", "SELECT * FROM flows LIMIT 3", "--format", f])
             for f in ("table", "line", "csv", "json", "markdown")]
    runs += [(f"report {f}", ["report", *policy, "--format", f]) for f in ("markdown", "json")]
    runner = CliRunner()
    for name, args in runs:
        if args[0] != "report":  # the report always writes a file (report.md by default)
            printed = runner.invoke(app, [*args, "--db", str(db)], env={"COLUMNS": "80"})
            assert printed.exit_code in (0, 1, 7), (name, printed.output)
            yield f"{name} (printed)", printed.stdout
        target = out / re.sub(r"\W+", "-", name)
        written = runner.invoke(app, [*args, "--db", str(db), "--out", str(target)])
        assert written.exit_code in (0, 1, 7), (name, written.output)
        yield f"{name} (--out)", target.read_text(encoding="utf-8")


def test_no_output_line_ends_in_spaces_in_any_format(store, tmp_path):
    db, logs = store
    seen = 0
    for name, text in _outputs(db, logs, tmp_path):
        assert text.strip(), name
        assert _padded(text) == [], (name, _padded(text)[:3])
        seen += 1
    assert seen == 2 * 19 - 2  # 19 command formats, each printed and written (the report: written only)
    json.loads((tmp_path / "recommend-json").read_text())  # the files are what they say


def test_the_committed_examples_and_docs_end_no_line_in_spaces():
    files = [p for p in DOCS.rglob("*") if p.is_file() and p.suffix in (".md", ".txt", ".sh", ".tf", ".bicep", ".json")]
    files.append(DOCS.parent / "README.md")
    assert len(files) > 10
    padded = {p.name: _padded(p.read_text(encoding="utf-8"))[:2] for p in files if _padded(p.read_text(encoding="utf-8"))}
    assert padded == {}
