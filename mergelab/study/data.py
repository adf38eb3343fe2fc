"""Task data through `datasets`: eval rows, probe rows, label checks — before any model loads."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..io.content import content_id
from ..models import lm_eval_bridge
from ..models.evaluation import field_text, references
from .errors import SpecError
from .spec import StudySpec, TaskSpec

__all__ = ["LmEvalTaskData", "TaskData", "field_text", "load_all", "load_task", "references"]

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class TaskData:
    name: str
    spec: TaskSpec
    eval_rows: list[dict]
    probe_rows: list[dict]

    def prompt(self, row: dict) -> str:
        return self.spec.template.format(**row)

    def label_index(self, row: dict) -> int:
        return self.spec.labels.index(field_text(row[self.spec.label_field]))


def _load_splits(source: str) -> dict[str, tuple[dict, ...]]:
    """{split name: rows}. A single file is one split named ""; a dataset folder (the hub's
    layout) or a hub dataset id keeps the splits `datasets` finds in it. Read once per content
    (a local file edited between runs is read again: unit keys hash contents, and so must this)."""
    return _read_splits(source, content_id(source))


@cache
def _read_splits(source: str, _content: str) -> dict[str, tuple[dict, ...]]:
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()  # a data file is read in well under a second; its bar is noise on stderr

    path = Path(source)
    if path.is_file():
        fmt = FORMATS.get(path.suffix)
        if fmt is None:
            raise SpecError([f"{source}: unsupported file type {path.suffix} (jsonl, json, csv, parquet)"])
        if path.stat().st_size == 0:
            raise SpecError([f"{source}: the file is empty"])
        if fmt in ("json", "csv"):
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SpecError(
                    [
                        f"{source}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                        f"{exc.start}); save it as UTF-8"
                    ]
                ) from None
        try:
            return {"": tuple(load_dataset(fmt, data_files=str(path), split="train").to_list())}
        except Exception as exc:  # pyarrow / datasets parse errors come in many types
            while exc.__cause__ is not None:  # datasets wraps the parser's own, clearer error
                exc = exc.__cause__
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise SpecError([f"{source}: cannot be read as {path.suffix[1:]} ({detail})"]) from None
    try:
        ds = load_dataset(source)
    except Exception as exc:
        where = (
            "folder could not be read as a dataset"
            if path.is_dir()
            else "is not a local file and could not be loaded from the hub"
        )
        raise SpecError(
            [
                f"dataset {source!r}: {where} ({type(exc).__name__}: {str(exc)[:200]}); "
                "give a local jsonl/csv/parquet file or dataset folder"
            ]
        ) from None
    if not hasattr(ds, "keys"):
        return {"": tuple(ds.to_list())}
    return {name: tuple(split.to_list()) for name, split in ds.items()}


@dataclass
class LmEvalTaskData:
    """A task scored by lm-evaluation-harness: its documents and probe documents, its prompts built
    by lm-eval's task definition (``lm_eval_bridge``)."""

    name: str
    spec: TaskSpec
    config: lm_eval_bridge.LmEvalTask
    task: object  # lm-eval's Task
    eval_rows: list[dict]
    probe_rows: list[dict]

    def prompt(self, row: dict) -> str:
        return lm_eval_bridge.prompt(self.task, row)


def lm_eval_config(task: TaskSpec, eval_limit: int | None) -> lm_eval_bridge.LmEvalTask:
    """What lm-eval is asked for a study task: its ``lm_eval`` settings; the study's eval_limit caps
    the documents scored (lm-eval's --limit: the first N, not a sample)."""
    le = task.lm_eval
    assert le is not None
    limits = [n for n in (le.limit, eval_limit) if n]
    return lm_eval_bridge.LmEvalTask(
        name=le.task,
        include_path=None if task.data == lm_eval_bridge.BUILTIN else task.data,
        num_fewshot=le.num_fewshot,
        limit=min(limits) if limits else None,
        metric=le.metric,
        filter=le.filter,
    )


