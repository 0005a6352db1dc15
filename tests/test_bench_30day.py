"""benchmarks/bench_30day.py runs end to end on a tiny month (a smoke test: no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--days", "2", "--events-per-hour", "200", "--raw-days", "1", "--wide-groups", "40"]


def _run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "30day.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_30day.py"), *TINY, "--dir", str(tmp_path / "cache"),
         "--out", str(out), *extra], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_30day_times_every_command_on_every_store_and_reuses_the_stores(tmp_path):
    doc, stdout = _run(tmp_path)
    assert {(t["store"], t["command"]) for t in doc["timings"]} == {
        (s, c) for s in ("rollups", "raw", "wide") for c in ("recommend", "snat", "dns")}
    assert all(t["seconds"] > 0 and t["result"] for t in doc["timings"])
    assert "| `snat` |" in stdout
    raw, rolled, wide = doc["stores"]["raw"], doc["stores"]["rollups"], doc["stores"]["wide"]
    # the same simulated events: the newest day raw, the older one as rollups of exactly its rows
    assert raw["flows"] == 2 * 24 * 200 and raw["flow_rollups"] == 0
    assert rolled["flows"] == 24 * 200 and rolled["flow_rollups"] > 0
    assert rolled["flows"] + rolled["flow_rollups_events"] == raw["flows"]
    assert rolled["dns_queries"] + rolled["dns_rollups_events"] == raw["dns_queries"]
    assert rolled["threats"] == raw["threats"] > 0
    assert wide["flow_rollups"] == 2 * 24 * 40 and wide["flows"] == 0
    snat = {t["store"]: t["result"] for t in doc["timings"] if t["command"] == "snat"}
    assert "rates per-minute" in snat["raw"] and "rates mixed" in snat["rollups"] and "hourly-spread" in snat["wide"]

    again, _ = _run(tmp_path, "--stores", "rollups", "--commands", "snat")
    assert again["build_seconds"] == {} and [t["store"] for t in again["timings"]] == ["rollups"]
