"""Headless Chromium through selenium for the report tests and `make screenshots`.

Debian's `chromium` and `chromium-driver` packages (installed by `make test` when missing); a fresh
profile per session and every background download (updates, sync, field trials) off, so the only
traffic a page can cause is its own. `make screenshots` runs the report's browser test with
$EGRESSLENS_SCREENSHOTS set: the documentation's images come from the very pages and browser sessions
the test checks (:func:`build_pages`, :func:`save_screenshots`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--metrics-recording-only", "--no-default-browser-check")


def available() -> str | None:
    """None when the browser test can run, else why not."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for p in (CHROMIUM, CHROMEDRIVER):
        if not p.exists():
            return f"{p} is missing (make test installs Debian's chromium and chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900, dark: bool = False):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="egresslens-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        if width < 500:  # below the narrowest window headless Chromium opens: a phone's viewport
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
        # the page's `prefers-color-scheme` (the flags above alone leave the new headless mode light)
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- the pages the browser test drives, and `make screenshots` from the same run ------------------------

SCREENSHOTS = "EGRESSLENS_SCREENSHOTS"  # a directory: the browser test also saves the documentation's images there


def build_pages(directory: Path) -> tuple[Path, Path]:
    """(report, drilldown of the compromised pod) of two simulated days, as `egresslens report --since 24h
    --compare-to 24h --policy policy.json` and `egresslens drilldown 10.244.3.17 --policy policy.json`
    write them. The days hold every section's material: the VM spoke's nightly backup over the SNAT
    warning level, a compromised pod, rules to narrow, and a dependency allowed on the first day and
    denied on the second beside a destination new on the second (what changed)."""
    from datetime import datetime, timedelta

    from reportdata import START, flow, make_store, simulated_store
    from typer.testing import CliRunner

    from egresslens import store
    from egresslens.cli import app

    db, _ = simulated_store(directory, batch=True)
    db = db.rename(directory / "egresslens.duckdb")  # the default store, as the docs' images show it
    con = store.connect(db, read_only=True)
    try:
        fw = con.execute("SELECT any_value(firewall) FROM flows").fetchall()[0][0]
    finally:
        con.close()
    day1 = datetime(START.year, START.month, START.day, 9)
    day2 = day1 + timedelta(days=1)
    make_store(db, flow(day1, "registry.npmjs.org", source="10.244.1.20", rule="allow-npm", n=300, firewall=fw)
               + flow(day2, "registry.npmjs.org", "Deny", source="10.244.1.20", n=240, firewall=fw)
               + flow(day2, "telemetry.new-vendor.example", source="10.244.2.9", rule="allow-telemetry", n=120,
                      firewall=fw))
    runner, here = CliRunner(), os.getcwd()
    os.chdir(directory)  # relative paths, as a reader types them: the pages and images name no temporary directory
    try:
        for args in (["report", "--since", "24h", "--compare-to", "24h", "--policy", "logs/policy.json"],
                     ["drilldown", "10.244.3.17", "--policy", "logs/policy.json"]):
            result = runner.invoke(app, args, env={"EGRESSLENS_DB": ""})
            assert result.exit_code in (0, 1, 7), result.output
    finally:
        os.chdir(here)
    return directory / "report.html", directory / "drilldown.html"


def screenshot(driver, path: Path, selector: str | None = None, max_height: int = 2400) -> None:  # noqa: ANN001
    """The element `selector` (with a margin), or the screen the reader sees first, as a PNG."""
    import base64

    params: dict = {"format": "png"}
    if selector:
        rect = driver.execute_script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};", selector)
        params.update(captureBeyondViewport=True, clip={
            "x": max(rect["x"] - 12, 0), "y": max(rect["y"] - 12, 0), "width": rect["width"] + 24,
            "height": min(rect["height"] + 24, max_height), "scale": 1})
    path.write_bytes(base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]))


def save_screenshots(driver, page: Path, width: int, dark: bool) -> list[Path]:  # noqa: ANN001
    """With $EGRESSLENS_SCREENSHOTS set (`make screenshots`): the documentation's images of `page` as the
    browser test shows it. At the desktop width in the light theme: the report's header and each section,
    the drilldown's verdict; on a phone in the dark theme: the first screen of each page."""
    import os

    out = os.environ.get(SCREENSHOTS)
    if not out:
        return []
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "report" if page.stem.startswith("report") else "drilldown"
    written = []
    if width >= 1000 and not dark:
        if name == "report":
            targets = [("header", "header")] + [
                (sid, f"section#{sid}") for sid in driver.execute_script(
                    "return Array.from(document.querySelectorAll('section[data-section]')).map(s => s.id)")]
        else:
            targets = [("verdict", "main > .verdict-banner, main > .verdict-quiet")]
        for label, selector in targets:
            written.append(out_dir / f"{name}-{label}.png")
            screenshot(driver, written[-1], selector)
    else:
        written.append(out_dir / f"{name}-phone-{'dark' if dark else 'light'}.png")
        screenshot(driver, written[-1])
    return written
