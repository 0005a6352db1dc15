"""Every failure path ends with its own documented exit code and one sentence on stderr, never a traceback
and never 1, the "findings" code: a window or hold time past any calendar, a full disk under the store or
under the output, a bad memory budget, a budget that is not enough, an unexpected error, Ctrl-C.

The full-disk tests run the command in a private mount namespace over a tmpfs of a few hundred KiB
(`unshare`, no root needed where user namespaces are allowed; skipped where they are not)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.cli import app
from egresslens.simulate import generate, write

runner = CliRunner()
CLI = [sys.executable, "-m", "egresslens.cli"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("failures") / "logs"
    write(generate(hours=8, events_per_hour=400, seed=3, start=datetime(2026, 3, 1)), out, fmt="structured",
          layout="storage")
    return out


@pytest.fixture(scope="module")
def db(logs, tmp_path_factory):
    path = tmp_path_factory.mktemp("failures-store") / "s.duckdb"
    result = runner.invoke(app, ["ingest", "files", str(logs), "--db", str(path), "--quiet"])
    assert result.exit_code in (exitcodes.OK, exitcodes.PARTIAL), result.output
    return path


def one_sentence(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


# -- windows and durations past any calendar --------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["recommend", "--since", "99999999999d"], ["dns", "--since", "99999999999d"], ["snat", "--since", "99999999999d"],
    ["report", "--since", "99999999999d"], ["report", "--compare-to", "99999999999d"],
    ["drilldown", "example.com", "--since", "99999999999d"], ["recommend", "--since", "5000000w"],
    ["snat", "--hold-time", "99999999999d"], ["snat", "--hold-time", "999999999999999999999"],
    ["snat", "--hold-time", "100000h"], ["snat", "--hold-time", "0"],
])
def test_a_window_or_a_hold_time_beyond_any_calendar_is_a_usage_error(db, tmp_path, args):
    result = cli(*args, "--db", str(db), cwd=tmp_path)
    assert result.returncode == exitcodes.USAGE, result.stderr
    line = one_sentence(result.stderr)
    assert "century" in line or "hold time" in line or "hold_time" in line


def test_nightly_refuses_a_window_beyond_any_calendar_before_touching_anything(tmp_path):
    result = cli("nightly", "--out-dir", str(tmp_path / "out"), "--db", str(tmp_path / "s.duckdb"),
                 "--since", "99999999999d")
    assert result.returncode == exitcodes.USAGE and "century" in one_sentence(result.stderr)
    assert not (tmp_path / "s.duckdb").exists()


# -- the memory budget ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["lots", "2XB", "-1GiB", "12KiB"])
def test_a_memory_budget_that_cannot_be_read_is_a_usage_error(db, value):
    result = cli("dns", "--db", str(db), env={"EGRESSLENS_MEMORY_LIMIT": value})
    assert result.returncode == exitcodes.USAGE
    assert "EGRESSLENS_MEMORY_LIMIT" in one_sentence(result.stderr)


def test_a_budget_that_is_not_enough_exits_9_naming_the_setting(db, monkeypatch):
    import egresslens.dns

    def starved(*a, **k):
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256.0 KiB")

    monkeypatch.setattr(egresslens.dns, "analyse_dns", starved)
    result = runner.invoke(app, ["dns", "--db", str(db)])
    assert result.exit_code == exitcodes.OUT_OF_MEMORY
    assert "EGRESSLENS_MEMORY_LIMIT" in result.output and "Traceback" not in result.output


# -- unexpected errors and Ctrl-C ---------------------------------------------------------------------

def test_an_unexpected_error_is_one_sentence_and_its_own_code_never_findings(db, monkeypatch):
    import egresslens.snat

    def broken(*a, **k):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(egresslens.snat, "analyse_snat", broken)
    result = runner.invoke(app, ["snat", "--db", str(db)])
    assert result.exit_code == exitcodes.INTERNAL != exitcodes.FINDINGS
    out = result.output.strip()
    assert out.count("\n") == 0 and out.startswith("error: internal error (TypeError")
    assert "EGRESSLENS_DEBUG=1" in out


def test_ctrl_c_in_an_analysis_exits_130(db, monkeypatch):
    import egresslens.dns

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(egresslens.dns, "analyse_dns", interrupted)
    result = runner.invoke(app, ["dns", "--db", str(db)])
    assert result.exit_code == exitcodes.INTERRUPTED


# -- a full disk ------------------------------------------------------------------------------------

def _small_disk_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_small_disk = pytest.mark.skipif(not _small_disk_available(), reason="no user namespaces to mount a small tmpfs")


def on_small_disk(mount: Path, kib: int, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `commands` one after the other with a tmpfs of `kib` KiB mounted at `mount`; each one's
    exit code, stdout and stderr (separated by markers)."""
    import shlex

    mount.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o size={kib}k tmpfs {shlex.quote(str(mount))} || exit 99\n"
    for i, c in enumerate(commands):
        script += (f"{shlex.join(c)} >{mount}.out{i} 2>{mount}.err{i}; echo $? >{mount}.rc{i}\n")
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], check=True, timeout=600)
    return [subprocess.CompletedProcess(c, int(Path(f"{mount}.rc{i}").read_text()), Path(f"{mount}.out{i}").read_text(),
                                        Path(f"{mount}.err{i}").read_text()) for i, c in enumerate(commands)]


