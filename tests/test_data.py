"""Task data: dataset folders in the hub's layout, named splits, list-valued answers, re-reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergelab.study.data import load_task
from mergelab.study.errors import SpecError
from mergelab.study.spec import TaskSpec


def write_sni_dataset(folder: Path, n: int = 12) -> Path:
    """A dataset folder laid out like a Lots-of-LoRAs / Super-NaturalInstructions task on the hub:
    data/{train,valid,test}-00000-of-00001.parquet with `input`, `output` (a list of references), `id`."""
    import pandas as pd

    (folder / "data").mkdir(parents=True)
    for split, size in (("train", n), ("valid", 4), ("test", n)):
        rows = [
            {
                "id": f"{split}-{i}",
                "input": f"Definition: say yes or no. Input: item {i}. Output:",
                "output": ["yes" if i % 2 else "no", "y" if i % 2 else "n"],
            }
            for i in range(size)
        ]
        pd.DataFrame(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a task\n")
    return folder


def test_dataset_folder_with_named_splits_and_reference_lists(tmp_path):
    folder = write_sni_dataset(tmp_path / "task1391")
    task = TaskSpec(
        data=str(folder),
        split="test",
        probe_split="train",
        template="{input}",
        label_field="output",
        labels=["no", "yes"],
    )
    data = load_task("t", task, k=5, eval_limit=None, seed=0)
    assert len(data.eval_rows) == 12 and all(r["id"].startswith("test-") for r in data.eval_rows)
    assert len(data.probe_rows) == 5 and all(r["id"].startswith("train-") for r in data.probe_rows)
    assert [data.label_index(r) for r in data.eval_rows] == [int(r["id"].split("-")[1]) % 2 for r in data.eval_rows]
    gen = TaskSpec(
        data=str(folder), split="valid", probe_split="train", template="{input}", target_field="output", metric="rougeL"
    )
    assert len(load_task("g", gen, k=2, eval_limit=None, seed=0).eval_rows) == 4


def test_a_split_the_dataset_does_not_have_is_named_with_the_ones_it_has(tmp_path):
    folder = write_sni_dataset(tmp_path / "task")
    with pytest.raises(SpecError) as err:
        load_task(
            "t",
            TaskSpec(data=str(folder), template="{input}", target_field="output", metric="rougeL"),
            k=2,
            eval_limit=None,
            seed=0,
        )
    msg = str(err.value)
    assert "['test', 'train', 'valid']" in msg and "'eval'" in msg


def test_an_edited_file_is_read_again(tmp_path):
    """Unit keys hash the data file's contents, so the rows must follow the contents too (a
    long-lived worker or dashboard must not keep serving the old rows)."""
    path = tmp_path / "t.jsonl"
    rows = lambda label: "".join(
        json.dumps({"text": f"w{i}", "label": label, "split": s}) + "\n"
        for i, s in enumerate(["eval", "eval", "probe"])
    )
    path.write_text(rows("no"))
    spec = TaskSpec(data=str(path), labels=["no", "yes"])
    assert {r["label"] for r in load_task("t", spec, 1, None, 0).eval_rows} == {"no"}
    path.write_text(rows("yes"))
    assert {r["label"] for r in load_task("t", spec, 1, None, 0).eval_rows} == {"yes"}


def test_rougel_takes_the_best_of_several_references(tmp_path):
    """Super-NaturalInstructions scores a prediction against its best-matching reference."""
    import dataclasses

    from mergelab.models.loaded import LoadedModel as ModelRunner

    folder = write_sni_dataset(tmp_path / "task")
    spec = TaskSpec(
        data=str(folder), split="test", probe_split="train", template="{input}", target_field="output", metric="rougeL"
    )
    data = load_task("g", spec, k=1, eval_limit=None, seed=0)
    data = dataclasses.replace(data, eval_rows=data.eval_rows[:2])  # outputs [no, n], [yes, y]

    class Fake(ModelRunner):
        def __init__(self, answers):
            self.answers = answers

        def generate(self, task, max_new_tokens=32):
            return self.answers

    assert Fake(["n", "y"]).evaluate(data) == pytest.approx(100.0)  # the second reference matches
    assert Fake(["no", "maybe"]).evaluate(data) == pytest.approx(50.0)


def test_content_id_of_a_dataset_folder_sees_its_nested_data_files(tmp_path):
    import os

    import pandas as pd

    from mergelab.io.content import content_id

    folder = write_sni_dataset(tmp_path / "task")
    before = content_id(str(folder))
    target = folder / "data" / "test-00000-of-00001.parquet"
    pd.DataFrame([{"id": "x", "input": "changed", "output": ["no"]}]).to_parquet(target)
    os.utime(target, ns=(1, 1))
    assert content_id(str(folder)) != before


def test_a_causal_study_runs_on_a_dataset_folder(tmp_path):
    """End to end: a rougeL task whose data is a hub-layout dataset folder (relative path in the
    YAML), evaluated against lists of references."""
    import yaml

    from mergelab.analysis import views
    from mergelab.storage.store import Store

    from tinymodels import make_tiny_causal_study, run_study

    path = make_tiny_causal_study(tmp_path)
    write_sni_dataset(tmp_path / "datasets" / "task1391")
    spec = yaml.safe_load(path.read_text())
    spec["tasks"]["c2"] = {
        "data": "datasets/task1391",
        "split": "test",
        "probe_split": "train",
        "template": "{input}",
        "target_field": "output",
        "metric": "rougeL",
    }
    path.write_text(yaml.safe_dump(spec))
    store = Store(tmp_path / "s.db")
    run_study(store, path, "tiny-causal")
    experts = views.expert_table(store, "tiny-causal").set_index("task")
    assert experts.loc["c2", "metric"] == "rougeL" and 0 <= experts.loc["c2", "score"] <= 100
