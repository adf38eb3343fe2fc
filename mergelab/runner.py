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

import json
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import jobs
from .data import TaskData, load_all
from .spec import StudySpec, content_id, dump_spec, parse_spec
from .store import Store

Progress = Callable[[dict], None]


def states_dir(store: Store, study_id: str) -> Path:
    return store.path.parent / "states" / study_id


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

    for t in tasks:
        add("expert", {"task": t}, adapter_id[t], task_id[t])
    for t in tasks:
        add("states", {"task": t}, adapter_id[t], task_id, spec.hidden.k)
    for group, members in spec.groups.items():
        adapters = [adapter_id[t] for t in members]
        for method, params in spec.methods.items():
            for t in members:
                add("merge", {"group": group, "method": method, "params": params, "task": t},
                    adapters, task_id[t])
            add("mstates", {"group": group, "method": method, "params": params},
                adapters, {m: task_id[m] for m in members}, spec.hidden.k)
    ordered = sorted(tasks)
    add("conflicts", {"tasks": ordered}, [adapter_id[t] for t in ordered])
    return units


def register(store: Store, spec: StudySpec, description: str = "") -> None:
    store.upsert_study(spec.name, spec.name, "live", description, dump_spec(spec))
    store.set_groups(spec.name, spec.groups)
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
    """What a worker holds for one study: base loaded once, data, a cache of merges."""

    def __init__(self, store: Store, spec: StudySpec, device: str | None = None):
        from .loading import load_adapter_set
        from .merge import pick_device
        from .runtime import ModelRunner

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

        members = self.spec.groups[group]
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
        folder = states_dir(ctx.store, study)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        save_file({k: v.contiguous() for k, v in states.items()}, tmp,
                  metadata={"probe_tasks": json.dumps(owners), "unit_key": job["unit_key"]})
        os.replace(tmp, folder / f"{name}.safetensors")
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
    path = states_dir(store, study_id) / f"{name}.safetensors"
    stat = path.stat()
    return _read_states(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=128)
def _read_states(path: str, size: int, mtime_ns: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors import safe_open

    with safe_open(path, "pt") as h:
        owners = json.loads(h.metadata()["probe_tasks"])
    return load_file(path), owners


def run_worker(store: Store, study_id: str | None = None, *, device: str | None = None,
               stop_when_empty: bool = True, on_event: Progress | None = None,
               idle_sleep: float = 1.0, max_units: int | None = None,
               stale_after: float = jobs.STALE_AFTER_S) -> dict:
    """Claim and run jobs until none are queued (or forever with stop_when_empty=False).

    ``MERGELAB_UNIT_DELAY_S`` (a debugging and test knob) sleeps inside every unit before its
    results are written, to make a crash mid-unit easy to provoke.
    """
    me = jobs.worker_id()
    delay = float(os.environ.get("MERGELAB_UNIT_DELAY_S", "0") or 0)
    contexts: dict[str, StudyContext] = {}
    done = failed = 0
    while max_units is None or done + failed < max_units:
        jobs.recover_stale(store, stale_after)
        job = jobs.claim(store, me, study_id)
        if job is None:
            if stop_when_empty:
                break
            time.sleep(idle_sleep)
            continue
        if on_event:
            on_event({"event": "start", **job})
        try:
            with jobs.Heartbeat(store, job["id"], me):
                sid = job["study_id"]
                spec = load_study_spec(store, sid)  # re-read: the study may have grown since
                if sid not in contexts or not contexts[sid].refresh(spec):
                    contexts[sid] = StudyContext(store, spec, device)
                job_id = job["id"]
                write = execute(contexts[sid], job,
                                lambda f, m, j=job_id: jobs.report_progress(store, j, me, f, m))
                if delay:
                    time.sleep(delay)
            if jobs.finish(store, job, me, write):
                done += 1
                if on_event:
                    on_event({"event": "done", **job})
        except Exception as exc:  # a unit failing must not take the worker (or other units) down
            jobs.fail(store, job, me, f"{type(exc).__name__}: {exc}")
            failed += 1
            if on_event:
                on_event({"event": "failed", "error": str(exc), "trace": traceback.format_exc(), **job})
    return {"done": done, "failed": failed}


def add_group(store: Store, study_id: str, name: str, tasks: list[str]) -> dict:
    """Add a task group to a live study (e.g. a swap) and enqueue only its new units."""
    spec = load_study_spec(store, study_id)
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for study {study_id!r}")
    spec = spec.model_copy(update={"groups": {**spec.groups, name: list(tasks)}})
    store.upsert_study(spec.name, spec.name, "live",
                       store.query("SELECT description FROM studies WHERE id=?", (study_id,))
                       ["description"].iloc[0], dump_spec(spec))
    store.set_groups(spec.name, {name: list(tasks)})
    return jobs.enqueue(store, spec.name, plan_units(spec))


def prepare(store: Store, spec_path: str | Path) -> tuple[StudySpec, dict]:
    """Validate the spec and every task's data (no model work), register, enqueue."""
    spec = parse_spec(spec_path)
    load_all(spec)  # raises SpecError with every data problem before anything loads a model
    from .loading import load_adapter_set

    load_adapter_set(spec.base, {t: spec.adapters[t] for t in spec.all_tasks},
                     allow_pickle=spec.allow_pickle)
    register(store, spec)
    counts = jobs.enqueue(store, spec.name, plan_units(spec))
    return spec, counts