def load_lm_eval_task(name: str, task: TaskSpec, k: int, eval_limit: int | None, seed: int) -> LmEvalTaskData:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SpecError(
            [(f"tasks.{name}.lm_eval", "lm-eval is not installed: pip install 'mergelab[lm-eval]'")]
        ) from None
    config = lm_eval_config(task, eval_limit)
    try:
        lm_task = lm_eval_bridge.load_task(config)
        lm_eval_bridge.primary_metric(lm_task, config)
    except lm_eval_bridge.LmEvalTaskError as exc:
        raise SpecError([(f"tasks.{name}.lm_eval", str(exc))]) from None
    docs = lm_eval_bridge.eval_docs(lm_task, config.limit)
    probes = lm_eval_bridge.probe_docs(lm_task)
    if not docs:
        raise SpecError([(f"tasks.{name}.lm_eval", f"lm-eval task {config.name!r} has no documents to score")])
    if len(probes) < k:
        raise SpecError(
            [
                (
                    f"tasks.{name}.lm_eval",
                    f"hidden.k = {k} but lm-eval task {config.name!r} has {len(probes)} documents for probes",
                )
            ]
        )
    probes = random.Random(f"probe:{seed}:{name}").sample(probes, len(probes))[:k]
    return LmEvalTaskData(name, task, config, lm_task, docs, probes)


def load_task(name: str, task: TaskSpec, k: int, eval_limit: int | None, seed: int) -> TaskData | LmEvalTaskData:
    if task.lm_eval is not None:
        return load_lm_eval_task(name, task, k, eval_limit, seed)
    splits = _load_splits(task.data)
    problems = []

    def split_rows(split: str) -> list[dict]:
        if split in splits and split != "":
            return list(splits[split])  # a named split of a dataset folder / hub dataset
        rows = [r for part in splits.values() for r in part]
        if task.split_field and rows and task.split_field in rows[0]:
            return [r for r in rows if r[task.split_field] == split]
        if len(splits) > 1 or "" not in splits:
            problems.append(
                (
                    f"tasks.{name}",
                    f"dataset {task.data} has splits {sorted(splits)} and no "
                    f"{task.split_field!r} column; {split!r} is neither (set split / probe_split)",
                )
            )
            return []
        return rows

    eval_rows = split_rows(task.split)
    probe_rows = split_rows(task.probe_split)
    if problems:
        raise SpecError(sorted(set(problems)))
    if not eval_rows:
        problems.append((f"tasks.{name}", f"no rows with {task.split_field} = {task.split!r} in {task.data}"))
    if len(probe_rows) < k:
        problems.append(
            (
                f"tasks.{name}",
                f"hidden.k = {k} but only {len(probe_rows)} probe rows ({task.split_field} = {task.probe_split!r})",
            )
        )
    needed = [task.label_field] if task.labels else [task.target_field]
    for row in eval_rows[:1] + probe_rows[:1]:
        missing = [f for f in needed if f not in row]
        try:
            task.template.format(**row)
        except KeyError as exc:
            problems.append(
                (f"tasks.{name}.template", f"uses field {exc} which the data does not have (fields: {sorted(row)})")
            )
        except (IndexError, ValueError, AttributeError) as exc:
            problems.append((f"tasks.{name}.template", f"{task.template!r} cannot be filled from a row ({exc})"))
        if missing:
            problems.append((f"tasks.{name}", f"data has no field {missing[0]!r} (fields: {sorted(row)})"))
    if task.labels and not problems:
        bad = sorted({field_text(r[task.label_field]) for r in eval_rows + probe_rows} - set(task.labels))
        if bad:
            problems.append((f"tasks.{name}", f"labels {bad[:5]} are outside the label set {task.labels}"))
    if problems:
        raise SpecError(problems)
    rng = random.Random(f"{seed}:{name}")
    if eval_limit and len(eval_rows) > eval_limit:
        eval_rows = rng.sample(eval_rows, eval_limit)
    probes = random.Random(f"probe:{seed}:{name}").sample(probe_rows, len(probe_rows))[:k]
    return TaskData(name, task, eval_rows, probes)


def load_all(spec: StudySpec, k: int | None = None) -> dict[str, TaskData | LmEvalTaskData]:
    """Every task of the study, checked; all problems reported together."""
    out, problems = {}, []
    for name in spec.scored_tasks:
        try:
            out[name] = load_task(name, spec.tasks[name], k or spec.hidden.k, spec.eval_limit, spec.seed)
        except SpecError as exc:
            problems += exc.issues
    if problems:
        raise SpecError(problems)
    return out
