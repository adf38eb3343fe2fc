"""Planning a study: every unit it needs, keyed by a hash of what determines its result; registering
it in the store; checking it against its base before any model loads; and refusing a changed spec
under a stored name unless asked to replace it.

Units (each one job row): ``base``, ``expert``, ``states``, ``merge``, ``mstates``, ``conflicts``
(see :mod:`.worker`). Local adapters and data files enter unit keys by content, not by path, so
the same study in another checkout recognises its finished units.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io.content import content_id
from ..merging import registry
from ..storage import jobs, roles
from ..storage.store import Store
from .data import load_all
from .errors import SpecError
from .grants import NO_GRANTS, Grants, check_grants
from .spec import StudySpec, dump_spec, parse_spec


def _revision(method: str) -> list[dict]:
    """A method whose defaults changed what it computes enters its units' keys with its revision
    (nothing for revision 1, so every older key stays as it was)."""
    rev = registry.get(method).revision
    return [{"method_revision": rev}] if rev > 1 else []


def data_id(task) -> str:
    """A task's data by content: its file or dataset folder; for an lm_eval task, every file of its
    folder of task YAMLs (an edited YAML is another task)."""
    return content_id(task.data, every_file=task.lm_eval is not None)


def plan_units(spec: StudySpec) -> list[dict]:
    """Every unit of the study with its key: a hash of what determines its result, with local
    adapters and data files entering by content, not by path."""
    units = []
    tasks = spec.all_tasks
    adapter_id = {t: content_id(spec.adapters[t]) for t in tasks}
    task_id = {t: {**spec.tasks[t].key_fields(), "data": data_id(spec.tasks[t])} for t in spec.scored_tasks}

    def add(kind, payload, *parts):
        key = spec.fingerprint(kind, payload, *parts)
        units.append({"kind": kind, "unit_key": f"{spec.name}:{kind}:{key}", "payload": payload})

    stored = [spec.hidden.layers] if spec.hidden.layers else []  # a field added later: only when set
    if spec.base_scores:
        for t in spec.scored_tasks:
            add("base", {"task": t}, task_id[t])
    for t in tasks:
        add("expert", {"task": t}, adapter_id[t], task_id[t])
    for t in tasks:
        add("states", {"task": t}, adapter_id[t], task_id, spec.hidden.k, *stored)
    for group, members in spec.groups.items():
        adapters = [adapter_id[t] for t in members]
        for method, params in spec.methods.items():
            for t in members:
                add(
                    "merge",
                    {"group": group, "method": method, "params": params, "task": t},
                    adapters,
                    task_id[t],
                    *_revision(method),
                )
            for t in (t for t in spec.held_out if t not in members):  # forgetting: the merge on tasks outside
                add(
                    "merge",
                    {"group": group, "method": method, "params": params, "task": t, "held_out": True},
                    adapters,
                    task_id[t],
                    *_revision(method),
                )
            add(
                "mstates",
                {"group": group, "method": method, "params": params},
                adapters,
                {m: task_id[m] for m in members},
                spec.hidden.k,
                *stored,
                *_revision(method),
            )
    for pair, members in spec.pair_groups.items():  # Table 4: merged and scored, no hidden states
        adapters = [adapter_id[t] for t in members]
        for method, params in spec.methods_for_pairs.items():
            for t in members:
                add(
                    "merge",
                    {"group": pair, "method": method, "params": params, "task": t},
                    adapters,
                    task_id[t],
                    *_revision(method),
                )
    ordered = sorted(tasks)
    add("conflicts", {"tasks": ordered}, [adapter_id[t] for t in ordered])
    return units


def register(store: Store, spec: StudySpec, description: str | None = None) -> None:
    """Store the study's spec and structure; ``description=None`` keeps a stored description."""
    swaps = spec.swap_groups
    with store.batch():
        store.upsert_study(spec.name, spec.name, "live", description, dump_spec(spec))
        store.set_groups(spec.name, spec.evidence_groups, role=roles.GROUP)
        if swaps:
            store.set_groups(
                spec.name,
                {g: spec.groups[g] for g in swaps},
                role=roles.SWAP,
                meta={g: {"parent": s.parent, "removed": s.removed, "added": s.added} for g, s in swaps.items()},
            )
        if spec.pair_groups:
            store.set_groups(spec.name, spec.pair_groups, role=roles.PAIR)
        store.set_pool(spec.name, spec.pool)


