"""The study runner: plan units, run them in a worker, write every result as rows.

Units (each one job row, keyed by a hash of what determines it):
``expert``  — expert t on its own task t;
``states``  — pooled hidden states of expert t on the study's probe set (all layers, 3 poolings);
``merge``   — a group's merge with one method, evaluated on one task of the group;
``mstates`` — that merge's hidden states on the group's probes (Theorem 1's measured distortion);
``conflicts`` — the four parameter-conflict metrics for every adapter pair.
Hidden states are stored as safetensors files beside the store (not pickles), so similarity
ablations never need a model.
"""

from __future__ import annotations

import errno
import json
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import jobs
from .data import TaskData, load_all
from .spec import NO_GRANTS, Grants, SpecError, StudySpec, check_grants, content_id, dump_spec, parse_spec
from .store import Store, StoreError

Progress = Callable[[dict], None]


def states_dir(store: Store, study_id: str) -> Path:
    return store.states_dir(study_id)


def plan_units(spec: StudySpec) -> list[dict]:
    """Every unit of the study with its key: a hash of what determines its result, with local
    adapters and data files entering by content, not by path."""
    units = []
    tasks = spec.all_tasks
    adapter_id = {t: content_id(spec.adapters[t]) for t in tasks}
    task_id = {t: {**spec.tasks[t].key_fields(), "data": content_id(spec.tasks[t].data)} for t in tasks}

    def add(kind, payload, *parts):
        key = spec.fingerprint(kind, payload, *parts)
        units.append({"kind": kind, "unit_key": f"{spec.name}:{kind}:{key}", "payload": payload})

    stored = [spec.hidden.layers] if spec.hidden.layers else []  # a field added later: only when set
    if spec.base_scores:
        for t in tasks:
            add("base", {"task": t}, task_id[t])
    for t in tasks:
        add("expert", {"task": t}, adapter_id[t], task_id[t])
    for t in tasks:
        add("states", {"task": t}, adapter_id[t], task_id, spec.hidden.k, *stored)
    for group, members in spec.groups.items():
        adapters = [adapter_id[t] for t in members]
        for method, params in spec.methods.items():
            for t in members:
                add("merge", {"group": group, "method": method, "params": params, "task": t},
                    adapters, task_id[t])
            add("mstates", {"group": group, "method": method, "params": params},
                adapters, {m: task_id[m] for m in members}, spec.hidden.k, *stored)
    for pair, members in spec.pair_groups.items():  # Table 4: merged and scored, no hidden states
        adapters = [adapter_id[t] for t in members]
        for method, params in spec.methods.items():
            for t in members:
                add("merge", {"group": pair, "method": method, "params": params, "task": t},
                    adapters, task_id[t])
    ordered = sorted(tasks)
    add("conflicts", {"tasks": ordered}, [adapter_id[t] for t in ordered])
    return units


def register(store: Store, spec: StudySpec, description: str | None = None) -> None:
    """Store the study's spec and structure; ``description=None`` keeps a stored description."""
    store.upsert_study(spec.name, spec.name, "live", description, dump_spec(spec))
    store.set_groups(spec.name, spec.groups)
    if spec.pair_groups:
        store.set_groups(spec.name, spec.pair_groups, role="pair")
    if spec.pool:
        store.set_groups(spec.name, {"pool": spec.pool}, role="pool")
    store.set_tasks(spec.name, [{"name": t, "metric": spec.tasks[t].metric,
                                 "meta": {"constructed": spec.tasks[t].constructed,
                                          "note": spec.tasks[t].note}} for t in spec.all_tasks])
    store.set_models(spec.name, [{"name": "base", "role": "base", "source": spec.base}] + [
        {"name": f"expert:{t}", "role": "expert", "source": spec.adapters[t]} for t in spec.all_tasks])


def load_study_spec(store: Store, study_id: str) -> StudySpec:
    df = store.query("SELECT spec FROM studies WHERE id=?", (study_id,))
    if df.empty or not df["spec"].iloc[0]:
        raise ValueError(f"study {study_id!r} has no stored spec to run")
    return parse_spec(df["spec"].iloc[0])


def _model_key(spec: StudySpec) -> tuple:
    """What the loaded model of a worker depends on; base and adapters by content."""
    return (content_id(spec.base), {t: content_id(a) for t, a in spec.adapters.items()}, spec.architecture,
            spec.allow_pickle, spec.trust_remote_code, spec.batch_size, spec.dtype)


