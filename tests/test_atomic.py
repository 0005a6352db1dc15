"""Files are replaced whole: a kill at any moment of a write leaves the previous file as it was, and the
nightly job's latest.html and latest.json always come from the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from egresslens import atomic, exitcodes
from egresslens.simulate import generate, write


def test_write_text_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "r.html"
    atomic.write_text(target, "first")
    atomic.write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.html"]


def test_a_failed_write_keeps_the_previous_file_and_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic.write_text(target, "previous")

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        atomic.write_text(target, "next")
    assert caught.value.filename == str(target)
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_published_files_switch_together(tmp_path):
    for gen in ("run-1", "run-2"):
        html, js = tmp_path / "reports" / f"{gen}.html", tmp_path / "reports" / f"{gen}.json"
        atomic.write_text(html, f"<html>{gen}</html>")
        atomic.write_text(js, json.dumps({"run": gen}))
        atomic.publish(tmp_path, {"latest.html": html, "latest.json": js}, gen)
        assert (tmp_path / "latest.html").read_text() == f"<html>{gen}</html>"
        assert json.loads((tmp_path / "latest.json").read_text()) == {"run": gen}
    # one generation kept; the links resolve through the one switched link
    assert sorted(p.name for p in (tmp_path / ".latest").iterdir()) == ["current", "run-2"]
    assert os.readlink(tmp_path / "latest.html") == os.path.join(".latest", "current", "latest.html")


def test_publish_replaces_a_regular_latest_file_left_by_an_older_version(tmp_path):
    (tmp_path / "latest.html").write_text("old")
    src = tmp_path / "new.html"
    src.write_text("new")
    atomic.publish(tmp_path, {"latest.html": src}, "g1")
    assert (tmp_path / "latest.html").is_symlink() and (tmp_path / "latest.html").read_text() == "new"


# -- kill -9 during nightly's writes ------------------------------------------------------------------

@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("atomic") / "logs"
    write(generate(hours=6, events_per_hour=300, seed=5, start=datetime(2026, 3, 1)), out, fmt="structured",
          layout="storage")
    return out


def _pair(out: Path) -> tuple[str, dict]:
    """latest.html and latest.json, checked whole: the html ends as a page does, the json parses, and both
    say the same write time."""
    html = (out / "latest.html").read_text()
    doc = json.loads((out / "latest.json").read_text())
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    written = datetime.fromisoformat(doc["generated_at"]).strftime("written %Y-%m-%d %H:%M")
    assert written in html
    return html, doc


def _run_and_kill_when(cmd: list[str], seen) -> bool:  # noqa: ANN001
    """Start `cmd`; SIGKILL it the moment `seen()` is true. True when it was killed that way."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if seen():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_kill_9_at_each_write_of_nightly_leaves_latest_whole_and_from_one_run(logs, tmp_path):
    out, db = tmp_path / "out", tmp_path / "s.duckdb"
    cmd = [sys.executable, "-m", "egresslens.cli", "nightly", "--out-dir", str(out), "--db", str(db),
           "--files", str(logs), "--since", "24h", "--compare-to", ""]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode in exitcodes.ANSWERS, first.stderr
    _pair(out)

    def temp_in(directory: Path, suffix: str):  # noqa: ANN202
        return lambda: directory.is_dir() and any(n.startswith(".") and n.endswith(suffix) for n in os.listdir(directory))

    def new_generation():  # noqa: ANN202
        root = out / ".latest"
        return root.is_dir() and len([n for n in os.listdir(root) if n != "current"]) > 1

    moments = {
        "while the dated html is written": temp_in(out / "reports", ".tmp"),
        "while the new generation is staged": new_generation,
        "while the latest link is switched": temp_in(out / ".latest", ".link"),
    }
    killed = []
    for moment, seen in moments.items():
        if _run_and_kill_when(cmd, seen):
            killed.append(moment)
        _pair(out)  # never a truncated page, never a page and a summary of two runs
    assert killed, "no kill landed during a write"
    # and the next run still publishes whole
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode in exitcodes.ANSWERS, again.stderr
    _pair(out)
    leftovers = [n for d in (out, out / "reports", out / ".latest") for n in os.listdir(d)
                 if n.endswith((".tmp", ".link"))]
    assert leftovers == []  # what the killed runs left half-written is cleared by the next one
