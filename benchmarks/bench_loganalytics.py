"""Bytes moved by `ingest loganalytics` in raw and summary mode for the same simulated range, and raw-mode
throughput, through the loopback Log Analytics server and the real client.

    .venv/bin/python benchmarks/bench_loganalytics.py [--hours 168] [--events-per-hour 20000]

Summaries replace the flow and DNS tables (AZFWApplicationRule, AZFWNetworkRule, AZFWNatRule,
AZFWDnsQuery); the ratio that counts is their raw bytes over the summaries' bytes (`replaced_to_summary`).
Threat-intel and IDPS rows are read raw either way. The fake server runs in this process (it shares the
GIL with the client), so rows/s is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.loganalytics_server import FakeCredential, FakeLogAnalytics, fixture_tables  # noqa: E402

from egresslens import store  # noqa: E402
from egresslens.sources.loganalytics import Run, Settings, Target  # noqa: E402

WS = "11111111-2222-3333-4444-555555555555"
REPLACED = ("AZFWApplicationRule", "AZFWNetworkRule", "AZFWNatRule", "AZFWDnsQuery")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=168)
    ap.add_argument("--events-per-hour", type=int, default=20_000)
    args = ap.parse_args()
    start = datetime(2025, 7, 7)
    end = start + timedelta(hours=args.hours)
    now = end + timedelta(hours=1)
    t = time.perf_counter()
    tables = fixture_tables(hours=args.hours, events_per_hour=args.events_per_hour, start=start)
    out = {"hours": args.hours, "events_per_hour": args.events_per_hour,
           "fixture_rows": {k: df.height for k, df in tables.items()}, "fixture_s": round(time.perf_counter() - t, 1)}
    with FakeLogAnalytics(WS, tables=tables) as fake:
        for mode in ("raw", "summary"):
            con = store.connect_memory()
            t = time.perf_counter()
            stats = Run(con, FakeCredential(), Target(workspace_id=WS), start=start, end=end, now=now, mode=mode,
                        endpoint=fake.endpoint, settings=Settings()).run()
            secs = time.perf_counter() - t
            out[mode] = {"rows": stats.rows, "bytes": stats.bytes, "bytes_per_table": stats.per_table_bytes,
                         "queries": stats.queries, "seconds": round(secs, 2), "rows_per_s": round(stats.rows / secs),
                         "stored": stats.counts.stored, "rollups": stats.rollups}
            con.close()
    replaced = sum(out["raw"]["bytes_per_table"].get(t, 0) for t in REPLACED)
    out["replaced_raw_bytes"] = replaced
    out["replaced_to_summary"] = round(replaced / max(out["summary"]["bytes"], 1), 1)
    out["raw_to_summary"] = round(out["raw"]["bytes"] / max(out["summary"]["bytes"], 1), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