@needs_small_disk
def test_a_full_disk_under_the_store_exits_8_and_the_run_stores_the_same_clean_sentence(logs, tmp_path):
    disk = tmp_path / "disk"
    ingest, runs = on_small_disk(
        disk, 1024, [*CLI, "ingest", "files", str(logs), "--db", str(disk / "s.duckdb"), "--quiet"],
        [*CLI, "sql", "SELECT status, message FROM ingest_runs", "--db", str(disk / "s.duckdb"), "--format", "json"])
    assert ingest.returncode == exitcodes.IO_ERROR, ingest.stderr
    line = one_sentence(ingest.stderr)
    assert "no space left" in line and "rollback" not in line
    stored = [json.loads(x) for x in runs.stdout.splitlines()]
    assert stored and stored[-1]["status"] == "failed", runs.stderr
    assert "no space left" in stored[-1]["message"] and "rollback" not in stored[-1]["message"]


@needs_small_disk
def test_nightly_on_a_full_store_disk_still_writes_the_report_saying_so_and_exits_8(logs, tmp_path):
    disk, out = tmp_path / "disk", tmp_path / "out"
    (nightly,) = on_small_disk(disk, 1024, [*CLI, "nightly", "--out-dir", str(out), "--db", str(disk / "s.duckdb"),
                                            "--files", str(logs), "--since", "24h", "--compare-to", ""])
    assert nightly.returncode == exitcodes.IO_ERROR, nightly.stderr
    assert "Traceback" not in nightly.stderr and "rollback" not in nightly.stderr
    latest = json.loads((out / "latest.json").read_text())
    assert latest["exit_code"] == exitcodes.IO_ERROR and "no space left" in latest["banner"][0]


@needs_small_disk
def test_a_full_output_disk_exits_8_and_leaves_the_previous_report_whole(db, tmp_path):
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    kept.mkdir()
    report = disk / "report.html"
    runs = on_small_disk(
        disk, 16384,
        [*CLI, "report", "--db", str(db), "-o", str(report), "--compare-to", ""],
        ["sh", "-c", f"mkdir -p {kept}/before && cp {report} {report.with_suffix('.json')} {kept}/before/"],
        ["sh", "-c", f"head -c 100000000 /dev/zero > {disk}/filler || true"],  # fills the disk
        [*CLI, "report", "--db", str(db), "-o", str(report), "--compare-to", ""],
        ["sh", "-c", f"mkdir -p {kept}/after && cp {report} {report.with_suffix('.json')} {kept}/after/ && ls -a {disk}"])
    first, _, _, second, listing = runs
    assert first.returncode in exitcodes.ANSWERS, first.stderr
    assert second.returncode == exitcodes.IO_ERROR, second.stderr
    assert f"no space left on the device writing {report}" in one_sentence(second.stderr)
    for name in ("report.html", "report.json"):
        before, after = (kept / "before" / name).read_bytes(), (kept / "after" / name).read_bytes()
        assert after == before and len(before) > 1000
    assert [n for n in listing.stdout.split() if n.endswith(".tmp")] == []  # no temporary file left behind
