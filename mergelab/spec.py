"""Study specification (YAML): validated with clear messages before any model is loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import methods


class SpecError(ValueError):
    """A study spec that cannot run; lists every problem found, each with where it is."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid study spec:\n" + "\n".join(f"  - {p}" for p in problems))


# Fields added after studies were shipped: they enter unit keys only when set to something
# other than their default, so the keys (and finished results) of older studies stay valid.
TASK_FIELDS_ADDED_LATER = {"max_new_tokens"}
STUDY_FIELDS_ADDED_LATER = {"dtype"}


def _set_later(model: BaseModel, names: set[str]) -> dict:
    """The fields of ``names`` that are not at their default (see *_FIELDS_ADDED_LATER)."""
    return model.model_dump(include=names, exclude_defaults=True)


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="local jsonl/csv/parquet file, a dataset folder in the hub's layout, "
                                  "or a hub dataset id")
    split: str = Field("eval", description="rows to evaluate: a named split of a dataset folder or hub "
                                           "dataset (e.g. test), else a value of split_field")
    split_field: str | None = Field("split", description="column naming the split inside one file")
    probe_split: str = Field("probe", description="rows for the hidden-state probes, like split")
    template: str = "{text}"
    label_field: str = "label"
    labels: list[str] | None = Field(None, description="label set for classification")
    target_field: str | None = Field(None, description="reference text for generation tasks")
    metric: Literal["accuracy", "f1", "rougeL"] = "accuracy"
    max_new_tokens: int = Field(32, ge=1, le=4096, description="generation length for rougeL tasks")
    constructed: bool = Field(False, description="a constructed (not natural) task, marked in the UI")
    note: str = ""

    def key_fields(self) -> dict:
        """What of this task determines a result, for unit keys."""
        return {**self.model_dump(exclude=TASK_FIELDS_ADDED_LATER), **_set_later(self, TASK_FIELDS_ADDED_LATER)}

    @model_validator(mode="after")
    def _kind(self):
        if self.labels is None and self.target_field is None:
            raise ValueError("a task needs either labels (classification) or target_field (generation)")
        if self.metric == "rougeL" and self.target_field is None:
            raise ValueError("metric rougeL needs target_field")
        return self


class HiddenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(5, ge=1, description="probes per task (the paper uses 5)")
    layer: int = -1
    pooling: Literal["last", "mean", "first"] = "mean"
    distance: Literal["l2", "cosine", "cka"] = "l2"
    seed: int = 0


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    base: str
    architecture: Literal["encoder", "causal", "seq2seq"] = "encoder"
    adapters: dict[str, str]
    tasks: dict[str, TaskSpec]
    groups: dict[str, list[str]]
    pool: list[str] = Field(default_factory=list, description="tasks available for swapping in")
    methods: dict[str, dict] = Field(default_factory=lambda: {m: {} for m in methods.PAPER_METHODS})
    hidden: HiddenSpec = HiddenSpec()
    eval_limit: int | None = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype for evaluation and hidden states; auto = the checkpoint's own "
                            "(bfloat16 for most 7B releases). Merges are computed in float32 either way.")
    seed: int = 0
    allow_pickle: bool = False
    trust_remote_code: bool = False

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups):
        for name, tasks in groups.items():
            if len(tasks) < 2:
                raise ValueError(f"group {name!r} has {len(tasks)} task(s); merging needs at least 2")
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"group {name!r} lists a task twice")
        return groups

    @property
    def all_tasks(self) -> list[str]:
        seen = dict.fromkeys(t for g in self.groups.values() for t in g)
        seen.update(dict.fromkeys(self.pool))
        return list(seen)

    def fingerprint(self, *parts) -> str:
        """Hash of what determines a unit: the base, eval settings and ``parts``. Local files and
        folders enter by content (see :func:`content_id`), so the same study in another checkout
        or folder gets the same keys and its finished units are recognised."""
        later = _set_later(self, STUDY_FIELDS_ADDED_LATER)
        blob = json.dumps([content_id(self.base), self.architecture, self.eval_limit, self.seed,
                           *([later] if later else []), *parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_CONTENT_CACHE: dict[tuple, str] = {}


def content_id(value: str) -> str:
    """A local file or folder → digest of its contents (folders: their *.json, *.jsonl and
    *.safetensors files, and data files — parquet, csv, arrow, json(l) — in subfolders too;
    large weight files by name, size and their first and last MiB); anything else (a hub id,
    pypi:…) → itself."""
    path = Path(value)
    if not _is_local(value):
        return value
    if path.is_file():
        files = [path]
    else:  # a model/adapter folder's weights, its json files and a dataset folder's data files at any depth
        files = sorted(set(path.glob("*.safetensors")) | {
            f for pattern in ("*.json", "*.jsonl", "*.parquet", "*.csv", "*.arrow") for f in path.rglob(pattern)
            if not any(part.startswith(".") for part in f.relative_to(path).parts)})
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _CONTENT_CACHE:
        digest = hashlib.sha256()
        for f in files:
            digest.update((f.name if f == path else f.relative_to(path).as_posix()).encode())
            size = f.stat().st_size
            digest.update(str(size).encode())
            with f.open("rb") as handle:
                if size <= 64 << 20:
                    digest.update(handle.read())
                else:  # big checkpoints: name, size, head and tail
                    digest.update(handle.read(1 << 20))
                    handle.seek(-(1 << 20), 2)
                    digest.update(handle.read())
        _CONTENT_CACHE[stamp] = "sha256:" + digest.hexdigest()[:24]
    return _CONTENT_CACHE[stamp]


def parse_spec(data: dict | str | Path, root: Path | None = None) -> StudySpec:
    """Parse and check a spec; relative paths resolve against ``root`` (the YAML's folder)."""
    if isinstance(data, Path) or (isinstance(data, str) and "\n" not in data and _is_local(data)):
        root = root or Path(data).resolve().parent
        try:
            data = yaml.safe_load(Path(data).read_text())
        except yaml.YAMLError as exc:
            raise SpecError([f"not valid YAML: {exc}"]) from None
    elif isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise SpecError([f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a mapping with name, base, adapters, tasks, groups"])
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}"
                         for e in exc.errors()]) from None
    root = root or Path.cwd()
    problems = []
    for task in spec.all_tasks:
        if task not in spec.tasks:
            where = "pool" if task in spec.pool else "groups"
            problems.append(f"{where}: unknown task {task!r} (tasks: {sorted(spec.tasks)})")
        if task not in spec.adapters:
            problems.append(f"adapters: no adapter for task {task!r}")
    for method, params in spec.methods.items():
        try:
            m = methods.get(method)
            sizes = {len(g) for g in spec.groups.values()} or {2}
            for n in sizes:
                m.resolve(n, params)
        except methods.MethodError as exc:
            problems.append(f"methods.{method}: {exc}")
    spec = spec.model_copy(update={
        "adapters": {k: _resolve(v, root) for k, v in spec.adapters.items()},
        "base": _resolve(spec.base, root),
        "tasks": {k: t.model_copy(update={"data": _resolve(t.data, root)}) for k, t in spec.tasks.items()},
    })
    for name, task in spec.tasks.items():
        if not _is_local(task.data) and not _looks_like_hub_id(task.data):
            problems.append(f"tasks.{name}.data: file {task.data} does not exist")
    for name, path in spec.adapters.items():
        if not _is_local(path) and not _looks_like_hub_id(path):
            problems.append(f"adapters.{name}: folder {path} does not exist")
    if not (_is_local(spec.base) or _looks_like_hub_id(spec.base) or spec.base.startswith("pypi:")):
        problems.append(f"base: folder {spec.base} does not exist")
    if problems:
        raise SpecError(problems)
    return spec


def _resolve(value: str, root: Path) -> str:
    if value.startswith("pypi:"):
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = root / p
    if (candidate.exists() or value.startswith((".", "~")) or value.count("/") != 1
            or value.endswith(FILE_SUFFIXES) or (root / p.parts[0]).is_dir()):
        return str(candidate.resolve())
    return value  # a hub id such as "org/name"


def _is_local(value: str) -> bool:
    try:
        return Path(value).exists()
    except OSError:  # e.g. a YAML text passed where a path may be
        return False


FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".safetensors", ".yaml", ".yml")


def _looks_like_hub_id(value: str) -> bool:
    """``org/name`` and not a path: a file suffix or an absolute/relative prefix rules it out."""
    return (not Path(value).is_absolute() and value.count("/") == 1
            and not value.startswith((".", "~")) and not value.endswith(FILE_SUFFIXES))


def dump_spec(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