class StudyContext:
    """What a worker holds for one study: base loaded once, data, a cache of merges. Code from the
    model folder and pickles are used only when the spec asks *and* ``grants`` allow it."""

    def __init__(self, store: Store, spec: StudySpec, device: str | None = None, grants: Grants = NO_GRANTS):
        from .loading import load_adapter_set
        from .merge import pick_device
        from .runtime import ModelRunner

        check_grants(spec, grants)
        self.spec = spec
        self.store = store
        self.device = pick_device(device)
        self.data: dict[str, TaskData] = load_all(spec)
        tasks = spec.all_tasks
        self.aset = load_adapter_set(spec.base, {t: spec.adapters[t] for t in tasks},
                                     allow_pickle=spec.allow_pickle)
        self.runner = ModelRunner(self.aset, spec.architecture, self.device, spec.batch_size,
                                  spec.trust_remote_code, spec.dtype)
        self._model_key = _model_key(spec)
        self._merges: OrderedDict = OrderedDict()

    def refresh(self, spec: StudySpec) -> bool:
        """Take a newer version of the study's spec (say, a group added by a swap) without
        reloading the model, when base and adapters are unchanged — by content, as unit keys see
        them (an adapter retrained in place is a new adapter). False: rebuild the context. The
        task data is re-read every time (cached per file content, so cheap): an edited data file
        gets new unit keys, and those units must see its new rows."""
        if _model_key(spec) != self._model_key:
            return False
        self.data = load_all(spec)
        self.spec = spec
        return True

    def probe_texts(self, tasks: list[str]) -> tuple[list[str], list[str]]:
        texts, owners = [], []
        for t in tasks:
            for row in self.data[t].probe_rows:
                texts.append(self.data[t].prompt(row))
                owners.append(t)
        return texts, owners

    def merged(self, group: str, method: str, params: dict) -> dict[str, torch.Tensor]:
        from .loading import AdapterSet
        from .merge import merge

        members = self.spec.members(group)
        key = (tuple(members), method, json.dumps(params, sort_keys=True))
        if key not in self._merges:
            sub = AdapterSet(self.aset.base, self.aset.base_ref,
                             [self.aset.adapters[self.aset.names.index(t)] for t in members],
                             self.aset.module_keys)
            self._merges[key] = merge(sub, method, {**params, "seed": params.get("seed", self.spec.seed)},
                                      device=str(self.device)).deltas
            while len(self._merges) > 4:
                self._merges.popitem(last=False)
        return self._merges[key]


