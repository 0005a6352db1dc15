"""benchmarks/compare.py runs end to end at its 1M size, as `make bench-compare ROWS=1M` runs it (a smoke
test: no timing asserted; about 2 minutes on 2 cores). EGRESSLENS_COMPARE_ROWS=2400 makes it quick."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = os.environ.get("EGRESSLENS_COMPARE_ROWS", "1M")


def test_compare_times_every_contender_on_the_same_records(tmp_path):
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--rows", ROWS, "--cache", str(tmp_path / "cache"),
         "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads(out.read_text())
    results, rows = written["results"], written["flow_events"]
    assert {(r["form"], r["contender"]) for r in results} == {
        (f, c) for f in ("structured", "legacy", "csv") for c in ("egresslens", "duckdb", "pandas")}
    for form in ("structured", "legacy", "csv"):
        counts = {r["contender"]: r["records"] for r in results if r["form"] == form}
        assert counts["egresslens"] == counts["duckdb"] == counts["pandas"] > rows, (form, counts)  # + DNS, threats
    assert all(r["peak_rss_mib"] > 0 and r["seconds"] > 0 for r in results)
    assert "time / egresslens" in proc.stdout


def _compare():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import compare
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return compare


def test_a_contenders_peak_rss_is_its_own_not_the_high_water_of_the_process_that_started_it(tmp_path):
    compare = _compare()
    big = b"x" * 1024**3  # this process's high-water mark rises by 1 GiB, as the in-process simulator's did
    del big
    small = compare.measure([sys.executable, "-c", "pass"])
    large = compare.measure([sys.executable, "-c", "b = b'x' * (300 * 1024**2); print(len(b))"])
    assert small["exit"] == 0 and small["peak_rss_mib"] < 200, small
    assert 300 < large["peak_rss_mib"] < 600, large
    assert large["seconds"] >= large["cpu_seconds"] / 2 > 0  # two cores at most
    assert large["stdout"] == f"{300 * 1024**2}\n" and large["stderr"] == ""
    failed = compare.measure([sys.executable, "-c", "import sys; sys.exit('no input')"])
    assert failed["exit"] == 1 and failed["stderr"] == "no input\n"


def test_a_contender_that_fails_is_reported_and_the_fastest_of_repeated_runs_is_kept(tmp_path):
    compare = _compare()
    failed = compare.run_contender("egresslens", "structured", tmp_path / "no-such-input", tmp_path / "work")
    assert failed["failed"].startswith("exit 3") and failed["records"] == 0
    runs = [{"seconds": 3.0, "cpu_seconds": 5.0, "peak_rss_mib": 10, "records": 7},
            {"seconds": 2.0, "cpu_seconds": 4.0, "peak_rss_mib": 11, "records": 7}, failed]
    best = compare.best_of(runs)
    assert best["seconds"] == 2.0 and len(best["runs"]) == 3
    assert compare.best_of([failed])["failed"]


def test_the_profile_names_where_a_legacy_and_a_structured_archive_spend_their_time(tmp_path):
    from egresslens.simulate import simulate_to_dir

    for fmt, stage in (("structured", "archive read + canonical"), ("legacy", "legacy archive read")):
        logs = tmp_path / fmt
        simulate_to_dir(logs, hours=2, events_per_hour=300, seed=2, fmt=fmt)
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_ingest.py"), str(logs), "--json"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        profile = json.loads(proc.stdout)
        assert profile["records"] > 600
        assert profile["stages_s"][stage] > 0, profile  # the blobs were read whole, by DuckDB
        assert profile["stages_s"].keys() == profile["stages_cpu_s"].keys()
        assert abs(sum(profile["stages_s"].values()) - profile["wall_s"]) < 1e-6


def test_the_floor_stores_the_rows_egresslens_stores_and_without_ids_only_the_ids_are_missing(tmp_path):
    """`floor` runs EgressLens' own canonical SQL without the loop: on every form it must store exactly what
    `ingest files` stores (event ids included), or its time would measure some other work."""
    import duckdb

    compare = _compare()
    tables = ("flows", "dns_queries", "threats")
    for form in ("structured", "legacy", "csv"):
        data = compare.dataset(tmp_path / "cache", 2400, form)
        stored = {}
        for name in ("egresslens", "floor", "floor-no-ids"):
            run = compare.run_contender(name, form, data, tmp_path / "work" / name)
            assert "failed" not in run, run
            con = duckdb.connect(str(tmp_path / "work" / name / f"{name}-{form}.duckdb"), read_only=True)
            stored[name] = {t: sorted(con.execute(f"SELECT * EXCLUDE (ingest_run_id) FROM {t}").fetchall(), key=repr)
                            for t in tables}
            con.close()
        assert sum(map(len, stored["egresslens"].values())) > 2400, form  # flows, their DNS queries, threats
        assert stored["floor"] == stored["egresslens"], form
        for t in tables:  # (the event id is each table's first column)
            assert [r[1:] for r in stored["floor-no-ids"][t]] == sorted((r[1:] for r in stored["floor"][t]), key=repr)
            assert all(r[0] is None for r in stored["floor-no-ids"][t])


def test_repeated_runs_take_turns_so_a_machine_slowing_down_slows_every_contender_alike():
    compare = _compare()
    order = []
    runs = compare.in_rounds(["egresslens", "duckdb", "pandas"], 3,
                             lambda name: order.append(name) or {"seconds": len(order)})
    assert order == ["egresslens", "duckdb", "pandas"] * 3
    assert [r["seconds"] for r in runs["duckdb"]] == [2, 5, 8]
    assert [len(r) for r in runs.values()] == [3, 3, 3] and compare.in_rounds(["a"], 0, lambda n: {})["a"] == [{}]
