"""Time typing into the Study form's adapter grid in a real browser (Debian Chromium), as a user
meets it: N cells typed one after the other, until every edit is applied and shown on the page.

    .venv/bin/python bench/bench_study_grid.py [--study demo] [--cells 8] [--repeat 3]

Each repeat reloads the page, types ``bench-<i>`` into the adapter column of the first N rows
(double-click, type, Enter), presses "Apply table edits" when the page has it, and stops the clock
when the page lists all N values among its validation messages (each names a missing folder).
Prints the median and range over repeats, with the machine's load average at the start.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _serve(db: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MERGELAB_DB": str(db), "MERGELAB_NO_AUTOSTART": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not come up")


def _idle(page) -> None:
    """Wait until the page is not re-running (Streamlit's status widget shows while it runs)."""
    page.wait_for_timeout(200)
    running = page.locator("[data-testid='stStatusWidget']")
    while running.count() and running.first.is_visible():
        page.wait_for_timeout(50)


def type_cells(page, url: str, study: str, cells: int) -> float:
    page.goto(f"{url}/study?study={study}")
    page.get_by_text("Spec is valid").wait_for(timeout=180_000)
    _idle(page)
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)  # the grid settles after scrolling
    box = grid.bounding_box()
    t = time.perf_counter()
    grid.click(position={"x": box["width"] * 0.75, "y": 35 + 17})  # row 1's adapter cell (rows are 35 px)
    for i in range(cells):  # typing on a selected cell edits it; Enter commits and selects the next row
        page.keyboard.type(f"bench-{i}", delay=60)  # a quick typist: 60 ms a key
        page.wait_for_timeout(200)
        page.keyboard.press("Enter")
        _idle(page)
    apply = page.get_by_role("button", name="Apply table edits")
    if apply.count():
        apply.click()
    main = page.locator("[data-testid='stMain']")
    while not all(f"bench-{i} does not exist" in main.inner_text() for i in range(cells)):
        page.wait_for_timeout(100)
        if time.perf_counter() - t > 300:
            page.screenshot(path="bench-study-grid-failed.png", full_page=True)
            raise SystemExit("the edits never all showed (screenshot: bench-study-grid-failed.png)")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="demo")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    from mergelab.study.bundled import open_store

    db = Path(tempfile.mkdtemp(prefix="mergelab-grid-")) / "m.db"
    open_store(db)
    proc, url = _serve(db)
    load = os.getloadavg()[0]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            times = []
            for _ in range(args.repeat):  # a fresh page each time: a new session, the form as stored
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                times.append(type_cells(page, url, args.study, args.cells))
                page.close()
                print(f"{times[-1]:.1f} s", flush=True)
            browser.close()
    finally:
        proc.terminate()
    print(
        f"# Study grid: {args.cells} cells typed and applied — {time.strftime('%Y-%m-%d')}, study {args.study}, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs: median {statistics.median(times):.1f} s "
        f"(min {min(times):.1f}, max {max(times):.1f}) over {args.repeat}"
    )


if __name__ == "__main__":
    main()