def load_study_spec(store: Store, study_id: str) -> StudySpec:
    text = store.spec_text(study_id)
    if not text:
        raise ValueError(f"study {study_id!r} has no stored spec to run")
    return parse_spec(text)


def add_group(store: Store, study_id: str, name: str, tasks: list[str]) -> dict:
    """Add a declared task group to a live study and enqueue only its new units (a swap: see
    :func:`add_swap`)."""
    spec = load_study_spec(store, study_id)
    data = spec.model_dump(mode="json")
    data["groups"] = {**data["groups"], name: list(tasks)}
    try:
        spec = parse_spec(json.loads(json.dumps(data)))
    except SpecError as exc:
        raise ValueError("; ".join(exc.problems)) from None
    register(store, spec)
    return jobs.enqueue(store, spec.name, plan_units(spec))


def add_swap(store: Store, study_id: str, group: str, remove: str, add: str) -> dict:
    """Add the swap of ``remove`` for ``add`` in ``group`` to a live study and enqueue only its new
    units (the swap's name is :func:`~mergelab.storage.roles.swap_name`)."""
    spec = load_study_spec(store, study_id)
    data = spec.model_dump(mode="json")
    if roles.swap_name(group, remove, add) not in spec.groups:
        data["swaps"] = [*data["swaps"], {"group": group, "remove": remove, "add": add}]
    try:
        spec = parse_spec(json.loads(json.dumps(data)))
    except SpecError as exc:
        raise ValueError("; ".join(exc.problems)) from None
    register(store, spec)
    return jobs.enqueue(store, spec.name, plan_units(spec))


def check_against_base(spec: StudySpec, aset) -> None:
    """What can be checked only with the base and adapters read: code shipped in the base folder,
    the hidden layer against the model's depth, and (encoders) each task's classification head
    against its label set. SpecError naming each problem, before any model loads."""
    problems = []
    config = aset.base.config
    folder = aset.base.folder
    ships_code = "auto_map" in config or "auto_map" in _json_or_empty(folder / "tokenizer_config.json")
    if ships_code and not spec.trust_remote_code:
        problems.append(
            (
                "base",
                f"{spec.base} ships its own code (auto_map in its config); MergeLab runs it only "
                "if the study sets trust_remote_code: true and the run is given --trust-remote-code",
            )
        )
    layers = next((config[k] for k in ("num_hidden_layers", "num_layers", "n_layer") if k in config), None)
    if isinstance(layers, int) and not -(layers + 1) <= spec.hidden.layer <= layers:
        problems.append(
            (
                "hidden.layer",
                f"{spec.hidden.layer} is outside this base's layers: 0 (embeddings) to "
                f"{layers}, or -1 … -{layers + 1} counting from the last",
            )
        )
    if isinstance(layers, int) and spec.hidden.layers is not None and -(layers + 1) <= spec.hidden.layer <= layers:
        beyond = [n for n in spec.hidden.layers if n > layers]
        analysed = spec.hidden.layer % (layers + 1)
        if beyond:
            problems.append(("hidden.layers", f"{beyond} are beyond this base's layers: 0 (embeddings) to {layers}"))
        elif analysed not in spec.hidden.layers:
            problems.append(
                (
                    "hidden.layers",
                    f"{spec.hidden.layers} leaves out the analysed layer hidden.layer = {spec.hidden.layer} "
                    f"(layer {analysed} of this base); HiddenSim and MDS are computed on it",
                )
            )
    if spec.architecture == "encoder":
        for task in spec.all_tasks:
            adapter = aset.adapters[aset.names.index(task)]
            head = adapter.heads.get("classifier.weight")
            labels = spec.tasks[task].labels
            if head is None:
                problems.append(
                    (
                        f"adapters.{task}",
                        "no saved classification head (modules_to_save=['classifier']); "
                        "an encoder study scores each task with its own head",
                    )
                )
            elif labels and head.shape[0] != len(labels):
                problems.append(
                    (
                        f"tasks.{task}.labels",
                        f"the adapter's classification head has {head.shape[0]} "
                        f"labels, the task lists {len(labels)} ({', '.join(labels)})",
                    )
                )
    if problems:
        raise SpecError(problems)


