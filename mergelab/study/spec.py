"""Study specification (YAML): validated with clear messages before any model is loaded."""

from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..choices import (
    BATCH_SIZE_MAX,
    EVAL_LIMIT_MAX,
    PROBES_MAX,
    SEED_MAX,
    Architecture,
    Distance,
    Dtype,
    ExecutorKind,
    Metric,
    Pooling,
)
from ..io.content import content_id, is_local, looks_like_hub_id, resolve_reference
from ..io.yaml_files import YamlFileError, load_yaml, read_yaml_file
from ..merging import registry
from ..storage.roles import Swap, parse_swap_name, swap_name
from .draw import draw_groups
from .errors import SpecError
from .key_fields import STUDY_FIELDS_ADDED_LATER, TASK_FIELDS_ADDED_LATER, TASK_FIELDS_REMOVED, set_later

#: Study and task names: they name files and folders, so letters, digits, '_', '.', '-' only,
#: starting with a letter or digit, at most 64 characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Group names may also hold ':', '+', '>', '(', ')' and spaces (swap groups are named
#: ``swap:<group>:<out>-><in>``), never '/' or '\\'.
GROUP_PATTERN = r"^[A-Za-z0-9(][A-Za-z0-9_.:+>() -]{0,127}$"
NO_GROUP = "give at least one group of tasks to merge (or random_groups)"
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_name(value: str, what: str, pattern: str = NAME_PATTERN) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        allowed = (
            "letters, digits, '_', '.', '-', starting with a letter or digit, at most 64 characters"
            if pattern == NAME_PATTERN
            else "letters, digits, spaces and _ . : + > ( ) -, no '/'"
        )
        raise ValueError(f"{what} {value!r} is not allowed: use {allowed}")
    return value


def check_template(template: str) -> list[str]:
    """The named fields of a task's prompt template; ValueError for a template ``str.format``
    cannot fill from a row (bad braces, positional ``{0}`` or ``{}`` fields, attribute access)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(
            f"template {template!r} is not a valid format string ({exc}); write fields "
            "as {name} and literal braces as {{ }}"
        ) from None
    for f in fields:
        if not f.isidentifier():
            raise ValueError(
                f"template {template!r} has the field {{{f}}}; fields must be column names such as {{text}}"
            )
    return fields


def read_spec_file(path: str | Path) -> str:
    """The text of a study spec file (see :func:`~mergelab.io.yaml_files.read_yaml_file`); SpecError
    if it cannot be read."""
    try:
        return read_yaml_file(path, "spec file")
    except YamlFileError as exc:
        raise SpecError(exc.problems) from None


def load_spec_yaml(text: str, source: str | None = None):
    """A study spec's YAML text parsed the one strict way (:func:`~mergelab.io.yaml_files.load_yaml`);
    SpecError if it is not valid YAML or too large."""
    try:
        return load_yaml(text, source)
    except YamlFileError as exc:
        raise SpecError(exc.problems, source) from None


class LmEvalSpec(BaseModel):
    """A task scored by lm-evaluation-harness's own definition (see :mod:`mergelab.models.lm_eval_bridge`)."""

    model_config = STRICT
    task: str = Field(min_length=1, max_length=200, description="the lm-eval task's or group's name")
    num_fewshot: int | None = Field(None, ge=0, le=100, description="few-shot examples (default: the task's)")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="score the first N documents (lm-eval's --limit)")
    metric: str | None = Field(None, max_length=100, description="the metric Eq. 1 uses (default: the task's first)")
    filter: str = Field("none", max_length=100, description="the filter whose output is scored")


