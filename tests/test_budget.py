"""One memory budget: EGRESSLENS_MEMORY_LIMIT sets DuckDB's memory_limit and spill directory for every
connection (read-only analyses included), and every command stays under it on a day of many distinct
names (benchmarks/bench_cardinality.py at a small size; the 1M-name run is on the Benchmarks page)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egresslens import budget, exitcodes, store

ROOT = Path(__file__).resolve().parent.parent
NAMES = os.environ.get("EGRESSLENS_CARDINALITY_NAMES", "10K")


@pytest.mark.parametrize("text,expected", [("2GiB", 2 * 1024**3), ("2Gi", 2 * 1024**3), ("1536MiB", 1536 * 1024**2),
                                           ("2GB", 2 * 1000**3), ("2147483648", 2 * 1024**3), ("1.5 GiB", 3 * 2**29)])
def test_the_budget_reads_the_ways_people_and_kubernetes_write_sizes(text, expected):
    assert budget.parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "2XB", "-1GiB", "100MiB", ""])
def test_a_budget_that_cannot_be_read_or_cannot_fit_is_refused_with_the_setting_named(text):
    with pytest.raises(budget.BudgetError, match="EGRESSLENS_MEMORY_LIMIT"):
        budget.parse_size(text)


def _settings(con) -> tuple[str, str]:  # noqa: ANN001
    return con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]


def test_every_connection_takes_duckdbs_share_of_the_budget_and_spills_beside_the_store(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    monkeypatch.delenv(budget.MEMORY_ENV, raising=False)
    monkeypatch.delenv(budget.TEMP_ENV, raising=False)
    for read_only in (False, True):
        con = store.connect(db, read_only=read_only)
        limit, spill = _settings(con)
        con.close()
        assert limit == "1.0 GiB" and spill == str(tmp_path / ".s.duckdb.tmp"), (read_only, limit, spill)
    monkeypatch.setenv(budget.MEMORY_ENV, "1536Mi")
    monkeypatch.setenv(budget.TEMP_ENV, str(tmp_path / "spill"))
    con = store.connect(db, read_only=True)
    assert _settings(con) == ("768.0 MiB", str(tmp_path / "spill"))
    con.close()


def test_a_query_larger_than_duckdbs_share_spills_to_the_temp_directory_and_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv(budget.MEMORY_ENV, "256MiB")  # DuckDB gets 128 MiB
    monkeypatch.setenv(budget.TEMP_ENV, str(tmp_path / "deep" / "spill"))
    con = store.connect_memory()
    try:
        con.execute("CREATE TEMP TABLE t AS SELECT md5(range::VARCHAR) AS s FROM range(4000000)")
        assert con.execute("SELECT count(DISTINCT s) FROM t").fetchall()[0][0] == 4_000_000
        assert (tmp_path / "deep" / "spill").is_dir()  # DuckDB removes it when the connection closes
    finally:
        con.close()


def test_every_command_stays_under_a_small_budget_on_a_day_of_many_distinct_names(tmp_path):
    out = tmp_path / "cardinality.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cardinality.py"), "--names", NAMES, "--budget", "512MiB",
         "--cache", str(tmp_path / "cache"), "--out", str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["command"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"ingest", "recommend", "report", "dns", "snat", "drilldown", "nightly"}
    for name, r in results.items():
        assert r["exit"] in (*exitcodes.ANSWERS, exitcodes.PARTIAL), (name, r)
        assert 0 < r["peak_rss_mib"] < 512, (name, r)