def _json_or_empty(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _canonical(spec: StudySpec, keep_groups=None) -> dict:
    """The spec as compared between runs: local files by content (moving a study's folder does
    not make it another spec)."""
    data = spec.model_dump(mode="json", exclude={"executor", "ray_address"})  # where it runs changes no result
    data["base"] = content_id(spec.base)
    data["adapters"] = {t: content_id(a) for t, a in spec.adapters.items()}
    for t, task in data["tasks"].items():
        task["data"] = data_id(spec.tasks[t])
    if keep_groups is not None:
        data["groups"] = {g: v for g, v in data["groups"].items() if g in keep_groups}
    return data


def spec_differences(stored: StudySpec, new: StudySpec) -> list[str]:
    """Where ``new`` differs from the stored spec of the same study (``groups.g``, ``methods``,
    ...), ignoring the swap groups added to the stored one from the dashboard."""
    added = [s for s in stored.swaps if s.name not in new.groups]  # queued from the dashboard's Task swap page
    old = _canonical(
        stored.model_copy(update={"swaps": [s for s in stored.swaps if s not in added]}),
        keep_groups=[g for g in stored.groups if g not in {s.name for s in added}],
    )
    cur = _canonical(new)
    out = []
    for key in sorted(set(old) | set(cur)):
        a, b = old.get(key), cur.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def _only_adds_units(stored: StudySpec, new: StudySpec) -> bool:
    """Whether ``new`` plans every unit ``stored`` plans (same keys: same tasks, data, adapters and
    parameters) and its tasks are the same: it only extends the study (groups drawn or declared
    after the experts and base were scored), so no stored row stops meaning what it meant."""
    if set(stored.all_tasks) != set(new.all_tasks):
        return False
    try:
        before = {u["unit_key"] for u in plan_units(stored)}
    except (OSError, ValueError):
        return False
    return before <= {u["unit_key"] for u in plan_units(new)}


def prepare(
    store: Store,
    spec_path: str | Path,
    *,
    grants: Grants = NO_GRANTS,
    replace: bool = False,
    description: str | None = None,
) -> tuple[StudySpec, dict]:
    """Validate the spec file, its data, base and adapters (no model loaded), register it, enqueue
    its units. See :func:`prepare_spec`."""
    return prepare_spec(store, parse_spec(Path(spec_path)), grants=grants, replace=replace, description=description)


def prepare_spec(
    store: Store,
    spec: StudySpec,
    *,
    grants: Grants | None = NO_GRANTS,
    replace: bool = False,
    description: str | None = None,
) -> tuple[StudySpec, dict]:
    """Check a parsed spec against its data, base and adapters, register it and enqueue its units.

    ``grants`` are checked now (the CLI's flags); ``None`` defers them to the run (the dashboard
    registers, and its Run page asks). A study already stored under this name with another spec
    is refused, naming the difference, unless ``replace`` (which discards the stored study's rows,
    jobs and states first).
    """
    if grants is not None:
        check_grants(spec, grants)
    load_all(spec)  # raises SpecError with every data problem before anything loads a model
    from ..io.adapters import load_adapter_set

    aset = load_adapter_set(spec.base, {t: spec.adapters[t] for t in spec.all_tasks}, allow_pickle=spec.allow_pickle)
    check_against_base(spec, aset)
    studies = store.studies().set_index("id")
    if spec.name in studies.index:
        if studies.loc[spec.name, "kind"] != "live":
            raise ValueError(
                f"the name {spec.name!r} belongs to the bundled {studies.loc[spec.name, 'kind']} "
                "study; give your study another name"
            )
        try:
            stored = load_study_spec(store, spec.name)
            diff = spec_differences(stored, spec)
        except SpecError:
            stored, diff = None, ["its stored spec, which no longer loads"]
        if diff and not replace and stored is not None and _only_adds_units(stored, spec):
            diff = []  # e.g. groups added after a preregistered admission: finished units stay done
        if diff and not replace:
            raise ValueError(
                f"study {spec.name!r} is already in the store {store.path} with another spec "
                f"(it differs in {', '.join(diff[:6])}{' …' if len(diff) > 6 else ''}); rename "
                "the study, or pass --replace to discard the stored one (its results, jobs and "
                "hidden states)"
            )
        if diff:
            store.delete_study(spec.name)
        elif stored is not None:  # same study: keep the swaps the dashboard added to it
            extra = [s for s in stored.swaps if s.name not in spec.groups]
            if extra:
                spec = parse_spec(
                    json.loads(
                        json.dumps(
                            {**spec.model_dump(mode="json"), "swaps": [s.model_dump() for s in (*spec.swaps, *extra)]}
                        )
                    )
                )
    register(store, spec, description)
    counts = jobs.enqueue(store, spec.name, plan_units(spec))
    return spec, counts
