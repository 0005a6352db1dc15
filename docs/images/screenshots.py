"""Screenshots of the report, one per section, for the documentation: `make screenshots`.

Simulates two days of an AKS egress firewall, ingests them, writes the report the way
`egresslens report --since 24h --compare-to 24h --policy policy.json` does, opens it in headless
Chromium (tests/browser.py) and writes docs/images/report-<section>.png.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from browser import available, chromium  # noqa: E402
from reportdata import flow, make_store  # noqa: E402

from egresslens import store  # noqa: E402
from egresslens.recommend import load_policy  # noqa: E402
from egresslens.report import build_report, windows, write  # noqa: E402
from egresslens.simulate import generate  # noqa: E402
from egresslens.simulate import write as write_logs  # noqa: E402
from egresslens.ingest import ingest_files  # noqa: E402

OUT = ROOT / "docs" / "images"
WIDTH = 1200


def changes(fw: str) -> list[dict]:
    """What the simulation does not vary from day to day: a dependency allowed yesterday and denied
    today, a new destination, and a two-minute burst of connections to one storage account."""
    day1, day2 = datetime(2026, 3, 1, 9), datetime(2026, 3, 2, 9)
    rows = flow(day1, "registry.npmjs.org", source="10.244.1.20", rule="allow-npm", n=300, firewall=fw)
    rows += flow(day2, "registry.npmjs.org", "Deny", source="10.244.1.20", n=240, firewall=fw)
    rows += flow(day2, "telemetry.new-vendor.example", source="10.244.2.9", rule="allow-telemetry", n=120, firewall=fw)
    burst = flow(datetime(2026, 3, 2, 14), "stcheckoutweu01.blob.core.windows.net", source="10.244.5.26",
                 rule="allow-storage", n=5_200, firewall=fw)
    for i, row in enumerate(burst):
        row["time"] = datetime(2026, 3, 2, 14) + timedelta(milliseconds=23 * i)
    return rows + burst


def build(tmp: Path) -> Path:
    logs = tmp / "logs"
    write_logs(generate(hours=48, events_per_hour=6_000, seed=7, start=datetime(2026, 3, 1)), logs,
               fmt="structured", layout="storage")
    db = tmp / "egresslens.duckdb"
    con = store.connect(db)
    try:
        ingest_files(con, [p for p in logs.iterdir() if p.is_dir()])
        fw = con.execute("SELECT any_value(firewall) FROM flows").fetchall()[0][0]
    finally:
        con.close()
    make_store(db, changes(fw))
    con = store.connect(db)
    try:
        window, baseline = windows(con, "24h", "24h")
        report = build_report(con, window, baseline=baseline, policy=load_policy(logs / "policy.json"),
                              db="egresslens.duckdb", generated_at=datetime(2026, 3, 3, 6, 0))
    finally:
        con.close()
    return write(report, tmp / "report.html", "html", report.exit_code())[0]


def shoot(driver, selector: str, path: Path) -> None:
    rect = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};", selector)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": max(rect["x"] - 12, 0), "y": max(rect["y"] - 12, 0), "width": rect["width"] + 24,
                 "height": min(rect["height"] + 24, 2400), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def main() -> int:
    why = available()
    if why:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        report = build(Path(tmp))
        with chromium(width=WIDTH, height=1000) as driver:
            driver.get(report.as_uri())
            while not driver.execute_script("return window.egresslensReportReady === true"):
                time.sleep(0.2)
            time.sleep(1)  # let plotly finish its transitions
            shoot(driver, "header", OUT / "report-header.png")
            for sid in driver.execute_script(
                    "return Array.from(document.querySelectorAll('section[data-section]')).map(s => s.id)"):
                shoot(driver, f"section#{sid}", OUT / f"report-{sid}.png")
                print(f"wrote {OUT / f'report-{sid}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
