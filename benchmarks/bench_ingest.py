"""Ingest benchmark: simulate N flow events in one format, ingest them, report rows/s and peak memory.

Usage: python benchmarks/bench_ingest.py [--events 10000000] [--format structured|legacy|both]
       [--layout storage|eventhub|csv] [--dir DIR] [--keep]

The ingest runs in a child process, started by compare.py's launcher, so its peak RSS is its own: not the
high-water mark this process reached while simulating (see `compare.measure`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from compare import measure  # benchmarks/compare.py: run from this folder, as `make bench` does


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="flow events (DNS and threats come on top)")
    ap.add_argument("--format", default="structured", choices=["structured", "legacy", "both"])
    ap.add_argument("--layout", default="storage", choices=["storage", "eventhub", "csv"])
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the generated logs and store")
    args = ap.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="egresslens-bench-"))
    logs, db = work / "logs", work / "bench.duckdb"
    hours = 24
    t0 = time.perf_counter()
    from egresslens.simulate import simulate_to_dir

    summary = simulate_to_dir(logs, hours=hours, events_per_hour=args.events // hours, seed=1,
                              fmt=args.format, layout=args.layout, start=datetime(2026, 3, 1))
    gen_s = time.perf_counter() - t0
    inputs = [str(p) for p in logs.iterdir() if p.name not in ("truth.json", "policy.json")]
    size = sum(f.stat().st_size for p in map(Path, inputs) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    measured = measure([sys.executable, "-m", "egresslens.cli", "ingest", "files", *inputs, "--db", str(db),
                        "--json", "--quiet"])
    ingest_s, peak_mib = measured["seconds"], measured["peak_rss_mib"]
    if measured["exit"] not in (0, 5):
        print(measured["stderr"], file=sys.stderr)
        return measured["exit"]
    run = json.loads(measured["stdout"])
    result = {
        "format": args.format, "layout": args.layout, "flow_events": summary["counts"]["flows"],
        "records_read": run["records_read"], "stored": run["stored"], "quarantined": run["quarantined"],
        "input_mib": round(size / 2**20), "generate_s": round(gen_s, 1), "ingest_s": round(ingest_s, 1),
        "records_per_s": round(run["records_read"] / ingest_s), "mib_per_s": round(size / 2**20 / ingest_s, 1),
        "peak_rss_mib": round(peak_mib), "store_mib": round(db.stat().st_size / 2**20),
    }
    print(json.dumps(result))
    if not args.keep and args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
