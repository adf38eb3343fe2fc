"""Time every dashboard page from stored results, as a user meets it: the first render of each page
and each control change after it (Streamlit's AppTest, in this process; no browser).

    .venv/bin/python bench/bench_pages.py [--study demo] [--repeat 3] [--kept]

Prints one row per step: page, step, seconds (median of --repeat runs, each on a fresh AppTest and
a fresh store copy, so caches start cold for the first render and warm for the changes after it).

``--kept``: what a *new* dashboard process meets on a store whose analyses an earlier process (or a
`mergelab report`) already computed: each repeat first renders every page once, untimed (that keeps
the analysis tables and bootstrap draws in ``cache/`` beside the store), then empties this process's
own caches (``st.cache_data`` and the draws in memory) and times the pages. Module imports are not
in it (the untimed pass imported them; a new server pays them once, ≈ 2 s on this machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["MERGELAB_NO_AUTOSTART"] = "1"

from streamlit.testing.v1 import AppTest  # noqa: E402

# page → the control changes a user makes there, in order: (widget kind, key, value)
STEPS = {
    "overview": [],
    "merge_loss": [("slider", "loss_collapse", -40)],
    "similarity": [
        ("selectbox", "sim_distance", "cka"),
        ("selectbox", "sim_pooling", "first"),
        ("select_slider", "sim_boot", 500),
        ("slider", "sim_k", 3),
    ],
    "statistics": [],
    "task_swap": [("slider", "swap_m", 6)],
    "theory": [],
    "run": [],
    "export": [("button", "export_build", None)],
    "study": [],
    "paper": [],
}


def _act(at: AppTest, kind: str, key: str, value):
    if kind == "button":
        at.button(key=key).click()
    elif kind == "selectbox":
        at.selectbox(key=key).select(value)
    elif kind == "select_slider":
        at.select_slider(key=key).set_value(value)
    else:
        at.slider(key=key).set_value(value)


def forget(db: Path, kept: bool) -> None:
    """Empty this process's caches (as a new server starts) and, unless ``kept``, the tables kept
    beside the store too."""
    import shutil

    import streamlit as st

    from mergelab.analysis import uncertainty

    st.cache_data.clear()
    uncertainty._DRAWS.clear()
    if not kept:
        shutil.rmtree(db.parent / "cache", ignore_errors=True)


def run_once(study: str, db: Path, kept: bool = False) -> list[tuple[str, str, float]]:
    os.environ["MERGELAB_DB"] = str(db)
    out = []
    for page, steps in STEPS.items():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.query_params["study"] = study
        t = time.perf_counter()
        at.run()  # opening the app renders its default page, the Overview
        if page == "overview":
            out.append((page, "opening the app (AppTest's set-up + first render)", time.perf_counter() - t))
            # AppTest scans every installed package for Streamlit components on its first run (≈ 1 s
            # here), which a server does once when it starts: the Overview again, caches as they were
            # before that first run, is the page's own first render
            forget(db, kept)
            t = time.perf_counter()
            at.run()
            out.append((page, "first render", time.perf_counter() - t))
        else:
            t = time.perf_counter()
            at.switch_page(f"pages/{page}.py").run()
            out.append((page, "first render", time.perf_counter() - t))
        assert not at.exception, (page, at.exception)
        for kind, key, value in steps:
            _act(at, kind, key, value)
            t = time.perf_counter()
            at.run()
            out.append((page, f"{kind} {key} → {value}", time.perf_counter() - t))
            assert not at.exception, (page, key, at.exception)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="demo")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--kept", action="store_true", help="time a new process on tables an earlier one kept")
    args = p.parse_args()
    from mergelab.study.bundled import open_store

    runs = []
    for _ in range(args.repeat):
        db = Path(tempfile.mkdtemp(prefix="mergelab-pages-")) / "m.db"
        open_store(db)  # the bundled studies loaded before timing starts
        forget(db, kept=False)
        if args.kept:
            run_once(args.study, db)  # an earlier process: computes and keeps every table
            forget(db, kept=True)
        runs.append(run_once(args.study, db, args.kept))
    print(
        f"# page timings — {time.strftime('%Y-%m-%d')} — study {args.study}, median of {args.repeat} "
        f"(each a fresh store and AppTest{'; tables kept by an earlier process' if args.kept else ''}); "
        f"{os.cpu_count()} CPUs"
    )
    print("| page | step | seconds (median) | min | max |")
    print("|---|---|---|---|---|")
    for i, (page, step, _) in enumerate(runs[0]):
        values = [r[i][2] for r in runs]
        print(f"| {page} | {step} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
