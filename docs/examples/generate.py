"""Render the example outputs in docs/examples/ from the simulator (`make docs-examples`).

A fixed simulated day (seed 7, 2026-11-24, 4,000 flow events an hour, with its policy) is ingested
into a throw-away store and every command's output is written next to this file. tests/test_docs.py
runs the same function into a temporary directory and compares the files byte for byte, so the
committed examples are always what the current code prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"
WINDOW = ["--start", START, "--end", END]

# (file, command arguments after `egresslens`, expected exit codes)
EXAMPLES: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("recommend.txt", ["recommend", *WINDOW, "--policy", "{sim}/policy.json"], (0, 1)),
    ("recommend.md", ["recommend", *WINDOW, "--policy", "{sim}/policy.json", "--format", "markdown"], (0, 1)),
    ("recommend.az.sh", ["recommend", *WINDOW, "--policy", "{sim}/policy.json", "--format", "az"], (0, 1)),
    ("recommend.tf", ["recommend", *WINDOW, "--policy", "{sim}/policy.json", "--format", "terraform"], (0, 1)),
    ("recommend.bicep", ["recommend", *WINDOW, "--policy", "{sim}/policy.json", "--format", "bicep"], (0, 1)),
    ("snat.txt", ["snat", *WINDOW, "--public-ips", "1"], (0, 1)),
    ("dns.txt", ["dns", *WINDOW], (0, 1)),
]


def _run(args: list[str], env: dict[str, str], ok: tuple[int, ...]) -> str:
    proc = subprocess.run([sys.executable, "-m", "egresslens.cli", *args], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode not in ok:
        raise RuntimeError(f"egresslens {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def generate(out: Path = HERE) -> list[Path]:
    """Write every example into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="egresslens-examples-") as tmp:
        sim, db = Path(tmp) / "sim", Path(tmp) / "egresslens.duckdb"
        env = {**os.environ, "EGRESSLENS_DB": str(db), "COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1",
               "PYTHONIOENCODING": "utf-8"}
        _run(["simulate", "--out", str(sim), "--hours", "24", "--events-per-hour", "4000", "--seed", "7",
              "--start", START, "--format", "structured", "--layout", "storage"], env, (0,))
        written = [out / "ingest.txt"]
        written[0].write_text(_run(["ingest", "files", str(sim), "--quiet"], env, (0, 5)), encoding="utf-8")
        for name, args, ok in EXAMPLES:
            text = _run([a.replace("{sim}", str(sim)) for a in args], env, ok)
            if tmp in text:
                raise RuntimeError(f"{name} shows the temporary path {tmp}: examples must not depend on it")
            (out / name).write_text(text, encoding="utf-8")
            written.append(out / name)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
