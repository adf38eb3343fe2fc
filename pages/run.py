"""Run page: queue a study's units, watch progress live, retry or cancel. The work runs in a
separate worker process, so reloading this page loses nothing."""

import json
import time

import streamlit as st

from mergelab.analysis import progress
from mergelab.storage import jobs
from mergelab.study import executors, planner
from mergelab.study.errors import SpecError
from mergelab.study.grants import Grants
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import need_study, show_table

page_start()  # through app.py's router, also when opened by a deep link
st.title("Run")
store = get_store()
study = need_study(current_study())
kind = store.studies().set_index("id").loc[study, "kind"]
if kind == "paper":
    st.info("The paper study is published numbers only: nothing to run. Pick the demo or a live study.")
    st.stop()

# Code from the model folder and pickle weights run only if the person running the study says so,
# here, now — a spec can ask for them but never grants them to itself.
try:
    spec = planner.load_study_spec(store, study)
except (SpecError, ValueError) as exc:
    spec = None
    st.error(f"This study's stored spec cannot be run: {exc}")
grants, blocked = Grants(), False
if spec is not None and (spec.trust_remote_code or spec.allow_pickle):
    st.warning(
        "This study asks for more trust than MergeLab gives by default. Only allow it for files "
        "you trust: both can run arbitrary code on this machine."
    )
    trust = spec.trust_remote_code and st.checkbox(
        "Allow code from the model folder (trust_remote_code) for workers started here", key="run_trust"
    )
    pickle = spec.allow_pickle and st.checkbox(
        "Allow pickle weight files (allow_pickle) for workers started here", key="run_pickle"
    )
    grants = Grants(trust_remote_code=bool(trust), allow_pickle=bool(pickle))
    blocked = (spec.trust_remote_code and not trust) or (spec.allow_pickle and not pickle)

# Where the dashboard's worker runs units: here, or on a Ray cluster (the study's `executor:` by default)
on_ray = (
    st.radio(
        "Run units",
        ["on this machine", "on a Ray cluster"],
        horizontal=True,
        key="run_executor",
        index=int(spec is not None and spec.executor == "ray"),
    )
    == "on a Ray cluster"
)
address = None
if on_ray:
    address = (
        st.text_input(
            "Ray cluster address",
            (spec.ray_address if spec is not None else None) or "",
            placeholder="auto, ray://host:10001 — empty: a local Ray on this machine",
            key="run_ray_address",
        ).strip()
        or None
    )
    st.caption(
        "The dashboard keeps the store: its worker plans units, sends them to Ray actors and writes "
        "what comes back. Units already running stay where they are."
    )
executor = "ray" if on_ray else "local"

go_key = f"run_go:{study}"
c0, c1, c2, c3, c4 = st.columns(5)
if c0.button(
    "Start the worker",
    type="primary",
    key="run_start",
    disabled=blocked,
    help="Runs the queued units in a worker process beside the dashboard; reloading the page or closing "
    "the tab does not stop it",
):
    st.session_state[go_key] = True
if c1.button("Queue all units", key="run_queue"):
    spec = planner.load_study_spec(store, study)
    counts = jobs.enqueue(store, study, planner.plan_units(spec))
    st.toast(f"{counts['new']} new units queued, {counts['existing']} already planned")
if c2.button("Retry failed", key="run_retry"):
    st.toast(f"{jobs.retry_failed(store, study)} failed units queued again")
if c3.button("Cancel queued", key="run_cancel"):
    st.toast(f"{jobs.cancel_queued(store, study)} queued units cancelled")
if c4.button("Resume cancelled", key="run_resume"):
    st.toast(f"{jobs.requeue_cancelled(store, study)} units queued again")


def _duration(seconds: float) -> str:
    if not seconds == seconds:  # NaN: nothing finished yet to estimate from
        return "—"
    m, sec = divmod(round(seconds), 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else (f"{m} min {sec:02d} s" if m else f"{sec} s")


@st.fragment(run_every=2.0)
def live():
    if blocked:
        st.info("No worker is started for this study until you allow what it asks for above.")
    elif st.session_state.get(go_key):  # only once asked to: opening the page starts nothing
        pid = executors.ensure_worker(store, study, grants, executor, address)
        if pid:
            st.caption(f"started the dashboard's worker (pid {pid})" + (" with Ray actors" if on_ray else ""))
    elif jobs.status_counts(store, study).get("queued", 0):
        st.info("Units are queued: press **Start the worker** to run them here (or run `mergelab worker`).")
    frame = jobs.jobs_frame(store, study)
    if frame.empty:
        st.info("No units planned yet: press 'Queue all units'.")
        return
    st.caption(f"{jobs.live_workers(store)} live worker(s) on this store.")
    batches = progress.run_batches(frame)
    for b in reversed(list(batches.itertuples())):  # newest batch first
        finished = b.done + b.failed + b.cancelled
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.queued_at)) if b.queued_at else "shipped"
        eta = "" if not (b.queued or b.running) else f" · about {_duration(b.eta_s)} left"
        st.progress(
            finished / b.units,
            text=f"batch queued {when} ({b.what}): {b.done} / {b.units} units done · "
            f"{b.running} running · {b.queued} queued · {b.failed} failed{eta}",
        )
    actors = progress.actor_progress(frame)
    if not actors.empty:
        st.caption(
            "Per Ray actor: "
            + " · ".join(f"{a.actor}: {a.done} done, {a.running} running" for a in actors.itertuples())
        )
    for f in progress.failures(frame):
        with st.expander(f"✗ {f['count']} unit(s) failed ({', '.join(f['kinds'])}): {f['error'][:160]}"):
            st.caption(f"units {', '.join(map(str, f['units'][:20]))}" + (" …" if len(f["units"]) > 20 else ""))
            st.code(f["traceback"] or f["error"], language="text")
    frame["what"] = frame["payload"].map(
        lambda p: ", ".join(f"{k}={v}" for k, v in json.loads(p).items() if k != "params" and not isinstance(v, list))
    )
    frame["age_s"] = (time.time() - frame["updated_at"]).round(0)
    for status in ["running", "queued", "done", "cancelled"]:
        sub = frame[frame["status"] == status]
        if sub.empty:
            continue
        with st.expander(f"{status} ({len(sub)})", expanded=status == "running"):
            show_table(sub[["id", "kind", "what", "progress", "message", "attempts", "age_s"]], width="stretch")


live()