class TaskSpec(BaseModel):
    model_config = STRICT
    data: str = Field(
        description="local jsonl/csv/parquet file, a dataset folder in the hub's layout, or a hub dataset id; "
        "for an lm_eval task, the folder of its task YAMLs, or 'lm-eval' for lm-eval's own tasks"
    )
    lm_eval: LmEvalSpec | None = Field(
        None, description="score this task with lm-evaluation-harness's task definition instead of template/labels"
    )
    split: str = Field(
        "eval",
        description="rows to evaluate: a named split of a dataset folder or hub "
        "dataset (e.g. test), else a value of split_field",
    )
    split_field: str | None = Field("split", description="column naming the split inside one file")
    probe_split: str = Field("probe", description="rows for the hidden-state probes, like split")
    template: str = Field("{text}", description="prompt built from a row's fields, e.g. 'Review: {text}\\nSentiment:'")
    label_field: str = "label"
    labels: list[str] | None = Field(None, description="label set for classification")
    target_field: str | None = Field(None, description="reference text for generation tasks")
    metric: Metric = "accuracy"
    max_new_tokens: int = Field(32, ge=1, le=4096, description="generation length for rougeL tasks")
    note: str = ""

    def key_fields(self) -> dict:
        """What of this task determines a result, for unit keys."""
        return {
            **self.model_dump(exclude=TASK_FIELDS_ADDED_LATER),
            **TASK_FIELDS_REMOVED,
            **set_later(self, TASK_FIELDS_ADDED_LATER),
        }

    @field_validator("template")
    @classmethod
    def _template(cls, template):
        check_template(template)
        return template

    @model_validator(mode="after")
    def _kind(self):
        if self.lm_eval is not None:
            if self.labels is not None or self.target_field is not None:
                raise ValueError(
                    "an lm_eval task takes its prompts, answers and metric from lm-eval: drop labels / target_field"
                )
            return self
        if self.labels is None and self.target_field is None:
            raise ValueError("a task needs either labels (classification) or target_field (generation)")
        if self.metric == "rougeL" and self.target_field is None:
            raise ValueError("metric rougeL needs target_field")
        return self


class HiddenSpec(BaseModel):
    model_config = STRICT
    k: int = Field(5, ge=1, le=PROBES_MAX, description="probes per task (the paper uses 5)")
    layer: int = Field(
        -1,
        ge=-1000,
        le=1000,
        description="hidden layer for HiddenSim: 0 = embeddings, -1 = last; checked against the base model",
    )
    pooling: Pooling = "mean"
    distance: Distance = "l2"
    seed: int = Field(0, ge=0, le=SEED_MAX)
    layers: list[int] | None = Field(
        None,
        description="store hidden states of only these layers (0 = embeddings; "
        "default: every layer); must include the analysed layer",
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, layers):
        if layers is not None and (not layers or len(set(layers)) != len(layers) or min(layers) < 0):
            raise ValueError("hidden.layers must list distinct layer numbers ≥ 0")
        return sorted(layers) if layers else layers


class RandomGroups(BaseModel):
    """The paper's "randomly select": ``count`` groups of ``size`` tasks drawn with ``seed`` from
    ``draw_from`` (default: every task), named ``<prefix>1 … <prefix>count``. Drawn when the spec
    is read, so before any merge result exists; a draw identical to an earlier one is drawn again."""

    model_config = STRICT
    count: int = Field(ge=1, le=100)
    size: int = Field(ge=2, le=64)
    seed: int = Field(ge=0, le=SEED_MAX)
    draw_from: list[str] | None = None
    prefix: str = "r"
    disjoint: bool = Field(
        False,
        description="no task in two groups: a random partition of draw_from "
        "(groups that share tasks are not independent evidence)",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix):
        _check_name(f"{prefix}1", "random_groups.prefix (with a group number after it)", GROUP_PATTERN)
        return prefix


class SwapSpec(BaseModel):
    """The paper's (a)→(a1): group ``group`` with task ``remove`` replaced by ``add``. A swap is
    merged and evaluated like a group but never counted as one: it was chosen by looking at results."""

    model_config = STRICT
    group: str
    remove: str
    add: str

    @property
    def name(self) -> str:
        return swap_name(self.group, self.remove, self.add)


