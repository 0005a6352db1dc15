"""Where ingest time goes: `ingest files` on a directory, with the time of every SQL statement summed
by pipeline stage, and what is left (reading and splitting lines in Python).

    .venv/bin/python benchmarks/profile_ingest.py .bench-cache/1000000-structured [--db PATH] [--json] [--threads 1]

Run it on the input `compare.py` generated (`.bench-cache/<rows>-<form>`). Each statement of the real
ingest path is timed as it runs (wall seconds, and this process's CPU seconds over all its threads: on
a shared machine they move less than wall time); the stages are:

- archive read + canonical: whole structured archive blobs read by DuckDB's JSON reader straight into
  canonical rows, with event ids, and straight into the store (the write is in this stage), or staged
  when they cannot be stored whole;
- legacy archive read: whole legacy blobs read by DuckDB's JSON reader into the stage; canonical +
  insert: their canonical rows straight into the store;
- CSV read + canonical: a CSV export of one table read by DuckDB's CSV reader straight into canonical
  rows, with event ids, and into the store as the archive blobs are; CSV read: an export read row by
  row (something in it needs line numbers) into a temporary table first;
- insert check + de-dup: the checks of rows inserted straight from the reader, and deleting from them
  an event twice or already stored;
- route: the fast route's guess per line; fast parse + canonical: lines parsed straight into their
  table's canonical rows; legacy fast parse: legacy lines into the stage;
- generic stage: every other record, one wide parse;
- canonical: the legacy and generic rows of each table (the legacy grammars are a view, so their
  regular expressions run here);
- insert: de-duplication against the store and the write; progress: per-source bookkeeping; commit;
  other SQL.

Python is the rest: reading files, splitting lines, building Arrow batches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from egresslens import store
from egresslens import ingest

STAGES = [  # (stage, pattern over the statement's first words), first match wins
    ("route", r"TEMP TABLE batch_route|SELECT route, count"),
    ("archive read + canonical", r"(TEMP TABLE canon_\w+ AS |INSERT INTO \w+ \(event_id.* FROM \( ?)SELECT CASE .*read_json\("),
    ("legacy archive read", r"TEMP TABLE stage_legacy AS .*read_json\("),
    ("CSV read + canonical", r"(TEMP TABLE canon_\w+ AS |INSERT INTO \w+ \(event_id.* FROM \( ?)SELECT CASE .*read_csv\("),
    ("canonical + insert", r"INSERT INTO \w+ \(event_id.* FROM \( ?SELECT CASE WHEN reject_reason"),
    ("insert check + de-dup", r"WHERE rowid [<>]|max\(rowid\)"),
    ("CSV read", r"TEMP TABLE csv_rows AS"),
    ("fast parse + canonical", r"TEMP TABLE canon_\w+ AS SELECT CASE .*json_transform\(b\.raw"),
    ("legacy fast parse", r"TEMP TABLE stage_legacy AS SELECT rid, time_text"),
    ("generic stage", r"TEMP TABLE stage_generic AS|INSERT INTO stage_generic BY NAME"),
    ("legacy grammars", r"TEMP TABLE legacy AS"),
    ("canonical", r"TEMP TABLE canon_|INSERT INTO canon_"),
    ("insert (de-dup + write)", r"INSERT INTO (flows|dns_queries|threats|fqdn_|fat_|flow_|application_|network_|nat_)"),
    ("envelope check", r"contains\(raw, '\"records\"'\)"),
    ("progress", r"ingest_sources|ingest_runs"),
    ("commit", r"^COMMIT"),
]


class TimedConnection:
    """The store connection with every `execute` timed by stage."""

    def __init__(self, con):
        self._con = con
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # this process's CPU seconds, every thread

    def execute(self, sql, *args, **kwargs):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            stage = stage_of(sql)
            self.seconds[stage] += time.perf_counter() - started
            self.cpu[stage] += time.process_time() - cpu

    def __getattr__(self, name):
        return getattr(self._con, name)


def stage_of(sql: str) -> str:
    text = " ".join(sql.split())
    for stage, pattern in STAGES:
        if re.search(pattern, text, re.S):
            return stage
    return "other SQL"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="a directory or file of logs")
    ap.add_argument("--db", type=Path, default=None, help="store file (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true", help="print the profile as JSON")
    ap.add_argument("--threads", type=int, default=None,
                    help="DuckDB threads (1: every stage's CPU seconds without other threads' waits, for comparing stages)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        con = TimedConnection(store.connect(args.db or Path(tmp) / "profile.duckdb"))
        if args.threads:
            con.execute(f"SET threads = {int(args.threads)}")
        started, cpu = time.perf_counter(), time.process_time()
        counts, _, _ = ingest.ingest_files(con, [args.input])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        con.close()
    python = "Python (read, split, batch)"
    stages = dict(sorted(con.seconds.items(), key=lambda kv: -kv[1]))
    stages[python] = wall - sum(con.seconds.values())
    cpus = {**con.cpu, python: cpu - sum(con.cpu.values())}
    if args.json:
        print(json.dumps({"records": counts.read, "wall_s": wall, "cpu_s": cpu, "stages_s": stages,
                          "stages_cpu_s": {k: cpus[k] for k in stages}}))
        return 0
    print(f"{counts.summary()}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"  {'stage':<30} {'wall s':>7}  {'share':>5}  {'CPU s':>7}")
    for stage, seconds in stages.items():
        print(f"  {stage:<30} {seconds:7.2f}  {seconds / wall:5.1%}  {cpus[stage]:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
