"""`egresslens nightly` end to end on simulated files: twice in a row (the second run incremental), one run
at a time, and a failed ingest that is said out loud instead of a quiet report on stale data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime

import pytest
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.cli import app
from egresslens.nightly import lock, prune
from egresslens.simulate import generate, write

runner = CliRunner()


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("nightly") / "logs"
    write(generate(hours=30, events_per_hour=800, seed=9, start=datetime(2026, 3, 1)), out, fmt="structured",
          layout="storage")
    return out


def _nightly(out_dir, db, *args):
    return runner.invoke(app, ["nightly", "--out", str(out_dir), "--db", str(db), "--since", "24h",
                               "--compare-to", "6h", *args])


def test_two_runs_in_a_row_keep_dated_reports_and_the_second_ingests_nothing_new(logs, tmp_path):
    out, db = tmp_path / "out", tmp_path / "s.duckdb"
    files = [a for p in sorted(logs.iterdir()) if p.is_dir() for a in ("--files", str(p))]
    first = _nightly(out, db, *files)
    assert first.exit_code == exitcodes.CRITICAL, first.output  # the simulation holds threat-intel hits
    assert "ingest files: run 1" in first.output and "(0 unchanged)" in first.output
    latest = json.loads((out / "latest.json").read_text())
    assert (out / "latest.html").read_text().startswith("<!DOCTYPE html>")
    assert latest["exit_code"] == exitcodes.CRITICAL and latest["banner"] == []
    dated = sorted((out / "reports").glob("egresslens-*.html"))
    assert len(dated) == 1 and dated[0].with_suffix(".json").exists()
    # the reports share one plotly.js, beside the dated ones and beside latest.html (a link into .latest/)
    shared = re.search(r'<script nonce="[^"]+" src="(plotly-[0-9.]+\.min\.js)"></script>', dated[0].read_text()).group(1)
    assert (out / "reports" / shared).stat().st_size > 1_000_000 and (out / shared).exists()
    assert dated[0].stat().st_size < 1_000_000 and "* plotly.js v" not in dated[0].read_text()

    second = _nightly(out, db, *files)
    assert second.exit_code == exitcodes.CRITICAL, second.output
    line = next(x for x in second.output.splitlines() if x.startswith("ingest files: run 2"))
    files_n = line.split(", ")[1].split(" files")[0]
    assert f"({files_n} unchanged)" in line and "stored 0" in line
    runs = json.loads((out / "latest.json").read_text())["sections"]["freshness"]["tables"]["Last ingest runs"]["head"]
    assert [r["status"] for r in runs] == ["completed", "completed"]


def test_the_old_spelling_out_dir_and_self_contained_reports(logs, tmp_path):
    out, db = tmp_path / "out", tmp_path / "s.duckdb"
    result = runner.invoke(app, ["nightly", "--out-dir", str(out), "--db", str(db), "--files",
                                 str(logs / "insights-logs-azfwnetworkrule"), "--self-contained", "--json"])
    doc = json.loads(result.stdout.splitlines()[0])
    assert doc["exit_code"] == result.exit_code and (out / "latest.html").exists()
    assert "* plotly.js v" in (out / "latest.html").read_text() and not list(out.glob("plotly-*.js"))


def test_a_failed_ingest_is_reported_and_exits_non_zero_with_the_last_good_ingest_shown(logs, tmp_path):
    out, db = tmp_path / "out", tmp_path / "s.duckdb"
    good = _nightly(out, db, "--files", str(logs / "insights-logs-azfwnetworkrule"))
    assert good.exit_code in (exitcodes.OK, exitcodes.FINDINGS, exitcodes.CRITICAL), good.output
    last_good = json.loads((out / "latest.json").read_text())["sections"]["freshness"]["summary"]["last_good_ingest"]
    bad = _nightly(out, db, "--files", str(tmp_path / "no-such-dir"))
    assert bad.exit_code == exitcodes.INPUT_ERROR
    assert "ingest of files failed" in bad.output and "Traceback" not in bad.output
    latest = json.loads((out / "latest.json").read_text())
    assert latest["exit_code"] == exitcodes.INPUT_ERROR
    assert "ingest of files failed" in latest["banner"][0] and "last good ingest" in latest["banner"][0]
    assert latest["sections"]["freshness"]["summary"]["last_good_ingest"] == last_good
    assert "ingest of files failed" in (out / "latest.html").read_text()


def test_a_second_run_while_one_holds_the_lock_exits_busy_in_one_sentence(tmp_path):
    out = tmp_path / "out"
    with lock(out):  # a run in progress (another process would hold the same kernel lock)
        proc = subprocess.run([sys.executable, "-m", "egresslens.cli", "nightly", "--out-dir", str(out),
                               "--db", str(tmp_path / "s.duckdb")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == exitcodes.BUSY
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another nightly run" in lines[0] and "Traceback" not in proc.stderr
    assert not (out / "latest.html").exists()


def test_a_second_run_into_another_directory_from_the_same_store_exits_busy_in_one_sentence(tmp_path):
    db = tmp_path / "s.duckdb"
    with lock(tmp_path / "first-out", db):  # a run writing its reports elsewhere from the same store
        proc = subprocess.run([sys.executable, "-m", "egresslens.cli", "nightly", "--out-dir", str(tmp_path / "second-out"),
                               "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == exitcodes.BUSY
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"holds the store {db}" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "second-out" / "latest.html").exists()


def test_bad_nightly_arguments_are_usage_errors(tmp_path):
    assert _nightly(tmp_path / "o", tmp_path / "s.duckdb", "--workspace-id", "not-a-guid").exit_code == exitcodes.USAGE
    assert _nightly(tmp_path / "o", tmp_path / "s.duckdb", "--account-url",
                    "https://acct.blob.core.windows.net").exit_code == exitcodes.USAGE


def test_dated_reports_older_than_the_keep_window_are_removed(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("egresslens-2026-01-01T0200Z.html", "egresslens-2026-03-01T0200Z.html", "notes.txt"):
        (reports / name).write_text("x")
    prune(tmp_path, 30, datetime(2026, 3, 10))
    assert sorted(p.name for p in reports.iterdir()) == ["egresslens-2026-03-01T0200Z.html", "notes.txt"]


def test_dated_reports_carry_seconds_and_a_second_run_in_the_same_second_does_not_overwrite_the_first(tmp_path):
    from egresslens.nightly import _dated

    now = datetime(2026, 3, 1, 5, 30, 12)
    first = _dated(tmp_path, now)
    assert first.name == "egresslens-2026-03-01T053012Z.html"
    first.parent.mkdir(parents=True)
    first.write_text("x")
    second = _dated(tmp_path, now)
    assert second.name == "egresslens-2026-03-01T053012Z-2.html"
    second.write_text("y")
    prune(tmp_path, 1, datetime(2026, 3, 3))
    assert list((tmp_path / "reports").iterdir()) == []  # both dated forms are read by prune
