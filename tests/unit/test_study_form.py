"""The Study page's table rows → spec tasks (mergelab.study.form): settings the table does not show
survive an edit, an lm-eval task among them."""

from mergelab.study import form
from mergelab.study.spec import TaskSpec


def _row(**kw) -> dict:
    row = dict(task="t", data="d.jsonl", template="{text}", labels="", metric="accuracy", split="eval",
               probe_split="probe", answer_field="target")  # fmt: skip
    return {**row, **kw}


def test_an_lm_eval_task_keeps_its_definition_through_the_table():
    kept = {"data": "lm_tasks", "lm_eval": {"task": "toy_mc", "filter": "none"}}
    task = form.task_from_row(_row(data="lm_tasks"), kept)
    assert task["lm_eval"] == kept["lm_eval"] and "target_field" not in task and "labels" not in task
    TaskSpec.model_validate(task)  # still a valid task: no labels / target_field beside lm_eval


def test_a_classification_row_and_a_generation_row():
    cls = form.task_from_row(_row(labels="no, yes", answer_field="label"), {"max_new_tokens": 64})
    assert cls["labels"] == ["no", "yes"] and cls["label_field"] == "label" and cls["max_new_tokens"] == 64
    gen = form.task_from_row(_row(metric="rougeL"), {})
    assert gen["target_field"] == "target" and "labels" not in gen