def execute(ctx: StudyContext, job: dict, progress: Callable[[float, str], None]):
    """Run one unit; returns a function writing its result rows inside the finishing transaction."""
    kind, p = job["kind"], job["payload"]
    study = ctx.spec.name
    now = time.time()
    if kind == "base":  # the untrained base on a task: what the expert must beat
        ctx.runner.use("base", {})
        score = ctx.runner.evaluate(ctx.data[p["task"]])
        return lambda con: con.execute(
            "INSERT OR REPLACE INTO results(study_id, group_name, model, task, method, params_hash, seed, "
            "metric, score, expert_score, loss, source, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (study, "", "base", p["task"], "base", "", ctx.spec.seed, ctx.spec.tasks[p["task"]].metric,
             score, None, None, "computed", now))
    if kind == "expert":
        ctx.runner.use_expert(p["task"])
        score = ctx.runner.evaluate(ctx.data[p["task"]])
        return lambda con: con.execute(
            "INSERT OR REPLACE INTO results(study_id, group_name, model, task, method, params_hash, seed, "
            "metric, score, expert_score, loss, source, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (study, "", f"expert:{p['task']}", p["task"], "expert", "", ctx.spec.seed,
             ctx.spec.tasks[p["task"]].metric, score, score, 0.0, "computed", now))
    if kind == "merge":
        deltas = ctx.merged(p["group"], p["method"], p["params"])
        progress(0.5, f"evaluating {p['task']}")
        ctx.runner.use(f"merged:{p['group']}:{p['method']}", deltas, ctx.runner.head_of(p["task"]))
        score = ctx.runner.evaluate(ctx.data[p["task"]])
        phash = ctx.spec.fingerprint(p["method"], p["params"])

        def write(con):
            con.execute("INSERT OR IGNORE INTO runs(study_id, params_hash, method, params) VALUES (?,?,?,?)",
                        (study, phash, p["method"], json.dumps(p["params"], sort_keys=True)))
            con.execute(
                "INSERT OR REPLACE INTO results(study_id, group_name, model, task, method, params_hash, seed, "
                "metric, score, expert_score, loss, source, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (study, p["group"], f"merged:{p['group']}:{p['method']}", p["task"], p["method"], phash,
                 ctx.spec.seed, ctx.spec.tasks[p["task"]].metric, score, None, None, "computed", now))

        return write
    if kind in ("states", "mstates"):
        if kind == "states":
            ctx.runner.use_expert(p["task"])
            tasks = ctx.spec.all_tasks
            name = f"expert__{p['task']}"
        else:
            ctx.runner.use("merged", ctx.merged(p["group"], p["method"], p["params"]))
            tasks = ctx.spec.groups[p["group"]]
            name = f"merged__{p['group']}__{p['method']}"
        texts, owners = ctx.probe_texts(tasks)
        states = ctx.runner.hidden_states(texts)
        n_layers = next(iter(states.values())).shape[0]
        meta = {"probe_tasks": json.dumps(owners), "unit_key": job["unit_key"], "n_layers": str(n_layers)}
        if ctx.spec.hidden.layers:  # keep only the layers the study analyses (0 = embeddings)
            keep = ctx.spec.hidden.layers
            states = {k: v[keep] for k, v in states.items()}
            meta["layers"] = json.dumps(keep)
        ctx.store.write_states(study, name, states, meta)
        return lambda con: None
    if kind == "conflicts":
        from .conflicts import conflict_metrics

        frame = conflict_metrics(ctx.aset, device=str(ctx.device),
                                 progress=lambda d, n, k: progress(d / n, k))
        rows = [(study, r.task_a, r.task_b, r.name, float(r.value)) for r in frame.itertuples()]
        return lambda con: con.executemany(
            "INSERT OR REPLACE INTO pair_metrics(study_id, task_a, task_b, name, value) VALUES (?,?,?,?,?)",
            rows)
    raise ValueError(f"unknown unit kind {kind!r}")


