"""One real-browser test: the dashboard served by `streamlit run`, driven by Debian's Chromium.

Needs /usr/bin/chromium (Debian package `chromium`; the README's setup installs it). Without it
the test is skipped locally and fails in CI (CI=true), so a green CI always means it ran.
Screenshots are kept in artifacts/.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: Path, autostart: bool):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: the setup must install Debian's `chromium`")
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    port = _free_port()
    env = {**os.environ, "MERGELAB_DB": str(db)}
    if autostart:
        env.pop("MERGELAB_NO_AUTOSTART", None)
    else:
        env["MERGELAB_NO_AUTOSTART"] = "1"
    # the server's output goes to a file: a pipe nobody reads fills up (the dashboard's worker logs
    # there too) and the server then blocks on a write, and never exits
    log = Path(db).with_suffix(".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not come up: " + log.read_text(errors="replace"))
    return proc, url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = _serve(tmp_path_factory.mktemp("db") / "m.db", autostart=False)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic",
                  "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _open(page, url):
    page.goto(url, wait_until="domcontentloaded")
    page.locator("[data-testid='stSidebar']").wait_for(timeout=60_000)


def test_similarity_page_heatmap_on_demo(server, page):
    ARTIFACTS.mkdir(exist_ok=True)
    # a deep link as the fresh server's first visit: the page runs through app.py's router (its
    # sidebar menu and study picker), not Streamlit's old pages/ mode
    _open(page, server + "/similarity?study=demo")
    page.get_by_text("Hidden-state similarity").first.wait_for(timeout=60_000)
    page.locator("[data-testid='stSidebar']").get_by_text("Story").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stSidebar']").get_by_text("Study", exact=True).count() >= 1
    page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)
    assert page.get_by_text("wn_pos").count() >= 1
    page.get_by_text("Merging Difficulty Score").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "similarity_demo.png"), full_page=True)
    assert page.locator("text=Traceback").count() == 0


def test_task_swap_page_ranks_candidates(server, page):
    _open(page, server + "/task_swap?study=demo")
    page.get_by_text("Task swap: what if?").wait_for(timeout=60_000)
    page.get_by_text("Worst-MDS task in").wait_for(timeout=60_000)
    assert page.get_by_text("wn_pos").count() >= 1
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for(timeout=60_000)
    first_cell = grid.locator("[data-testid='glide-cell-0-0']")  # canvas grid: cells are hidden DOM
    first_cell.wait_for(state="attached", timeout=60_000)
    assert first_cell.inner_text() == "vader_intensity"  # the top-ranked replacement
    page.screenshot(path=str(ARTIFACTS / "task_swap_demo.png"), full_page=True)
    assert page.locator("text=Traceback").count() == 0


def test_paper_page_renders_charts(server, page):
    _open(page, server + "/paper?study=paper")
    page.get_by_text("The paper's published results").wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert page.get_by_text("Merging loss, 8 GLUE tasks merged").count() >= 1
    page.get_by_role("tab", name="MDS vs loss (Table 5)").click()
    page.get_by_text("Pearson r =").first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "paper_page_table5.png"), full_page=True)
    assert page.locator("text=Traceback").count() == 0


def _nav(page, title: str) -> None:
    """Click a page in the sidebar's menu (pages also link to each other in their text)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()


def _clean(page, name: str) -> None:
    """No traceback and no page-guard message anywhere on the page; a screenshot for the record."""
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"stakeholder_{name}.png"), full_page=True)
    assert page.locator("text=Traceback").count() == 0, name
    assert page.locator("text=This page could not finish").count() == 0, name


def test_the_stakeholder_path(tmp_path, page):
    """Overview → Merge loss → Similarity → Task swap (queue, run by the dashboard's own worker,
    before/after) → Export report, in Chromium, as someone who does not read code would."""
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = _serve(tmp_path / "m.db", autostart=True)
    try:
        _open(page, url + "/?study=demo")
        page.get_by_text("The headline").wait_for(timeout=60_000)
        page.get_by_text("collapses").first.wait_for(timeout=60_000)
        _clean(page, "1_overview")
        _nav(page, "Merge loss")
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.get_by_text("Collapse under every method").wait_for(timeout=60_000)
        _clean(page, "2_merge_loss")
        _nav(page, "Similarity")
        page.locator(".js-plotly-plot .heatmaplayer").first.wait_for(timeout=60_000)
        _clean(page, "3_similarity")
        _nav(page, "Task swap")
        page.get_by_text("Worst-MDS task in").wait_for(timeout=60_000)
        page.get_by_text("Before / after (Table 6 style)").wait_for(timeout=60_000)  # the shipped swap
        page.get_by_test_id("stSelectbox").filter(has_text="Swap in").click()
        page.get_by_role("option", name="wn_hypernym").click()  # one nobody merged yet
        page.get_by_role("button", name="Merge and evaluate this swap").click()
        queued = page.get_by_text(re.compile(r"Queued \d+ units"))
        queued.wait_for(timeout=60_000)
        units = int(re.search(r"Queued (\d+) units", queued.inner_text()).group(1))
        assert units > 0
        _nav(page, "Run")
        page.get_by_text(f"{units} / {units} units done").wait_for(timeout=600_000)  # the dashboard's worker
        _clean(page, "4_run")
        _nav(page, "Task swap")
        page.get_by_text("Before / after (Table 6 style)").wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").nth(0).wait_for(timeout=60_000)
        _clean(page, "5_swap_before_after")
        _nav(page, "Export")
        page.get_by_role("button", name="Build HTML report").click()
        page.get_by_role("button", name="Download report.html").wait_for(timeout=120_000)
        _clean(page, "6_export")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
