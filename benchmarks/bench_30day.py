"""Analytics on a 30-day store: `recommend`, `snat` and `dns` over rollups and over raw rows.

    make bench-30day
    .venv/bin/python benchmarks/bench_30day.py [--days 30] [--events-per-hour 40000] [--raw-days 1]
        [--wide-groups 6000] [--stores rollups,raw,wide] [--repeat 1] [--dir .bench-cache/30day]
        [--out bench-output/30day.json] [--rebuild]

Three stores, built once and cached in `--dir` (one file per store, named by its parameters; a build
that is interrupted leaves no store behind):

- `rollups`: how a month is held in real use. History comes from Log Analytics as hourly rollups
  (`ingest loganalytics --since 30d --mode summary`: the workspace computes them, EgressLens never
  compacts raw rows itself), the newest `--raw-days` day(s) as raw rows from the nightly archive
  ingest. The older days' rollups are computed from the simulated rows exactly as the summary KQL
  does (`egresslens.simulate.rollups`); threats have no rollup form and are stored raw throughout.
- `raw`: the same simulated month, every day as raw rows (`flows`, `dns_queries`, `threats`).
- `wide`: 30 days of hourly rollups with `--wide-groups` (source, destination, port, rule) groups
  an hour (`benchmarks/bench_recommend.py`'s store: many sources and destinations, the shape of a
  hub firewall's rollups; the simulated world has about 70 sources and 50 destinations, so its
  rollups are narrow). No DNS rollups in this one.

Both simulated stores come from one pass of the simulator's frame API
(`egresslens.simulate.scenario.iter_hours`, seed 7, a month from 2026-11-01, a 35 % burst to one
destination in the middle three hours) stored with `egresslens.ingest.store_canonical_frames`.

Each command is timed as the CLI runs it, in this process: the store opened read-only, the window
resolved as `--since 30d` (ending at the newest data), then the library call the command makes:

    recommend   recommend(con, window, policy=<the simulated policy>, config=Config())   # --policy policy.json
    snat        snat.analyse_snat(con, window, snat.SnatConfig())                      # 1 public IP x 2 instances
    dns         dns.analyse_dns(con, window)
    report      build_report(con, window, policy=...) rendered as HTML (every analysis; opt-in: --commands)

A week of a busy firewall's raw rows (24M flow events a day), as in the Benchmarks page:

    .venv/bin/python benchmarks/bench_30day.py --days 7 --events-per-hour 1000000 --stores raw \\
        --commands recommend,snat,dns,report --out bench-output/7day-raw.json

Rendering the output is not timed. It prints a table (seconds; best of `--repeat` runs) and writes
it, with the stores' row counts and the machine, as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from egresslens import dns, snat
from egresslens.analyse import resolve_window
from egresslens.ingest import store_canonical_frames
from egresslens.recommend import Config, parse_policy, recommend
from egresslens.simulate import generate
from egresslens.simulate.rollups import dns_rollups_sql, flow_rollups_sql
from egresslens.simulate.scenario import iter_hours
from egresslens.store import connect

START = datetime(2026, 11, 1)
SEED = 7
HOT_SHARE = 0.35
TARGET_S = 5.0
STORES = ("rollups", "raw", "wide")
COMMANDS = ("recommend", "snat", "dns", "report")


# -- building --------------------------------------------------------------------------------------

def _paths(cache: Path, days: int, events_per_hour: int, raw_days: int, wide_groups: int) -> dict[str, Path]:
    sim = f"d{days}-e{events_per_hour}"
    return {"rollups": cache / f"rollups-{sim}-raw{raw_days}.duckdb", "raw": cache / f"raw-{sim}.duckdb",
            "wide": cache / f"wide-d{days}-g{wide_groups}.duckdb"}


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".building")


def _store_rollups(con: duckdb.DuckDBPyConnection, flows: pl.DataFrame, dns_q: pl.DataFrame) -> None:
    for table, sql, frame in (("flow_rollups", flow_rollups_sql("day_rows"), flows),
                              ("dns_rollups", dns_rollups_sql("day_rows"), dns_q)):
        con.register("day_rows", frame.to_arrow())
        try:
            con.execute(f"INSERT INTO {table} BY NAME {sql}").fetchall()
        finally:
            con.unregister("day_rows")


def build_simulated(paths: dict[str, Path], days: int, events_per_hour: int, raw_days: int,
                    wanted: set[str]) -> None:
    """One pass of the simulator, a day at a time, into the `raw` and `rollups` stores that are
    wanted and not yet cached."""
    targets = {name: _tmp(paths[name]) for name in ("rollups", "raw") if name in wanted}
    if not targets:
        return
    for p in targets.values():
        p.unlink(missing_ok=True)
        Path(str(p) + ".wal").unlink(missing_ok=True)
    cons = {name: connect(p) for name, p in targets.items()}
    t0 = time.perf_counter()
    day: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]] = []
    try:
        for h, flows, dns_q, threats in iter_hours(days * 24, events_per_hour, SEED, START, HOT_SHARE):
            if set(cons) == {"raw"}:  # raw rows alone are stored hour by hour: a busy day need not fit in memory
                store_canonical_frames(cons["raw"], flows=flows, dns_queries=dns_q, threats=threats)
                if h % 24 == 23 and (h // 24 % 5 == 4 or h // 24 == days - 1):
                    print(f"  built day {h // 24 + 1}/{days} in {time.perf_counter() - t0:.0f} s", flush=True)
                continue
            day.append((flows, dns_q, threats))
            if h % 24 != 23:
                continue
            d = h // 24
            f, q, t = (pl.concat([x[i] for x in day]) for i in range(3))
            day = []
            if "raw" in cons:
                store_canonical_frames(cons["raw"], flows=f, dns_queries=q, threats=t)
            if "rollups" in cons:
                if d >= days - raw_days:
                    store_canonical_frames(cons["rollups"], flows=f, dns_queries=q, threats=t)
                else:
                    store_canonical_frames(cons["rollups"], threats=t)
                    _store_rollups(cons["rollups"], f, q)
            if d % 5 == 4 or d == days - 1:
                print(f"  built day {d + 1}/{days} in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        for con in cons.values():
            con.execute("CHECKPOINT")
            con.close()
    for name, p in targets.items():
        p.rename(paths[name])


def build_wide(path: Path, days: int, groups_per_hour: int) -> None:
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    _bench_recommend().build(tmp, days, groups_per_hour)
    tmp.rename(path)


def _bench_recommend():
    spec = importlib.util.spec_from_file_location("bench_recommend", Path(__file__).with_name("bench_recommend.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def store_counts(path: Path) -> dict[str, int]:
    con = connect(path, read_only=True)
    try:
        sql = " UNION ALL ".join(
            f"SELECT '{t}', count(*), {agg} FROM {t}" for t, agg in (
                ("flows", "count(*)"), ("dns_queries", "count(*)"), ("threats", "count(*)"),
                ("flow_rollups", "coalesce(sum(hits), 0)"), ("dns_rollups", "coalesce(sum(queries), 0)")))
        out = {}
        for table, rows, events in con.execute(sql).fetchall():
            out[table] = int(rows)
            if table.endswith("_rollups"):
                out[table + "_events"] = int(events)
        return out
    finally:
        con.close()


# -- timing ----------------------------------------------------------------------------------------

def run_command(path: Path, command: str, policy) -> tuple[float, str]:
    """Seconds for one command as the CLI runs it, and a one-line summary of its result."""
    t = time.perf_counter()
    con = connect(path, read_only=True)
    try:
        window = resolve_window(con, since="30d")
        if command == "recommend":
            recs = recommend(con, window, policy=policy, config=Config())
            what = f"{len(recs.items)} recommendations"
        elif command == "snat":
            res = snat.analyse_snat(con, window, snat.SnatConfig())
            what = f"{res.findings.height} findings, rates {res.rate_basis}"
        elif command == "dns":
            res = dns.analyse_dns(con, window)
            what = f"{res.totals['queries']:,} queries, {res.suspicious.height} suspicious"
        else:  # the whole report, every analysis in it (rendered, not written)
            from egresslens.report import build_report, render

            report = build_report(con, window, policy=policy, db=str(path), since="30d")
            what = f"{len(render(report, 'html')):,} bytes of HTML"
    finally:
        con.close()
    return time.perf_counter() - t, what


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "duckdb": duckdb.__version__, "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--events-per-hour", type=int, default=40_000, help="simulated flow events an hour")
    ap.add_argument("--raw-days", type=int, default=1, help="newest days held as raw rows in the rollups store")
    ap.add_argument("--wide-groups", type=int, default=6_000, help="rollup groups an hour in the wide store")
    ap.add_argument("--stores", default=",".join(STORES))
    ap.add_argument("--commands", default=",".join(COMMANDS[:3]), help=f"from {', '.join(COMMANDS)}")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path(".bench-cache/30day"))
    ap.add_argument("--out", type=Path, default=Path("bench-output/30day.json"))
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    wanted = [s for s in args.stores.split(",") if s]
    commands = [c for c in args.commands.split(",") if c]
    if not set(wanted) <= set(STORES) or not set(commands) <= set(COMMANDS) or not 0 <= args.raw_days <= args.days:
        ap.error(f"--stores from {STORES}, --commands from {COMMANDS}, 0 <= --raw-days <= --days")
    args.dir.mkdir(parents=True, exist_ok=True)
    paths = _paths(args.dir, args.days, args.events_per_hour, args.raw_days, args.wide_groups)
    build_s: dict[str, float] = {}
    todo = {s for s in wanted if args.rebuild or not paths[s].exists()}
    if todo & {"rollups", "raw"}:
        sim = sorted(todo & {"rollups", "raw"})
        print(f"building {', '.join(sim)}: {args.days} days x {args.events_per_hour:,} flow events/hour "
              f"(rollups store: newest {args.raw_days} day(s) raw)", flush=True)
        t = time.perf_counter()
        build_simulated(paths, args.days, args.events_per_hour, args.raw_days, set(sim))
        build_s["+".join(sim)] = round(time.perf_counter() - t, 1)
    if "wide" in todo:
        print(f"building wide: {args.days} days x {args.wide_groups:,} rollup groups/hour", flush=True)
        t = time.perf_counter()
        build_wide(paths["wide"], args.days, args.wide_groups)
        build_s["wide"] = round(time.perf_counter() - t, 1)

    policies = {"simulated": parse_policy(generate(hours=1, events_per_hour=1, seed=SEED).policy),
                "wide": parse_policy(_bench_recommend().POLICY)}
    stores = {}
    for s in wanted:
        counts = store_counts(paths[s])
        stores[s] = {"path": str(paths[s]), "bytes": paths[s].stat().st_size, **counts}
        print(f"{s:<8} " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v), flush=True)
    timings = []
    for s in wanted:
        for c in commands:
            runs, what = [], ""
            for _ in range(args.repeat):
                sec, what = run_command(paths[s], c, policies["wide" if s == "wide" else "simulated"])
                runs.append(round(sec, 2))
            timings.append({"store": s, "command": c, "seconds": min(runs), "runs": runs, "result": what})
            print(f"  {s:<8} {c:<10} {min(runs):7.2f} s   {what}", flush=True)

    print(f"\n| command | {' | '.join(wanted)} |\n|---|{'---|' * len(wanted)}")
    for c in commands:
        cells = [next(f"{t['seconds']:.2f}" for t in timings if t["store"] == s and t["command"] == c) for s in wanted]
        print(f"| `{c}` | {' | '.join(cells)} |")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "params": {"days": args.days, "events_per_hour": args.events_per_hour, "raw_days": args.raw_days,
                   "wide_groups": args.wide_groups, "seed": SEED, "start": START.isoformat(), "window": "--since 30d",
                   "repeat": args.repeat},
        "target_s": TARGET_S, "build_seconds": build_s, "stores": stores, "timings": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
