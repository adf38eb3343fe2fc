"""The Study page's form as plain data: text fields and table rows → a spec dict, and each
validation problem → the form section it belongs to. Pure functions (no Streamlit), so the page
only draws and the conversion is tested on its own."""

from __future__ import annotations

import math

from .errors import SpecError

#: spec field (first part of a problem's path) → the form section that shows it
SECTIONS = {
    "name": "base",
    "base": "base",
    "architecture": "base",
    "adapters": "adapters",
    "tasks": "tasks",
    "groups": "groups",
    "pool": "groups",
    "random_groups": "groups",
    "pairwise": "groups",
    "swaps": "groups",
    "pair_methods": "methods",
    "best_of": "methods",
    "methods": "methods",
    "hidden": "settings",
    "eval_limit": "settings",
    "batch_size": "settings",
    "seed": "settings",
    "dtype": "settings",
    "trust_remote_code": "trust",
    "allow_pickle": "trust",
}


def cell_text(value) -> str:
    """A table cell as text; empty for the None / NaN of a freshly added row."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def groups_from_text(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """One group per line, ``name: task, task, …``. Task names hold no ':', so the name is everything
    before the last one (swap groups are named ``swap:<group>:<out>-><in>``). A non-empty line without
    ':' is a problem, not silently dropped."""
    groups, problems = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            problems.append(("groups", f"line {number} ({line.strip()!r}) has no ':' — write name: task, task"))
            continue
        name, _, tasks = line.rpartition(":")
        groups[name.strip()] = [t.strip() for t in tasks.split(",") if t.strip()]
    return groups, problems


def groups_to_text(groups: dict[str, list[str]]) -> str:
    return "\n".join(f"{g}: {', '.join(ts)}" for g, ts in groups.items())


def task_from_row(row: dict, kept: dict) -> dict:
    """A task from its table row (task, data, template, labels, metric, split, probe_split,
    answer_field), keeping the settings the table does not show from ``kept`` (the draft's task)."""
    out = {k: v for k, v in kept.items() if k not in ("labels", "label_field", "target_field")}
    labels = [x.strip() for x in cell_text(row.get("labels")).split(",") if x.strip()]
    answer = cell_text(row.get("answer_field"))
    out.update(
        {
            "data": cell_text(row.get("data")),
            "template": cell_text(row.get("template")) or "{text}",
            "metric": cell_text(row.get("metric")) or "accuracy",
            "split": cell_text(row.get("split")) or "eval",
            "probe_split": cell_text(row.get("probe_split")) or "probe",
        }
    )
    if out.get("lm_eval"):  # lm-eval's task definition gives prompts, answers and metric
        return out
    if labels:
        out.update(labels=labels, label_field=answer or "label")
    else:
        out["target_field"] = answer or "target"
    return out


def by_section(error: SpecError | None, extra: list[tuple[str, str]] = ()) -> dict[str, list[str]]:
    """Problems grouped by the form section showing them ("other" for the spec as a whole)."""
    out: dict[str, list[str]] = {}
    for field, message in [*(error.issues if error else []), *extra]:
        section = SECTIONS.get(field.split(".")[0], "other") if field else "other"
        out.setdefault(section, []).append(f"{field}: {message}" if field else message)
    return out


SMALL_GROUP_NOTE = (
    "{groups}: fewer than 3 tasks. They merge and score, but HiddenSim (Eq. 2 rescales distances "
    "by their max − min, and one pair has a single distance), MDS, Table 5 and the Task swap page "
    "need at least 3."
)


def small_groups(spec) -> list[str]:
    """The groups (not pairs) of a parsed spec with fewer than 3 tasks."""
    return [g for g, tasks in spec.groups.items() if len(tasks) < 3]
