"""Side-by-side ingest benchmark: EgressLens against bare DuckDB SQL and a pandas script.

    make bench-compare ROWS=1M                     # also 10M; 100M is opt-in (about 60 GB of input)
    .venv/bin/python benchmarks/compare.py --rows 1M [--forms structured,legacy,csv] [--repeat 3]
        [--contenders egresslens,duckdb,pandas[,floor,floor-no-ids]] [--cache .bench-cache]
        [--out bench-output/compare-1M.json]

The simulator writes the input once per size and form into the cache directory (flow events = ROWS;
their DNS queries and threats come on top). Every contender then reads the SAME files in its own
process, from the page cache (the input is read once before a form's contenders: `warm`), so each one's
peak RSS is measured alone from outside (the child's rusage, `os.wait4`, taken by a small launcher
process: see `measure`):

* `egresslens` — `egresslens ingest files DIR` into a fresh store: every guarantee on (event ids,
  de-duplication, quarantine, resumable batches, run accounting).
* `duckdb` — the bare bound: hand-written SQL that reads the files with typed columns into `flows`,
  `dns_queries` and `threats` tables of a DuckDB file (legacy text: `regexp_extract` per table; CSV:
  `read_csv`), protocols, actions and names in one form and each row once (`SELECT DISTINCT`), then
  aggregates each table.
* `pandas` — the script a user would write for the same answer: `read_json(lines=True)` +
  `json_normalize` (legacy: `str.extract`; CSV: `read_csv`) per file, `concat`, numbers and flags typed,
  protocols, actions and names in one form, `drop_duplicates`, one Parquet file per table, `groupby`.
* `floor`, `floor-no-ids` (named with `--contenders` only) — where the time between the bare script and
  EgressLens goes: EgressLens' own reading and canonical SQL streamed straight into a store, without the
  loop's guarantees, and then without event ids too (`compare_floor.py`).

CPU seconds (user + system, from the same rusage) are printed too: on a shared machine they move less
than wall time. Forms: `structured` (storage archive of AZFW* categories), `legacy` (storage archive of
AzureDiagnostics text) and `csv` (Log Analytics CSV export of the AZFW* tables). Prints a table of
seconds, records/s, peak RSS and the ratios to EgressLens, and writes it all as JSON.
Absolute times depend on the machine and its load; the ratios, measured in one run, are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMS = {"structured": ("structured", "storage"), "legacy": ("legacy", "storage"), "csv": ("structured", "csv")}
CONTENDERS = ("egresslens", "duckdb", "pandas")
FLOORS = ("floor", "floor-no-ids")  # opt-in: compare_floor.py
HOURS = 24


def parse_rows(text: str) -> int:
    text = text.strip().upper().replace("_", "")
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * scale)


# A child's peak RSS as `wait4` reports it is never below its parent's high-water mark: at exec, Linux
# carries the high-water of the memory image being replaced (with vfork, the parent's own) into the new
# program's peak. A parent that has ever held gigabytes (the simulator holds 9.3 GiB at 100M, and it
# once ran in this process) would lend that peak to every contender it starts. So the input is generated
# in a child, and a contender is started by a fresh launcher (a few MiB), which waits for it and reports
# its rusage: the peak is the contender's alone, whatever the parent did before.
LAUNCHER = """
import json, os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "seconds": seconds,
               "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}, f)
"""


def measure(cmd: list[str], *, show_stderr: bool = False) -> dict:
    """Run `cmd` to its end: its exit code, wall and CPU seconds and peak RSS in MiB, taken from outside it,
    and what it wrote (`stdout`; `stderr`, unless `show_stderr` leaves it on this process's own)."""
    with tempfile.TemporaryDirectory() as tmp:
        usage, out, err = Path(tmp) / "usage.json", Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(usage), *cmd], stdout=stdout,
                                      stderr=None if show_stderr else stderr)
        measured = (json.loads(usage.read_text()) if usage.exists() else  # else the launcher could not start `cmd`
                    {"exit": launcher.returncode or 1, "seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mib": 0.0})
        return {**measured, "stdout": out.read_text(), "stderr": None if show_stderr else err.read_text()}


