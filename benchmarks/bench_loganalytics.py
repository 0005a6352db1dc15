"""Raw-mode throughput through the loopback Log Analytics server, and bytes moved raw vs summary.

    .venv/bin/python benchmarks/bench_loganalytics.py [--hours 24] [--events-per-hour 20000]

The fake server runs in this process (shares the GIL with the client), so rows/s is a lower bound.
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
from egresslens import ingest  # noqa: E402
from egresslens.sources.loganalytics import LogAnalyticsSource, Settings, Target  # noqa: E402

WS = "11111111-2222-3333-4444-555555555555"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--events-per-hour", type=int, default=20_000)
    args = ap.parse_args()
    start = datetime(2025, 7, 1)
    end = start + timedelta(hours=args.hours)
    now = end + timedelta(hours=1)
    t = time.perf_counter()
    tables = fixture_tables(hours=args.hours, events_per_hour=args.events_per_hour, start=start)
    gen_s = time.perf_counter() - t
    out = {"hours": args.hours, "events_per_hour": args.events_per_hour,
           "fixture_rows": sum(df.height for df in tables.values()), "fixture_s": round(gen_s, 1)}
    with FakeLogAnalytics(WS, tables=tables) as fake:
        for mode in ("raw", "summary"):
            con = store.connect_memory()
            t = time.perf_counter()
            source = LogAnalyticsSource(FakeCredential(), Target(workspace_id=WS), start=start, end=end, now=now,
                                        mode=mode, endpoint=fake.endpoint, settings=Settings())
            stats = source.summary(ingest.run(con, source))
            secs = time.perf_counter() - t
            out[mode] = {"rows": stats.rows, "bytes": stats.bytes, "queries": stats.queries, "seconds": round(secs, 2),
                         "rows_per_s": round(stats.rows / secs), "stored": stats.counts.stored, "rollups": stats.rollups}
            con.close()
    out["byte_ratio_raw_to_summary"] = round(out["raw"]["bytes"] / max(out["summary"]["bytes"], 1), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