class StudySpec(BaseModel):
    model_config = STRICT
    name: str = Field(description=f"the study's id: {NAME_PATTERN}")
    base: str
    architecture: Architecture = "encoder"
    adapters: dict[str, str]
    tasks: dict[str, TaskSpec]
    groups: dict[str, list[str]] = Field(default_factory=dict)
    pool: list[str] = Field(default_factory=list, description="tasks available for swapping in")
    swaps: list[SwapSpec] = Field(
        default_factory=list,
        description="groups with one task swapped for another (the paper's (a)→(a1)), merged like groups",
    )
    random_groups: RandomGroups | None = Field(None, description="add groups drawn at random (the paper's protocol)")
    pairwise: list[str] = Field(
        default_factory=list,
        description="groups expanded into all their pairs, each merged with every method (the paper's Table 4)",
    )
    pair_methods: list[str] = Field(
        default_factory=list,
        description="the methods the pairs of `pairwise` are merged with (names from `methods`); none: all",
    )
    best_of: list[str] = Field(
        default_factory=list,
        description="the methods a task's best merging loss is taken "
        "over (Table 5, collapse; names from `methods`); "
        "none: all",
    )
    base_scores: bool = Field(False, description="also score the untrained base on every task (causal / seq2seq)")
    held_out: list[str] = Field(
        default_factory=list,
        description="tasks that every group's merges are also scored on where the group lacks them: "
        "forgetting, the merge against the base (MergeBench); needs base_scores. A task of the groups or "
        "pool, or a task of `tasks` with no adapter (a general benchmark: only the base and the merges are "
        "scored on it)",
    )
    categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="task categories for normalized scores (merged ÷ expert averaged per category, as "
        "MergeBench reports); analysis only, no unit depends on them",
    )
    executor: ExecutorKind = Field(
        "local", description="where `mergelab run` runs units: this machine, or a Ray cluster (results are the same)"
    )
    ray_address: str | None = Field(None, description="the Ray cluster (auto, ray://host:10001); none: a local one")
    methods: dict[str, dict] = Field(default_factory=lambda: {m: {} for m in registry.PAPER_METHODS})
    hidden: HiddenSpec = HiddenSpec()
    eval_limit: int | None = Field(200, ge=1, le=EVAL_LIMIT_MAX)
    batch_size: int = Field(
        32, ge=1, le=BATCH_SIZE_MAX, description="sequences per forward pass (memory grows with it)"
    )
    dtype: Dtype = Field(
        "auto",
        description="weights' dtype for evaluation and hidden states; auto = the checkpoint's own "
        "(bfloat16 for most 7B releases). Merges are computed in float32 either way.",
    )
    seed: int = Field(0, ge=0, le=SEED_MAX)
    allow_pickle: bool = Field(
        False, description="the study needs pickle (.bin) weights; a run must also be given --allow-pickle"
    )
    trust_remote_code: bool = Field(
        False, description="the base ships its own Python code; a run must also be given --trust-remote-code"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name):
        return _check_name(name, "study name")

    @field_validator("tasks", "adapters")
    @classmethod
    def _task_names(cls, value):
        if not value:
            raise ValueError("give at least two tasks, each with its adapter")
        for name in value:
            _check_name(name, "task name")
        return value

    @field_validator("base")
    @classmethod
    def _base(cls, base):
        if not base.strip():
            raise ValueError("give a base model: a hub id (org/name), a local folder, a .gguf file or pypi:<package>")
        return base

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups):
        for name, tasks in groups.items():
            _check_name(name, "group name", GROUP_PATTERN)
            if len(tasks) < 2:
                raise ValueError(f"group {name!r} has {len(tasks)} task(s); merging needs at least 2")
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"group {name!r} lists a task twice")
        return groups

    @model_validator(mode="after")
    def _expand(self):
        """Draw the random groups into ``groups`` and add each swap's group (idempotent: a dumped
        spec re-reads the same)."""
        if self.random_groups is not None:
            drawn = draw_groups(self.random_groups, list(self.tasks))
            for name, members in drawn.items():
                if name in self.groups and self.groups[name] != members:
                    raise ValueError(
                        f"group {name!r} is listed and also drawn by random_groups (prefix "
                        f"{self.random_groups.prefix!r}); rename one"
                    )
            self.groups = {**self.groups, **drawn}
        listed = {s.name for s in self.swaps}
        for name, members in self.groups.items():  # specs written before swaps had a field of their own
            old = parse_swap_name(name)
            if old is None or name in listed or old.parent not in self.groups or parse_swap_name(old.parent):
                continue
            if set(members) == {old.added if t == old.removed else t for t in self.groups[old.parent]}:
                self.swaps = [*self.swaps, SwapSpec(group=old.parent, remove=old.removed, add=old.added)]
        for swap in self.swaps:
            parent = self.groups.get(swap.group)
            if parent is None or swap.group in {s.name for s in self.swaps}:
                raise ValueError(f"swaps: {swap.group!r} is not a group (groups: {sorted(self.evidence_groups)})")
            if swap.remove not in parent:
                raise ValueError(f"swaps: {swap.remove!r} is not in group {swap.group!r} ({parent})")
            if swap.add in parent or swap.add not in self.tasks:
                raise ValueError(f"swaps: {swap.add!r} must be a task of the study that is not in {swap.group!r}")
            members = [swap.add if t == swap.remove else t for t in parent]
            if swap.name in self.groups:  # listed too (a dumped spec): the same tasks, in its own order
                if set(self.groups[swap.name]) != set(members):
                    raise ValueError(
                        f"group {swap.name!r} does not hold {swap.group!r} with {swap.remove!r} "
                        f"replaced by {swap.add!r}"
                    )
                continue
            self.groups = {**self.groups, swap.name: members}
        return self

    @property
    def swap_groups(self) -> dict[str, Swap]:
        """The groups made by ``swaps``: name → its parent, removed and added task."""
        return {s.name: Swap(s.name, s.group, s.remove, s.add) for s in self.swaps}

    @property
    def evidence_groups(self) -> dict[str, list[str]]:
        """The drawn and declared groups: every group but the swaps."""
        swaps = {s.name for s in self.swaps}
        return {g: t for g, t in self.groups.items() if g not in swaps}

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, address):
        if address is not None:
            from .ray_address import parse_address

            parse_address(address)
        return address

    @model_validator(mode="after")
    def _some_group(self):
        if not self.groups and not self.pool:  # a pool alone: experts (and base) screened, nothing merged yet
            raise ValueError(f"groups: {NO_GROUP}")
        return self

    @model_validator(mode="after")
    def _pairwise(self):
        if self.pair_methods and not self.pairwise:
            raise ValueError(
                "pair_methods names the methods pairs are merged with, but pairwise names no group to "
                "expand into pairs; add pairwise: [<group>] or drop pair_methods"
            )
        for g in self.pairwise:
            if g not in self.groups:
                raise ValueError(f"pairwise: {g!r} is not a group (groups: {sorted(self.groups)})")
        for field_name in ("pair_methods", "best_of"):
            unknown = [m for m in getattr(self, field_name) if m not in self.methods]
            if unknown:
                raise ValueError(f"{field_name}: {unknown} are not in methods ({sorted(self.methods)})")
        if self.base_scores and self.architecture == "encoder":
            raise ValueError("base_scores needs a causal or seq2seq base: an encoder has no task head before training")
        for t in self.held_out:
            if t in self.all_tasks:
                continue
            if t not in self.tasks:
                raise ValueError(
                    f"held_out: {t!r} is not a task of a group or the pool (those: {sorted(self.all_tasks)}), "
                    f"nor one of tasks ({sorted(self.tasks)})"
                )
            if t in self.adapters:
                raise ValueError(
                    f"held_out: {t!r} is not a task of a group or the pool but has an adapter: add it to the pool "
                    "(its expert is then scored too) or drop its adapter (then only the base and the merges are)"
                )
        if self.held_out and not self.base_scores:
            raise ValueError(
                "held_out needs base_scores: true (forgetting is the merge against the untrained base on the same rows)"
            )
        return self

    @property
    def pair_groups(self) -> dict[str, list[str]]:
        """Every pair of every group named in ``pairwise``, as a two-task group ``pair:<a>+<b>``."""
        out = {}
        for g in self.pairwise:
            members = self.groups[g]
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    out[f"pair:{a}+{b}"] = [a, b]
        return out

    @property
    def methods_for_pairs(self) -> dict[str, dict]:
        return {m: p for m, p in self.methods.items() if not self.pair_methods or m in self.pair_methods}

    def members(self, group: str) -> list[str]:
        """The tasks of a group or of a pair expanded from ``pairwise``."""
        if group in self.groups:
            return self.groups[group]
        pairs = self.pair_groups
        if group in pairs:
            return pairs[group]
        raise KeyError(f"no group {group!r} in study {self.name!r}")

    @property
    def all_tasks(self) -> list[str]:
        """The tasks of the groups and the pool: each has an adapter (its expert)."""
        seen = dict.fromkeys(t for g in self.groups.values() for t in g)
        seen.update(dict.fromkeys(self.pool))
        return list(seen)

    @property
    def held_out_only(self) -> list[str]:
        """Held-out tasks outside the groups and pool, with no adapter: only the base and the group
        merges are scored on them (forgetting on a general benchmark)."""
        inside = set(self.all_tasks)
        return [t for t in self.held_out if t not in inside]

    @property
    def scored_tasks(self) -> list[str]:
        """Every task something is scored on: :attr:`all_tasks`, then :attr:`held_out_only`."""
        return [*self.all_tasks, *self.held_out_only]

    def fingerprint(self, *parts) -> str:
        """Hash of what determines a unit: the base, eval settings and ``parts``. Local files and
        folders enter by content (see :func:`content_id`), so the same study in another checkout
        or folder gets the same keys and its finished units are recognised."""
        later = set_later(self, STUDY_FIELDS_ADDED_LATER)
        blob = json.dumps(
            [content_id(self.base), self.architecture, self.eval_limit, self.seed, *([later] if later else []), *parts],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _issue(error: dict) -> tuple[str, str]:
    """(field, message) of one pydantic error; a whole-spec check names its field as 'field: …'."""
    message = error["msg"].removeprefix("Value error, ")
    field = ".".join(map(str, error["loc"]))
    if not field:
        head, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+(\.[\w-]+)*", head):
            field, message = head, rest
    return field, message


def parse_spec(data: dict | str | Path, root: Path | None = None, *, adapters_exist: bool = True) -> StudySpec:
    """Parse and check a spec; relative paths resolve against ``root`` (the YAML's folder).
    ``adapters_exist=False`` accepts adapter folders that do not exist yet (to train them)."""
    source = None
    if isinstance(data, Path) or (
        isinstance(data, str) and "\n" not in data and (is_local(data) or data.endswith((".yaml", ".yml")))
    ):
        source = str(data)
        root = root or Path(data).resolve().parent
        data = load_spec_yaml(read_spec_file(data), source)
    elif isinstance(data, str):
        data = load_spec_yaml(data)
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a mapping with name, base, adapters, tasks, groups"], source)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        issues = [_issue(e) for e in exc.errors()]
        # the whole-spec checks run only once every field is valid; name a missing group anyway,
        # so a blank form lists all that it lacks at once
        if (
            not data.get("groups")
            and not data.get("random_groups")
            and not data.get("pool")
            and not any(f == "groups" for f, _ in issues)
        ):
            issues.append(("groups", NO_GROUP))
        raise SpecError(issues, source) from None
    root = root or Path.cwd()
    problems = []
    for task in spec.all_tasks:
        if task not in spec.tasks:
            where = "pool" if task in spec.pool else "groups"
            problems.append((where, f"unknown task {task!r} (tasks: {sorted(spec.tasks)})"))
        if task not in spec.adapters:
            problems.append(("adapters", f"no adapter for task {task!r}"))
    for category, members in spec.categories.items():
        unknown = [t for t in members if t not in spec.tasks]
        if unknown:
            problems.append((f"categories.{category}", f"unknown tasks {unknown} (tasks: {sorted(spec.tasks)})"))
    for method, params in spec.methods.items():
        try:
            m = registry.get(method)
            sizes = {len(g) for g in spec.groups.values()} or {2}
            for n in sizes:
                m.resolve(n, params)
        except registry.MethodError as exc:
            problems.append((f"methods.{method}", str(exc)))
    spec = spec.model_copy(
        update={
            # adapters to be trained are folders to write: local paths, never hub ids
            "adapters": {
                k: resolve_reference(v, root) if adapters_exist else str((root / Path(v).expanduser()).resolve())
                for k, v in spec.adapters.items()
            },
            "base": resolve_reference(spec.base, root),
            "tasks": {
                k: t if _lm_eval_builtin(t) else t.model_copy(update={"data": resolve_reference(t.data, root)})
                for k, t in spec.tasks.items()
            },
        }
    )
    for name, task_spec in spec.tasks.items():
        if task_spec.lm_eval is not None:
            if not _lm_eval_builtin(task_spec) and not Path(task_spec.data).is_dir():
                problems.append(
                    (f"tasks.{name}.data", f"{task_spec.data} is not a folder of lm-eval task YAMLs, nor 'lm-eval'")
                )
            if spec.architecture != "causal":
                problems.append((f"tasks.{name}.lm_eval", "lm-eval tasks are scored on causal LMs only"))
        elif not is_local(task_spec.data) and not looks_like_hub_id(task_spec.data):
            problems.append((f"tasks.{name}.data", f"file {task_spec.data} does not exist"))
    for name, path in spec.adapters.items():
        if adapters_exist and not is_local(path) and not looks_like_hub_id(path):
            problems.append((f"adapters.{name}", f"folder {path} does not exist"))
    if not (is_local(spec.base) or looks_like_hub_id(spec.base) or spec.base.startswith("pypi:")):
        problems.append(("base", f"folder {spec.base} does not exist"))
    elif spec.base.startswith("pypi:"):
        from ..io.errors import LoadError
        from ..io.hub import check_package_reference

        try:
            check_package_reference(spec.base)
        except LoadError as exc:
            problems.append(("base", str(exc)))
    if problems:
        raise SpecError(problems, source)
    return spec


def _lm_eval_builtin(task: TaskSpec) -> bool:
    """An lm_eval task from lm-eval's own registry (``data: lm-eval``), not from a folder of YAMLs."""
    from ..models.lm_eval_bridge import BUILTIN

    return task.lm_eval is not None and task.data == BUILTIN


def dump_spec(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