def load_states(store: Store, study_id: str, name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One stored states file and its probe owners. Pages read the same files on every rerun and
    the swap ranking reads each expert once per candidate, so reads are cached per file version
    (path, size, mtime); callers must not modify the tensors."""
    states, owners, _ = load_states_with_layers(store, study_id, name)
    return states, owners


def load_states_with_layers(store: Store, study_id: str, name: str):
    """As :func:`load_states`, plus ``(stored layer numbers, the model's layer count)``: every
    layer 0 … n − 1 (0 = embeddings) unless the study stored only some."""
    path = store.states_path(study_id, name)
    stat = path.stat()
    return _read_states(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=128)
def _read_states(path: str, size: int, mtime_ns: int):
    from safetensors import safe_open

    with safe_open(path, "pt") as h:
        meta = h.metadata()
    tensors = load_file(path)
    n = next(iter(tensors.values())).shape[0]
    layers = json.loads(meta["layers"]) if "layers" in meta else list(range(n))
    return tensors, json.loads(meta["probe_tasks"]), (layers, int(meta.get("n_layers", n)))


def run_worker(store: Store, study_id: str | None = None, *, device: str | None = None,
               grants: Grants = NO_GRANTS, stop_when_empty: bool = True, on_event: Progress | None = None,
               idle_sleep: float = 1.0, max_units: int | None = None,
               stale_after: float = jobs.STALE_AFTER_S) -> dict:
    """Claim and run jobs until none are queued (or forever with stop_when_empty=False).

    Claims of workers of this machine that died are taken back at once (by process id), others'
    after ``stale_after`` seconds without a heartbeat. With ``study_id``, the worker also waits for
    units of that study still running elsewhere (taking them over if their worker dies), so it
    returns only when none is left running. Studies asking for what ``grants`` do not allow are
    refused (with ``study_id``: a :class:`GrantError` before anything runs; otherwise their units
    are left queued and each is reported once as a ``refused`` event). A store that cannot be written (read-only,
    full disk) raises :class:`StoreError` after giving the unit back to the queue.

    ``MERGELAB_UNIT_DELAY_S`` (a debugging and test knob) sleeps inside every unit before its
    results are written, to make a crash mid-unit easy to provoke.
    """
    import os

    me = jobs.worker_id()
    delay = float(os.environ.get("MERGELAB_UNIT_DELAY_S", "0") or 0)
    contexts: dict[str, StudyContext] = {}
    if study_id is not None:
        if not store.has_study(study_id):
            raise ValueError(f"study {study_id!r} is not in the store {store.path}")
        check_grants(load_study_spec(store, study_id), grants)
    done = failed = 0
    refused: dict[str, str] = {}
    while max_units is None or done + failed < max_units:
        jobs.recover_dead(store)
        jobs.recover_stale(store, stale_after)
        if study_id is None:
            now_refused = _refused_studies(store, grants)
            for sid in now_refused.keys() - refused.keys():
                if on_event:
                    on_event({"event": "refused", "study_id": sid, "reason": now_refused[sid]})
            refused = now_refused
        job = jobs.claim(store, me, study_id, exclude=tuple(refused))
        if job is None:
            running = jobs.status_counts(store, study_id).get("running", 0) if study_id else 0
            if running and stop_when_empty:
                if on_event:
                    on_event({"event": "waiting", "running": running})
                time.sleep(idle_sleep)
                continue
            if stop_when_empty:
                break
            time.sleep(idle_sleep)
            continue
        if on_event:
            on_event({"event": "start", **job})
        started = time.perf_counter()
        try:
            with jobs.Heartbeat(store, job["id"], me):
                sid = job["study_id"]
                spec = load_study_spec(store, sid)  # re-read: the study may have grown since
                if sid not in contexts or not contexts[sid].refresh(spec):
                    contexts[sid] = StudyContext(store, spec, device, grants)
                    if on_event:
                        on_event({"event": "loaded", "seconds": time.perf_counter() - started, "rss_mb": _rss_mb()})
                    started = time.perf_counter()
                job_id = job["id"]
                write = execute(contexts[sid], job,
                                lambda f, m, j=job_id: jobs.report_progress(store, j, me, f, m))
                if delay:
                    time.sleep(delay)
            finished = jobs.finish(store, job, me, write)
        except StoreError as exc:
            jobs.release(store, job, me, f"the store could not be written: {exc}")
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                jobs.release(store, job, me, str(exc))
                raise StoreError(f"cannot write beside the store {store.path}: {exc.strerror}") from None
            finished = _failed(store, job, me, exc, on_event)
            failed += 1
            continue
        except Exception as exc:  # a unit failing must not take the worker (or other units) down
            _failed(store, job, me, exc, on_event)
            failed += 1
            continue
        if finished:
            done += 1
            if on_event:
                on_event({"event": "done", "seconds": time.perf_counter() - started, "rss_mb": _rss_mb(), **job})
    return {"done": done, "failed": failed}


def _rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration, ValueError):
        return float("nan")


def _failed(store: Store, job: dict, worker: str, exc: Exception, on_event: Progress | None) -> bool:
    jobs.fail(store, job, worker, f"{type(exc).__name__}: {exc}")
    if on_event:
        on_event({"event": "failed", "error": str(exc), "trace": traceback.format_exc(), **job})
    return False


def _refused_studies(store: Store, grants: Grants) -> dict[str, str]:
    """Studies with queued units that ask for what ``grants`` do not allow → the reason."""
    from .spec import GrantError

    queued = store.query("SELECT DISTINCT study_id FROM jobs WHERE status='queued'")["study_id"]
    out = {}
    for sid in queued:
        try:
            check_grants(load_study_spec(store, sid), grants)
        except GrantError as exc:
            out[sid] = str(exc)
        except (SpecError, ValueError):
            pass  # its units fail one by one with the reason
    return out


def add_group(store: Store, study_id: str, name: str, tasks: list[str]) -> dict:
    """Add a task group to a live study (e.g. a swap) and enqueue only its new units."""
    spec = load_study_spec(store, study_id)
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for study {study_id!r}")
    spec = parse_spec(json.loads(json.dumps(spec.model_copy(
        update={"groups": {**spec.groups, name: list(tasks)}}).model_dump(mode="json"))))
    store.upsert_study(spec.name, spec.name, "live", None, dump_spec(spec))
    store.set_groups(spec.name, {name: list(tasks)})
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
        problems.append(f"base: {spec.base} ships its own code (auto_map in its config); MergeLab runs it "
                        "only if the study sets trust_remote_code: true and the run is given --trust-remote-code")
    layers = next((config[k] for k in ("num_hidden_layers", "num_layers", "n_layer") if k in config), None)
    if isinstance(layers, int) and not -(layers + 1) <= spec.hidden.layer <= layers:
        problems.append(f"hidden.layer: {spec.hidden.layer} is outside this base's layers: 0 (embeddings) to "
                        f"{layers}, or -1 … -{layers + 1} counting from the last")
    if spec.architecture == "encoder":
        for task in spec.all_tasks:
            adapter = aset.adapters[aset.names.index(task)]
            head = adapter.heads.get("classifier.weight")
            labels = spec.tasks[task].labels
            if head is None:
                problems.append(f"adapters.{task}: no saved classification head (modules_to_save=['classifier']); "
                                "an encoder study scores each task with its own head")
            elif labels and head.shape[0] != len(labels):
                problems.append(f"tasks.{task}.labels: the adapter's classification head has {head.shape[0]} "
                                f"labels, the task lists {len(labels)} ({', '.join(labels)})")
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
    data = spec.model_dump(mode="json")
    data["base"] = content_id(spec.base)
    data["adapters"] = {t: content_id(a) for t, a in spec.adapters.items()}
    for t, task in data["tasks"].items():
        task["data"] = content_id(spec.tasks[t].data)
    if keep_groups is not None:
        data["groups"] = {g: v for g, v in data["groups"].items() if g in keep_groups}
    return data


def spec_differences(stored: StudySpec, new: StudySpec) -> list[str]:
    """Where ``new`` differs from the stored spec of the same study (``groups.g``, ``methods``,
    ...), ignoring the swap groups added to the stored one from the dashboard."""
    old = _canonical(stored, keep_groups=[g for g in stored.groups if not g.startswith("swap:") or g in new.groups])
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


def prepare(store: Store, spec_path: str | Path, *, grants: Grants = NO_GRANTS, replace: bool = False,
            description: str | None = None) -> tuple[StudySpec, dict]:
    """Validate the spec file, its data, base and adapters (no model loaded), register it, enqueue
    its units. See :func:`prepare_spec`."""
    return prepare_spec(store, parse_spec(Path(spec_path)), grants=grants, replace=replace,
                        description=description)


def prepare_spec(store: Store, spec: StudySpec, *, grants: Grants | None = NO_GRANTS, replace: bool = False,
                 description: str | None = None) -> tuple[StudySpec, dict]:
    """Check a parsed spec against its data, base and adapters, register it and enqueue its units.

    ``grants`` are checked now (the CLI's flags); ``None`` defers them to the run (the dashboard
    registers, and its Run page asks). A study already stored under this name with another spec
    is refused, naming the difference, unless ``replace`` (which discards the stored study's rows,
    jobs and states first).
    """
    if grants is not None:
        check_grants(spec, grants)
    load_all(spec)  # raises SpecError with every data problem before anything loads a model
    from .loading import load_adapter_set

    aset = load_adapter_set(spec.base, {t: spec.adapters[t] for t in spec.all_tasks},
                            allow_pickle=spec.allow_pickle)
    check_against_base(spec, aset)
    studies = store.studies().set_index("id")
    if spec.name in studies.index:
        if studies.loc[spec.name, "kind"] != "live":
            raise ValueError(f"the name {spec.name!r} belongs to the bundled {studies.loc[spec.name, 'kind']} "
                             "study; give your study another name")
        try:
            stored = load_study_spec(store, spec.name)
            diff = spec_differences(stored, spec)
        except SpecError:
            stored, diff = None, ["its stored spec, which no longer loads"]
        if diff and not replace:
            raise ValueError(f"study {spec.name!r} is already in the store {store.path} with another spec "
                             f"(it differs in {', '.join(diff[:6])}{' …' if len(diff) > 6 else ''}); rename "
                             "the study, or pass --replace to discard the stored one (its results, jobs and "
                             "hidden states)")
        if diff:
            store.delete_study(spec.name)
        elif stored is not None:  # same study: keep the groups the dashboard added to it (swaps)
            extra = {g: t for g, t in stored.groups.items() if g not in spec.groups}
            spec = spec.model_copy(update={"groups": {**spec.groups, **extra}})
    register(store, spec, description)
    counts = jobs.enqueue(store, spec.name, plan_units(spec))
    return spec, counts
