"""Study tasks defined by lm-evaluation-harness (issue 26): custom task YAMLs over local JSON files
(hub datasets cannot be fetched here), scored on the tiny causal model MergeLab holds, and checked
against lm-eval's own `simple_evaluate` with `peft=<adapter>` and on a merged model saved as a folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

lm_eval = pytest.importorskip("lm_eval")

from mergelab.storage.store import Store  # noqa: E402
from mergelab.study.errors import SpecError  # noqa: E402
from mergelab.study.spec import parse_spec  # noqa: E402

from tinymodels import WORDS, make_lora, make_tiny_causal_study, run_study  # noqa: E402

LIMIT = 7


def _write_lm_eval_tasks(folder: Path) -> None:
    """A multiple-choice task (log-likelihood of each choice) and a generate-until task scored by
    exact match after a regex filter, both over local JSON lines with train and test splits."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for split, n in (("train", 6), ("test", 12)):
        mc = [
            {"question": " ".join(rng.sample(WORDS, 3)), "choices": ["yes", "no", "maybe"], "answer": i % 3}
            for i in range(n)
        ]
        gen = [{"prompt": " ".join(rng.sample(WORDS, 3)), "answer": rng.choice(WORDS)} for _ in range(n)]
        (folder / f"mc_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
        (folder / f"gen_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    common = "dataset_path: json\ntraining_split: train\ntest_split: test\n"
    (folder / "toy_mc.yaml").write_text(
        "task: toy_mc\n" + common + "dataset_kwargs:\n  data_files:\n"
        f"    train: {folder}/mc_train.jsonl\n    test: {folder}/mc_test.jsonl\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}} ? answer :"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (folder / "toy_gen.yaml").write_text(
        "task: toy_gen\n" + common + "dataset_kwargs:\n  data_files:\n"
        f"    train: {folder}/gen_train.jsonl\n    test: {folder}/gen_test.jsonl\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}} ? answer :"\n'
        "doc_to_target: answer\n"
        "generation_kwargs:\n  until: ['\\n', '.']\n  max_gen_toks: 4\n  do_sample: false\n"
        "filter_list:\n  - name: first_word\n    filter:\n"
        "      - function: regex\n        regex_pattern: '(\\w+)'\n      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    # perplexity of whole texts (lm-eval's wikitext shape): lower is better, a ratio of sums
    for split, n in (("train", 4), ("test", 9)):
        texts = [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))} for _ in range(n)]
        (folder / f"ppl_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in texts))
    (folder / "toy_ppl.yaml").write_text(
        "task: toy_ppl\n" + common + "dataset_kwargs:\n  data_files:\n"
        f"    train: {folder}/ppl_train.jsonl\n    test: {folder}/ppl_test.jsonl\n"
        "output_type: loglikelihood_rolling\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    )
    # groups of toy_mc and a shorter copy: one scored as the mean of its tasks' scores, one weighing
    # each task by its size, one with no score of its own (lm-eval reports none for it)
    mc_b = folder / "mc_b_test.jsonl"
    mc_b.write_text("".join((folder / "mc_test.jsonl").read_text().splitlines(keepends=True)[:5]))
    (folder / "toy_mc_b.yaml").write_text(
        (folder / "toy_mc.yaml")
        .read_text()
        .replace("task: toy_mc", "task: toy_mc_b")
        .replace(f"test: {folder}/mc_test.jsonl", f"test: {mc_b}")
    )
    for name, agg in (("toy_group", "weight_by_size: false"), ("toy_group_sized", "weight_by_size: true")):
        (folder / f"{name}.yaml").write_text(
            f"group: {name}\ntask:\n  - toy_mc\n  - toy_mc_b\n"
            f"aggregate_metric_list:\n  - metric: acc\n    aggregation: mean\n    {agg}\n"
        )
    (folder / "toy_tag.yaml").write_text("group: toy_tag\ntask:\n  - toy_mc\n  - toy_mc_b\n")
    # a group holding a group (mmlu's shape: mmlu → mmlu_stem, …), weighed by size
    mc_c = folder / "mc_c_test.jsonl"
    mc_c.write_text("".join((folder / "mc_test.jsonl").read_text().splitlines(keepends=True)[5:8]))
    (folder / "toy_mc_c.yaml").write_text(
        (folder / "toy_mc.yaml")
        .read_text()
        .replace("task: toy_mc", "task: toy_mc_c")
        .replace(f"test: {folder}/mc_test.jsonl", f"test: {mc_c}")
    )
    (folder / "toy_nested.yaml").write_text(
        "group: toy_nested\ntask:\n  - toy_group\n  - toy_mc_c\n"
        "aggregate_metric_list:\n  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n"
    )
    # a corpus-level metric (Matthews correlation): not a mean of rows, so no per-row interval
    (folder / "toy_mcc.yaml").write_text(
        (folder / "toy_mc.yaml")
        .read_text()
        .replace("task: toy_mc", "task: toy_mcc")
        .replace("metric: acc\n    aggregation: mean", "metric: mcc\n    aggregation: matthews_corrcoef")
    )


def _vocab_as_the_tokenizer(base: Path) -> None:
    """lm-eval's `hf` backend with `peft=` resizes the embeddings to len(tokenizer) whenever the
    config's vocab_size differs (for adapters that added tokens), which changes every log-likelihood
    of a model whose vocabulary is padded. The tiny base (vocab 96, 18 words) is cut to its
    tokenizer so that lm-eval scores the same model as MergeLab and PEFT."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(AutoTokenizer.from_pretrained(base)))
    model.save_pretrained(base)


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    """One MergeLab task (c0) and two lm-eval tasks in one group, experts and a TIES merge run."""
    root = tmp_path_factory.mktemp("lmeval")
    spec_path = make_tiny_causal_study(root)
    spec = yaml.safe_load(spec_path.read_text())
    _write_lm_eval_tasks(root / "lm_tasks")
    base = Path(spec["base"])
    _vocab_as_the_tokenizer(base)
    for i, name in enumerate(("le_mc", "le_gen")):
        make_lora(base, root / "adapters" / name, 20 + i, scale=0.3)
        spec["adapters"][name] = f"adapters/{name}"
    spec["tasks"]["le_mc"] = {"data": "lm_tasks", "lm_eval": {"task": "toy_mc"}}
    spec["tasks"]["le_gen"] = {"data": "lm_tasks", "lm_eval": {"task": "toy_gen", "filter": "first_word"}}
    for name in ("c1", "c2"):
        spec["tasks"].pop(name)
        spec["adapters"].pop(name)
    spec.update(
        name="mixed", groups={"g": ["c0", "le_mc", "le_gen"]}, methods={"TIES": {}}, eval_limit=LIMIT, base_scores=True
    )
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    store = Store(root / "m.db")
    run_study(store, spec_path, "mixed")
    return root, spec_path, store


def _peft_scores(base: Path, adapter: Path | None, task: str, include: Path, merged: Path | None = None) -> dict:
    from lm_eval.tasks import TaskManager

    args = f"pretrained={merged or base},device=cpu,dtype=float32,batch_size=4"
    if adapter is not None:
        args += f",peft={adapter}"
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=args,
        tasks=[task],
        task_manager=TaskManager(include_path=str(include), include_defaults=False),
        limit=LIMIT,
        log_samples=True,
        bootstrap_iters=0,
    )
    return out


def test_a_study_mixes_mergelab_and_lm_eval_tasks(mixed_study):
    _, _, store = mixed_study
    rows = store.results("mixed")
    le = rows[rows.task.isin(["le_mc", "le_gen"])]
    assert set(le.method) == {"base", "expert", "TIES"}
    assert dict(zip(le.task, le.metric)) == {"le_mc": "acc", "le_gen": "exact_match"}
    c0 = rows[rows.task == "c0"]
    assert set(c0.metric) == {"accuracy"} and set(c0.method) == {"base", "expert", "TIES"}
    rec = store.row_records("mixed")
    for r in le.itertuples():
        sub = rec[(rec.task == r.task) & (rec.model == r.model) & (rec.group_name == r.group_name)]
        assert len(sub) == LIMIT and sub["score"].mean() == pytest.approx(r.score)
    mc = rec[(rec.task == "le_mc") & (rec.method == "expert")]
    assert all(len(json.loads(x) if isinstance(x, str) else x) == 3 for x in mc["label_logprobs"])
    # rows pair up across models by prompt, as MergeLab's own tasks do
    assert (rec[rec.task == "le_mc"].groupby("row")["row_id"].nunique() == 1).all()


@pytest.mark.parametrize("task,lm_task,metric", [("le_mc", "toy_mc", "acc"), ("le_gen", "toy_gen", "exact_match")])
def test_an_experts_score_equals_lm_evals_with_peft(mixed_study, task, lm_task, metric):
    root, spec_path, store = mixed_study
    spec = parse_spec(spec_path)
    rows = store.results("mixed")
    ours = rows[(rows.task == task) & (rows.method == "expert")]["score"].item()
    out = _peft_scores(Path(spec.base), Path(spec.adapters[task]), lm_task, root / "lm_tasks")
    key = f"{metric},{'none' if task == 'le_mc' else 'first_word'}"
    assert ours == pytest.approx(100 * out["results"][lm_task][key])
    if task == "le_mc":  # the same log-likelihoods, row by row (ΔW merged into W vs PEFT's side branch)
        rec = store.row_records("mixed")
        mine = rec[(rec.task == task) & (rec.method == "expert")].sort_values("row")["label_logprobs"]
        theirs = [
            [r[0] for r in s["filtered_resps"]] for s in sorted(out["samples"][lm_task], key=lambda s: s["doc_id"])
        ]
        mine = [json.loads(x) if isinstance(x, str) else list(x) for x in mine]
        assert mine == [pytest.approx(t, abs=1e-4) for t in theirs]


def test_a_merges_score_equals_lm_eval_on_the_merged_folder(mixed_study, tmp_path):
    from mergelab import cli

    root, spec_path, store = mixed_study
    spec = parse_spec(spec_path)
    merged = tmp_path / "merged"
    members = spec.groups["g"]
    code = cli.main(
        [
            "merge",
            "--base",
            spec.base,
            "--adapters",
            *[spec.adapters[t] for t in members],
            "--method",
            "ties",
            "--out",
            str(merged),
        ]
    )
    assert code == 0
    rows = store.results("mixed")
    ours = rows[(rows.task == "le_mc") & (rows.method == "TIES")]["score"].item()
    out = _peft_scores(Path(spec.base), None, "toy_mc", root / "lm_tasks", merged=merged)
    assert ours == pytest.approx(100 * out["results"]["toy_mc"]["acc,none"])


def test_lm_eval_tasks_are_checked_before_any_model_loads(mixed_study, tmp_path):
    from mergelab.study.data import load_all

    root, spec_path, _ = mixed_study
    spec = yaml.safe_load(spec_path.read_text())
    spec["base"], spec["adapters"] = spec["base"], {k: str(root / v) for k, v in spec["adapters"].items()}
    spec["tasks"] = {k: {**t, "data": str(root / t["data"])} for k, t in spec["tasks"].items()}

    def problems(**changes):
        bad = json.loads(json.dumps(spec))
        bad["tasks"]["le_mc"] = {**bad["tasks"]["le_mc"], **changes}
        with pytest.raises(SpecError) as err:
            load_all(parse_spec(bad, root=root))
        return str(err.value)

    assert "not among the task YAMLs" in problems(lm_eval={"task": "no_such_task"})
    assert "aggregated by 'matthews_corrcoef', which is not a mean of rows" in problems(lm_eval={"task": "toy_mcc"})
    assert "reports no score of its own" in problems(lm_eval={"task": "toy_tag"})
    assert "has no metric 'bleu'" in problems(lm_eval={"task": "toy_mc", "metric": "bleu"})
    with pytest.raises(SpecError, match="drop labels"):
        parse_spec(
            {**spec, "tasks": {**spec["tasks"], "le_mc": {**spec["tasks"]["le_mc"], "labels": ["a"]}}}, root=root
        )
    with pytest.raises(SpecError, match="not a folder of lm-eval task YAMLs"):
        parse_spec(
            {**spec, "tasks": {**spec["tasks"], "le_mc": {**spec["tasks"]["le_mc"], "data": str(root / "nope")}}},
            root=root,
        )


def test_an_edited_task_yaml_is_another_unit(mixed_study, tmp_path):
    import shutil

    from mergelab.study import planner

    root, spec_path, _ = mixed_study
    copy = tmp_path / "study"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.db*", "states"))
    before = {u["unit_key"] for u in planner.plan_units(parse_spec(copy / "study.yaml"))}
    assert before == {u["unit_key"] for u in planner.plan_units(parse_spec(spec_path))}  # by content, not path
    yml = copy / "lm_tasks" / "toy_mc.yaml"
    yml.write_text(yml.read_text().replace("? answer :", "? reply :"))
    after = planner.plan_units(parse_spec(copy / "study.yaml"))
    new = [u for u in after if u["unit_key"] not in before]
    # its expert and base are scored again; another task's expert and base are not (merges and hidden
    # states of the group are keyed by every member's task, so they are new too)
    assert new
    assert any(u["kind"] == "expert" and u["payload"]["task"] == "le_mc" for u in new)
    assert not any(u["payload"].get("task") == "c0" and u["kind"] in ("expert", "base") for u in new)


def test_report_writes_lm_eval_result_files_that_lm_eval_reads(mixed_study, tmp_path):
    from lm_eval import utils as lm_utils

    from mergelab import cli

    root, spec_path, store = mixed_study
    out = tmp_path / "lm-eval-out"
    assert cli.main(["report", str(spec_path), "--db", str(store.path), "--format", "lm-eval", "--out", str(out)]) == 0
    files = [str(p) for p in out.rglob("*") if p.is_file()]
    results = lm_utils.get_results_filenames(files)
    models = {Path(f).parent.name for f in results}
    assert models == {"base", "expert__c0", "expert__le_mc", "expert__le_gen", "merged__g__TIES"}
    expert = json.loads(Path(lm_utils.get_latest_filename([f for f in results if "expert__le_mc" in f])).read_text())
    for key in (
        "results",
        "group_subtasks",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
    ):
        assert key in expert, key
    # the same number lm-eval prints for this expert on these documents, on lm-eval's 0–1 scale
    theirs = _peft_scores(Path(parse_spec(spec_path).base), root / "adapters" / "le_mc", "toy_mc", root / "lm_tasks")
    assert expert["results"]["le_mc"]["acc,none"] == pytest.approx(theirs["results"]["toy_mc"]["acc,none"])
    assert expert["n-samples"]["le_mc"] == {"original": LIMIT, "effective": LIMIT}
    assert "peft=" in expert["config"]["model_args"]
    samples = [f for f in lm_utils.get_sample_results_filenames(files) if "expert__le_mc" in f]
    assert [lm_utils.get_file_task_name(Path(f).name) for f in samples] == ["le_mc"]
    lines = [json.loads(x) for x in Path(samples[0]).read_text().splitlines()]
    assert [s["doc_id"] for s in lines] == list(range(LIMIT)) and all(len(s["filtered_resps"]) == 3 for s in lines)
    accs = np.array([s["acc"] for s in lines])  # the stderr of a mean metric, as lm-eval reports it
    assert accs.mean() == pytest.approx(expert["results"]["le_mc"]["acc,none"])
    assert accs.std(ddof=1) / np.sqrt(LIMIT) == pytest.approx(expert["results"]["le_mc"]["acc_stderr,none"])
    merged = json.loads(Path(next(f for f in results if "merged__g__TIES" in f)).read_text())
    assert set(merged["results"]) == {"c0", "le_mc", "le_gen"} and merged["config"]["merge_method"] == "TIES"
    assert "exact_match,first_word" in merged["results"]["le_gen"] and "acc,none" in merged["results"]["c0"]


@pytest.fixture(scope="module")
def ppl_study(mixed_study, tmp_path_factory):
    """A MergeLab task and an lm-eval perplexity task (lower is better) in one group, merged by TA."""
    c0 = yaml.safe_load(mixed_study[1].read_text())["tasks"]["c0"]
    tasks = {"c0": c0, "le_ppl": {"data": "lm_tasks", "lm_eval": {"task": "toy_ppl"}}}
    return _variant(mixed_study, tmp_path_factory, "ppl", tasks, seed=31)


def _variant(mixed_study, tmp_path_factory, name: str, tasks: dict, seed: int) -> tuple:
    """The mixed study's base with ``tasks`` (a new random adapter for each lm-eval one, seeded from
    ``seed``; c0 keeps its own) in one group ``g`` merged by TA, run into a store of its own."""
    root, spec_path, _ = mixed_study
    spec = yaml.safe_load(spec_path.read_text())
    adapters = {t: spec["adapters"][t] for t in tasks if t == "c0"}
    for i, task in enumerate(t for t in tasks if t != "c0"):
        make_lora(Path(spec["base"]), root / "adapters" / task, seed + i, scale=0.3)
        adapters[task] = f"adapters/{task}"
    spec.update(name=name, adapters=adapters, tasks=tasks, groups={"g": list(tasks)}, methods={"TA": {"lambda": 1.0}})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    store = Store(tmp_path_factory.mktemp(name) / "s.db")
    run_study(store, path, name)
    return root, path, store


def test_a_lower_is_better_task_enters_eq1_with_the_right_sign(ppl_study):
    from mergelab.analysis import protocol, uncertainty, views

    root, path, store = ppl_study
    spec = parse_spec(path)
    rows = store.results("ppl")
    ppl = rows[rows.task == "le_ppl"].set_index("method")
    assert set(ppl["metric"]) == {"word_perplexity"} and set(ppl["aggregation"]) == {"weighted_perplexity"}
    assert not ppl["higher_is_better"].any()
    assert rows[rows.task == "c0"]["higher_is_better"].all()
    # the expert's perplexity is lm-eval's own on the same texts
    theirs = _peft_scores(Path(spec.base), Path(spec.adapters["le_ppl"]), "toy_ppl", root / "lm_tasks")
    assert ppl.loc["expert", "score"] == pytest.approx(theirs["results"]["toy_ppl"]["word_perplexity,none"])
    # the per-row records (log-likelihood, words) rebuild every stored perplexity
    draws = uncertainty.Draws(store, "ppl")
    for key, method in ((uncertainty.EXPERT, "expert"), (uncertainty.BASE, "base"), (("g", "TA"), "TA")):
        assert draws.tasks["le_ppl"].point[key] == pytest.approx(ppl.loc[method, "score"], rel=1e-9)
    rec = store.row_records("ppl")
    assert (rec[rec.task == "le_ppl"]["weight"] >= 3).all() and rec[rec.task == "c0"]["weight"].isna().all()
    # Eq. 1 with performance = 1 / perplexity: the sign follows which model is better
    expert, merged = ppl.loc["expert", "score"], ppl.loc["TA", "score"]
    loss = views.loss_table(store, "ppl").set_index("task").loc["le_ppl", "loss"]
    assert loss == pytest.approx(100 * (expert / merged - 1)) and (loss < 0) == (merged > expert)
    ci = protocol.loss_intervals(store, "ppl").set_index("task").loc["le_ppl"]
    assert ci["ci_low"] <= loss <= ci["ci_high"]
    gain = protocol.expert_evidence(store, "ppl", draws).set_index("task").loc["le_ppl"]
    assert gain["better"] == "lower" and gain["gain"] == pytest.approx(ppl.loc["base", "score"] - expert)


def test_lm_eval_files_keep_a_perplexitys_direction_and_row_pairs(ppl_study, tmp_path):
    from lm_eval import utils as lm_utils

    from mergelab import cli

    _, path, store = ppl_study
    out = tmp_path / "out"
    assert cli.main(["report", str(path), "--db", str(store.path), "--format", "lm-eval", "--out", str(out)]) == 0
    files = [str(p) for p in out.rglob("*") if p.is_file()]
    result = next(f for f in lm_utils.get_results_filenames(files) if "expert__le_ppl" in f)
    doc = json.loads(Path(result).read_text())
    assert doc["higher_is_better"]["le_ppl"] == {"word_perplexity": False}
    assert doc["configs"]["le_ppl"]["metric_list"][0]["aggregation"] == "weighted_perplexity"
    assert doc["results"]["le_ppl"]["word_perplexity_stderr,none"] is None  # a ratio of sums: no mean's SE
    sample = next(f for f in lm_utils.get_sample_results_filenames(files) if "expert__le_ppl" in f)
    lines = [json.loads(x) for x in Path(sample).read_text().splitlines()]
    ll, words = (np.array([s["word_perplexity"][i] for s in lines]) for i in (0, 1))
    from lm_eval.api.metrics import weighted_perplexity

    assert weighted_perplexity(list(zip(ll, words))) == pytest.approx(doc["results"]["le_ppl"]["word_perplexity,none"])


@pytest.fixture(scope="module")
def group_study(mixed_study, tmp_path_factory):
    """Two lm-eval groups as study tasks (one adapter each): the mean of their tasks' scores, and
    the size-weighted mean."""
    tasks = {
        "le_group": {"data": "lm_tasks", "lm_eval": {"task": "toy_group"}},
        "le_sized": {"data": "lm_tasks", "lm_eval": {"task": "toy_group_sized"}},
        "le_nested": {"data": "lm_tasks", "lm_eval": {"task": "toy_nested"}},
    }
    return _variant(mixed_study, tmp_path_factory, "grp", tasks, seed=41)


@pytest.mark.parametrize(
    "task,lm_task", [("le_group", "toy_group"), ("le_sized", "toy_group_sized"), ("le_nested", "toy_nested")]
)
def test_an_lm_eval_group_is_one_task_scored_as_lm_eval_scores_it(group_study, task, lm_task):
    from mergelab.analysis import protocol, uncertainty

    root, path, store = group_study
    spec = parse_spec(path)
    rows = store.results("grp")
    ours = rows[(rows.task == task)].set_index("method")
    theirs = _peft_scores(Path(spec.base), Path(spec.adapters[task]), lm_task, root / "lm_tasks")
    assert ours.loc["expert", "score"] == pytest.approx(100 * theirs["results"][lm_task]["acc,none"])
    # its rows are every subtask's (capped by the study's eval_limit, per subtask as lm-eval's limit)
    rec = store.row_records("grp")
    mine = rec[(rec.task == task) & (rec.method == "expert")].sort_values("row")
    leaves = ("toy_mc", "toy_mc_b", "toy_mc_c") if task == "le_nested" else ("toy_mc", "toy_mc_b")
    sizes = [len(theirs["samples"][t]) for t in leaves]
    assert len(mine) == sum(sizes) and sizes[0] != sizes[1]
    weights = mine["weight"].to_numpy(float)
    if task == "le_group":  # the mean of the two tasks' scores: each task's rows weigh 1 / its rows
        assert weights == pytest.approx([1 / sizes[0]] * sizes[0] + [1 / sizes[1]] * sizes[1])
    else:  # weighed by size (lm-eval aggregates a group holding groups over its leaf tasks): all rows 1
        assert np.isnan(weights).all()
    # the per-row records rebuild every stored score, so the intervals resample what lm-eval averages
    draws = uncertainty.Draws(store, "grp")
    for key, method in ((uncertainty.EXPERT, "expert"), (uncertainty.BASE, "base"), (("g", "TA"), "TA")):
        assert draws.tasks[task].point[key] == pytest.approx(ours.loc[method, "score"])
    ci = protocol.loss_intervals(store, "grp").set_index("task").loc[task]
    # (12 rows of a weak expert: many resamples score it 0, and then the interval says so)
    assert ci["ci_low"] <= ci["loss"] <= ci["ci_high"] or ci["ci_note"] == "too few defined resamples"
