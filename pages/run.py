"""Run page: queue a study's units, watch progress live, retry or cancel. The work runs in a
separate worker process, so reloading this page loses nothing."""

import json
import time

import streamlit as st

from mergelab import background, jobs, runner
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import need_study

st.title("Run")
store = get_store()
study = need_study(current_study())
kind = store.studies().set_index("id").loc[study, "kind"]
if kind == "paper":
    st.info("The paper study is published numbers only: nothing to run. Pick the demo or a live study.")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
if c1.button("Queue all units", key="run_queue"):
    spec = runner.load_study_spec(store, study)
    counts = jobs.enqueue(store, study, runner.plan_units(spec))
    st.toast(f"{counts['new']} new units queued, {counts['existing']} already planned")
if c2.button("Retry failed", key="run_retry"):
    st.toast(f"{jobs.retry_failed(store, study)} failed units queued again")
if c3.button("Cancel queued", key="run_cancel"):
    st.toast(f"{jobs.cancel_queued(store, study)} queued units cancelled")
if c4.button("Resume cancelled", key="run_resume"):
    st.toast(f"{jobs.requeue_cancelled(store, study)} units queued again")


@st.fragment(run_every=2.0)
def live():
    pid = background.ensure_worker(store, study)
    if pid:
        st.caption(f"started a worker (pid {pid}) on this machine")
    frame = jobs.jobs_frame(store, study)
    if frame.empty:
        st.info("No units planned yet: press 'Queue all units'.")
        return
    counts = frame["status"].value_counts().to_dict()
    total = len(frame)
    done = counts.get("done", 0)
    st.progress(done / total, text=f"{done} / {total} units done · {counts.get('running', 0)} running · "
                f"{counts.get('queued', 0)} queued · {counts.get('failed', 0)} failed · "
                f"{jobs.live_workers(store)} live worker(s)")
    frame["what"] = frame["payload"].map(lambda p: ", ".join(
        f"{k}={v}" for k, v in json.loads(p).items() if k != "params" and not isinstance(v, list)))
    frame["age_s"] = (time.time() - frame["updated_at"]).round(0)
    for status in ["running", "queued", "failed", "done", "cancelled"]:
        sub = frame[frame["status"] == status]
        if sub.empty:
            continue
        with st.expander(f"{status} ({len(sub)})", expanded=status in ("running", "failed")):
            cols = ["id", "kind", "what", "progress", "message", "attempts", "age_s"]
            if status == "failed":
                cols.append("error")
            st.dataframe(sub[cols], hide_index=True, width="stretch")


live()
