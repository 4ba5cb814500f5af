"""Render a report in headless Chromium and fail on what a reader would hit: `make check-report`.

Usage: check_report.py [REPORT_FOLDER]. Without a folder, generates a small synthetic series
(with a gap between loaded quarters and hostile strings planted in the data) and writes its
report first. The page is opened at 1280 and 390 px wide; the check fails on a console error,
a broken image, a request for anything outside the page (no http, https or other file), a
violation of an axe-core rule (WCAG 2.1 A/AA and axe's best practices, which include heading
order and landmarks), a page wider than the 390 px screen, a figure wider than its box, a
sortable header not operable from the keyboard, or a script from the data that ran.

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver) and the
Python packages selenium and axe-playwright-python (installed with --no-deps: only its bundled
axe-core 4.x script is used, no Playwright browser); `make check-report` installs both. Skips
with a clear message, exit 0, where Chromium is missing. Screenshots: reports/check-report-*.png.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

WIDTHS = (1280, 390)
HEIGHT = 900
HOSTILE = "<script>window.__injected = 1</script> | x | [a](javascript:alert(1))"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]

# Checks run inside the page; each returns a list of problems (empty when fine).
PAGE_CHECKS = """
const problems = [];
const width = window.innerWidth;
if (!document.documentElement.lang) problems.push("no lang attribute on <html>");
document.querySelectorAll("img").forEach((img, i) => {
  if (!img.complete || img.naturalWidth === 0) problems.push(`broken image #${i}`);
  if (!img.alt || !img.alt.trim()) problems.push(`image #${i} has no alt text`);
  if (img.getBoundingClientRect().width > width + 1)
    problems.push(`image #${i} wider than the page`);
});
if (document.documentElement.scrollWidth > width + 1)
  problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth}px > ${width}px`);
let last = 0;
document.querySelectorAll("h1, h2, h3, h4, h5, h6").forEach((h) => {
  const level = Number(h.tagName[1]);
  if (level > last + 1)
    problems.push(`heading skips from h${last} to ${h.tagName}: ${h.textContent.slice(0, 40)}`);
  last = level;
});
document.querySelectorAll("table.sortable th").forEach((th) => {
  if (!th.querySelector("button") || !th.hasAttribute("aria-sort"))
    problems.push(`sortable header without button or aria-sort: ${th.textContent.slice(0, 30)}`);
});
document.querySelectorAll("table").forEach((t, i) => {
  const box = t.closest(".scroll");
  if (!box && t.getBoundingClientRect().width > width + 1)
    problems.push(`table #${i} overflows the page`);
});
if (window.__injected) problems.push("a script planted in the data ran");
return problems;
"""


def _browser() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _make_report(work: Path) -> Path:
    """A small synthetic series (2019Q1, 2019Q2, 2020Q1) with hostile strings, and its report."""
    from surveillance.db import connect
    from surveillance.pipeline import load, rebuild
    from surveillance.report import write_report
    from surveillance.synthetic import generate_series

    generate_series(["2019Q1", "2019Q2", "2020Q1"], work / "zips", n_cases=300, seed=11)
    with connect(work / "db.duckdb") as con:
        load(con, [work / "zips"])
        con.execute(
            "UPDATE raw_reac SET pt = $pt WHERE primaryid IN (SELECT primaryid FROM raw_reac "
            "ORDER BY primaryid LIMIT 5)",
            {"pt": HOSTILE},
        )
        con.execute("UPDATE quarters SET zip_name = $z", {"z": HOSTILE + ".zip"})
        rebuild(con)
        return write_report(con, out=work / "report")


def _open(driver_path: str, browser_path: str, profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def _external_requests(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            # chrome:// pages are the browser's own (its new-tab page), not the report's.
            if not url.startswith(("data:", "chrome:", "chrome-untrusted:", "devtools:")):
                urls.append(url)
    return urls


def _keyboard_sort(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    buttons = driver.find_elements(By.CSS_SELECTOR, "#signal-table th button.sort")
    if not buttons:
        buttons = driver.find_elements(By.CSS_SELECTOR, "table.sortable th button.sort")
    if not buttons:
        return ["no sortable header found"]
    button = buttons[min(1, len(buttons) - 1)]
    driver.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    state = driver.execute_script(
        "return arguments[0].closest('th').getAttribute('aria-sort')", button
    )
    return [] if state in ("ascending", "descending") else ["Enter on a sort button did nothing"]


def _axe(driver: Any) -> dict[str, Any]:
    """Run axe-core (the copy bundled in axe-playwright-python) on the open page."""
    script = resources.files("axe_playwright_python").joinpath("axe.min.js").read_text("utf-8")
    driver.execute_script(script)
    return dict(
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
            ".then(r => done({violations: r.violations, passes: r.passes.length}))"
            ".catch(e => done({violations: [{id: 'axe-error', impact: 'critical', "
            "help: String(e), nodes: []}], passes: 0}));",
            AXE_TAGS,
        )
    )


def check(index: Path, shots: Path) -> list[str]:
    """Every problem found at each width (empty when the page passes)."""
    found = _browser()
    assert found is not None
    browser, driver_path = found
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as profile:
        driver = _open(driver_path, browser, Path(profile))
        driver.set_script_timeout(300)
        try:
            for width in WIDTHS:
                driver.execute_cdp_cmd(
                    "Emulation.setDeviceMetricsOverride",
                    {
                        "width": width,
                        "height": HEIGHT,
                        "deviceScaleFactor": 1,
                        "mobile": width < 600,
                    },
                )
                driver.get_log("performance")
                driver.get_log("browser")
                driver.get(index.resolve().as_uri())
                here = [f"{width}px: {p}" for p in driver.execute_script(PAGE_CHECKS)]
                here += [
                    f"{width}px: request to {u}"
                    for u in _external_requests(driver)
                    if u != index.resolve().as_uri()
                ]
                here += [
                    f"{width}px: console {e['level']}: {e['message']}"
                    for e in driver.get_log("browser")
                    if e["level"] in ("SEVERE", "WARNING")
                ]
                result = _axe(driver)
                for v in result["violations"]:
                    targets = "; ".join(str(n["target"]) for n in v["nodes"][:3])
                    here.append(
                        f"{width}px: axe {v['id']} ({v['impact']}): {v['help']} at {targets}"
                    )
                here += [f"{width}px: {p}" for p in _keyboard_sort(driver)]
                driver.save_screenshot(str(shots / f"check-report-{width}.png"))
                print(
                    f"check-report: {width}px: {result['passes']} axe rules passed, "
                    f"{len(here)} problems"
                )
                problems += here
        finally:
            driver.quit()
    return problems


def main(argv: list[str]) -> int:
    if _browser() is None:
        print(
            "check-report: SKIPPED: no Chromium and chromedriver found "
            "(install them with: apt-get install chromium chromium-driver)"
        )
        return 0
    shots = Path("reports")
    shots.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(argv[0]) if argv else _make_report(Path(tmp))
        problems = check(folder / "index.html", shots)
    for p in problems:
        print(f"check-report: FAIL: {p}")
    if problems:
        return 1
    print(f"check-report: OK at {' and '.join(f'{w}px' for w in WIDTHS)}; screenshots in {shots}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
