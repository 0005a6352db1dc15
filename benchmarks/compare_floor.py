"""The floor under `egresslens ingest files`, a contender of `compare.py` run as its own process:

    python benchmarks/compare_floor.py floor|floor-no-ids structured|legacy|csv INPUT_DIR DB_PATH

EgressLens' own reading and canonical SQL (`normalise.whole_file_selects` over `archive_records` or
`csv_records`, the statements the whole-file routes run), streamed straight into a fresh store's tables,
one INSERT per table and file group, all in one transaction. None of the loop's guarantees: no staging
table to check before the insert, no de-duplication, no quarantine (a refused record is dropped), no
line-by-line fallback, no progress, no run accounting, no command line. `floor-no-ids` also leaves out
the event id (MD5 over the canonical columns).

So, in one run of `compare.py`: the bare script to `floor-no-ids` is the canonical form and its checks,
`floor-no-ids` to `floor` the event ids, `floor` to `egresslens` the loop. Prints {"records": N, ...}
(the rows stored) as one JSON line.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

from compare_baselines import _files  # the baselines' own list of a table's archive blobs
from egresslens import normalise, store
from egresslens.azfw import FAST_CATEGORIES, LEGACY
from egresslens.load import stored_columns
from egresslens.schema import TABLES_BY_NAME


def reads(form: str, data: Path) -> list[tuple[str, str]]:
    """(route, records) of every file group the whole-file routes read, as `whole_file_selects` takes them."""
    if form == "csv":
        found = [normalise.csv_records(p, Path(p).stem) for p in sorted(glob.glob(str(data / "*.csv")))]
        return [f for f in found if f is not None]
    if form == "legacy":
        files = sorted(glob.glob(str(data / "**" / "*.json"), recursive=True))
        return [(LEGACY, normalise.archive_records(files, LEGACY))] if files else []
    groups = []
    for table, categories in FAST_CATEGORIES.items():
        if files := _files(data, categories):
            groups.append((table, normalise.fast_source(table, normalise.archive_records(files, table))))
    return groups


def run_floor(form: str, data: Path, db: str, *, ids: bool = True) -> dict[str, int]:
    con = store.connect(db)
    con.execute("BEGIN TRANSACTION")
    for route, records in reads(form, data):
        for table, select in normalise.whole_file_selects(con, route, records).items():
            columns = [c for c in TABLES_BY_NAME[table].column_names if c not in ("event_id", "ingest_run_id")]
            if not ids:  # (DuckDB drops the unused id expression from the plan)
                select = f"SELECT NULL::UUID AS event_id, * EXCLUDE (event_id) FROM ({select})"
            con.execute(f"INSERT INTO {table} (event_id, {', '.join(columns)}, ingest_run_id) "
                        f"SELECT event_id, {stored_columns(columns)}, 1 FROM ({select}) WHERE reject_reason IS NULL")
    con.execute("COMMIT")
    records = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in FAST_CATEGORIES}
    con.close()
    return records


def main() -> int:
    contender, form, data, db = sys.argv[1:5]
    if contender not in ("floor", "floor-no-ids"):
        raise SystemExit(f"unknown contender: {contender}")
    t = time.perf_counter()
    records = run_floor(form, Path(data), db, ids=contender == "floor")
    print(json.dumps({"records": sum(records.values()), "per_table": records,
                      "seconds_inside": round(time.perf_counter() - t, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