def dataset(cache: Path, rows: int, form: str) -> Path:
    """The simulated input for `rows` flow events in `form`, generated once (hour by hour, in a child process)."""
    fmt, layout = FORMS[form]
    out = cache / f"{rows}-{form}"
    done = out / ".complete"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        args = dict(hours=HOURS, events_per_hour=max(1, rows // HOURS), seed=1, fmt=fmt, layout=layout)
        code = ("import json; from datetime import datetime; from pathlib import Path; "
                "from egresslens.simulate import simulate_to_dir; "
                f"s = simulate_to_dir(Path({str(out)!r}), start=datetime(2026, 3, 1), **{args!r}); "
                "print(json.dumps(s['counts']))")
        run = measure([sys.executable, "-c", code], show_stderr=True)
        if run["exit"] != 0:
            raise SystemExit(f"generating the {form} input failed (exit {run['exit']})")
        for meta in ("truth.json", "policy.json"):  # not logs: keep them out of every contender's input
            (out / meta).rename(cache / f"{rows}-{form}-{meta}")
        done.write_text(run["stdout"].strip().splitlines()[-1])
        print(f"generated {form} input for {rows:,} flow events in {run['seconds']:.0f} s "
              f"(simulator peak RSS {run['peak_rss_mib']:,.0f} MiB)", flush=True)
    return out


def warm(data: Path) -> bool:
    """Read the input once before the contenders, so that each reads it from the page cache: otherwise the
    first contender of a form reads it from disk, after the last form's run has pushed it out of memory (at
    10M records that cost EgressLens, which runs first, 5 s of 30). Skipped (False) when the input would
    take more than half the machine's memory (100M: 60 GB), where every contender reads it from disk."""
    files = [f for f in data.rglob("*") if f.is_file()]
    if sum(f.stat().st_size for f in files) > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2:
        return False
    for f in files:
        with open(f, "rb") as handle:
            while handle.read(16 << 20):
                pass
    return True


def run_contender(name: str, form: str, data: Path, work: Path, ref: Path | None = None) -> dict:
    """Run one contender in a child process; wall time and peak RSS are taken from outside."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"{name}-{form}.duckdb"
    for stale in work.glob(f"{name}-{form}.duckdb*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if name.startswith("egresslens"):
        args = ["ingest", "files", str(data), "--db", str(db), "--json", "--quiet"]
        # egresslens@ref: another checkout's package first on the path (the current directory would win
        # over PYTHONPATH), with this interpreter and its dependencies
        path = str(ref.resolve()) if name == "egresslens@ref" else ""
        cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {path!r}) if {bool(path)} else None; "
               f"sys.argv = ['egresslens', *{args!r}]; from egresslens.cli import app; app()"]
    else:
        script = "compare_floor.py" if name in FLOORS else "compare_baselines.py"
        cmd = [sys.executable, str(HERE / script), name, form, str(data), str(db)]
    measured = measure(cmd)
    code, stdout, stderr = measured.pop("exit"), measured.pop("stdout"), measured.pop("stderr")
    if code not in (0, 5):  # 5: finished, some records quarantined (the simulator injects a few)
        # a contender that fails (pandas out of memory at 100M) is reported, and the run goes on
        last = (stderr.strip().splitlines() or [f"exit {code}"])[-1][:300]
        return {**measured, "records": 0, "failed": f"exit {code}: {last}"}
    report = json.loads(stdout.strip().splitlines()[-1])
    records = report["records_read"] if name.startswith("egresslens") else report["records"]
    return {**measured, "records": records, "detail": report}


def in_rounds(contenders: list[str], repeat: int, run: Callable[[str], dict]) -> dict[str, list[dict]]:
    """Each contender's runs, `repeat` rounds of one run each, in turn: the machine slowing down for a few
    minutes (a shared host) slows every contender's run of those rounds, not the runs of one contender."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(max(1, repeat)):
        for name in contenders:
            runs[name].append(run(name))
    return runs


def best_of(runs: list[dict]) -> dict:
    """The fastest of repeated runs (the others are kept in `runs`): on a shared machine, noise only adds."""
    ok = [r for r in runs if "failed" not in r] or runs
    best = min(ok, key=lambda r: r["seconds"])
    return {**best, "runs": [{k: r[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")} for r in runs]}


def table(results: list[dict]) -> str:
    lines = [f"{'form':<11}{'contender':<15}{'records':>12}{'seconds':>9}{'CPU s':>8}{'records/s':>12}"
             f"{'peak RSS':>12}{'time / egresslens':>19}"]
    for r in results:
        if "failed" in r:
            lines.append(f"{r['form']:<11}{r['contender']:<15}  failed after {r['seconds']:.0f} s: {r['failed']}")
            continue
        ratio = f"{r['vs_egresslens']:.2f}x" if r.get("vs_egresslens") else "-"
        lines.append(f"{r['form']:<11}{r['contender']:<15}{r['records']:>12,}{r['seconds']:>9.1f}{r['cpu_seconds']:>8.1f}"
                     f"{r['records_per_s']:>12,.0f}{r['peak_rss_mib']:>8,.0f} MiB{ratio:>19}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1M", help="flow events: 1M, 10M, 100M or any number (default 1M)")
    ap.add_argument("--forms", default=",".join(FORMS), help="comma list of structured, legacy, csv")
    ap.add_argument("--contenders", default=None,
                    help="comma list of egresslens, duckdb, pandas (default: all; above 10M rows pandas is left "
                         "out, as it holds every record in memory: name it to run it anyway), and floor, "
                         "floor-no-ids (only when named)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each contender N times, in turns (round by round), and keep the fastest")
    ap.add_argument("--cache", type=Path, default=Path(".bench-cache"), help="where generated input is kept")
    ap.add_argument("--work", type=Path, default=None, help="where the stores are written (default: cache/work)")
    ap.add_argument("--ref", type=Path, default=None,
                    help="also time `egresslens@ref`: the egresslens package of another checkout (before/after)")
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default bench-output/compare-ROWS.json)")
    args = ap.parse_args(argv)
    rows = parse_rows(args.rows)
    forms = [f for f in args.forms.split(",") if f]
    default = ",".join(c for c in CONTENDERS if c != "pandas" or rows <= 10_000_000)
    contenders = [c for c in (args.contenders or default).split(",") if c] + (["egresslens@ref"] if args.ref else [])
    if unknown := [f for f in forms if f not in FORMS] + [c for c in contenders if c not in (*CONTENDERS, *FLOORS, "egresslens@ref")]:
        ap.error(f"unknown form or contender: {', '.join(unknown)}")
    work = args.work or args.cache / "work"
    results = []
    for form in forms:
        data = dataset(args.cache, rows, form)
        if not warm(data):
            print(f"  {form}: the input is larger than half the memory: every contender reads it from disk",
                  flush=True)
        runs = in_rounds(contenders, args.repeat, lambda name: run_contender(name, form, data, work, args.ref))
        for name in contenders:
            r = best_of(runs[name])
            r.update(form=form, contender=name, records_per_s=r["records"] / r["seconds"])
            results.append(r)
            print(f"  {form:<10} {name:<13} {r['seconds']:7.1f} s  {r['cpu_seconds']:7.1f} CPU s"
                  f"  {r['peak_rss_mib']:7,.0f} MiB" + (f"  FAILED {r['failed']}" if "failed" in r else ""), flush=True)
        ours = next((r for r in results if r["form"] == form and r["contender"] == "egresslens"
                     and "failed" not in r), None)
        for r in results:
            if r["form"] == form and ours and "failed" not in r:
                r["vs_egresslens"] = r["seconds"] / ours["seconds"]
    shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    out = args.out or Path("bench-output") / f"compare-{args.rows}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "flow_events": rows, "results": results,
    }, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
