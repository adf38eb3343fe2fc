"""Running one unit of a study, wherever it runs (this process, a worker process, a Ray actor):
the base loaded once and switched between experts and merges, the unit evaluated, and its output
returned as plain data (:class:`~mergelab.storage.jobs.UnitOutput`). Nothing here writes to the
store.

Units (each one job row, keyed by a hash of what determines it; see :mod:`.planner`):
``base`` — the untrained base on a task; ``expert`` — expert t on its own task t;
``states`` — pooled hidden states of expert t on the study's probe set;
``merge`` — a group's (or a pair's) merge with one method, evaluated on one task of it;
``mstates`` — that merge's hidden states on the group's probes (Theorem 1's measured distortion);
``conflicts`` — the four parameter-conflict metrics for every adapter pair.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

from ..io.content import content_id
from ..storage.jobs import UnitOutput
from ..storage.roles import held_out_name
from ..storage.states import expert_name, merged_name
from ..storage.store import RECORD_KEY
from .data import LmEvalTaskData, TaskData, load_all
from .grants import NO_GRANTS, Grants, check_grants
from .spec import StudySpec

Progress = Callable[[float, str], None]


def _model_key(spec: StudySpec) -> tuple:
    """What the loaded model of a worker depends on; base and adapters by content."""
    return (
        content_id(spec.base),
        {t: content_id(a) for t, a in spec.adapters.items()},
        spec.architecture,
        spec.allow_pickle,
        spec.trust_remote_code,
        spec.batch_size,
        spec.dtype,
    )


class StudyContext:
    """What a worker holds for one study: base loaded once, data, a cache of merges. Code from the
    model folder and pickles are used only when the spec asks *and* ``grants`` allow it."""

    def __init__(self, spec: StudySpec, device: str | None = None, grants: Grants = NO_GRANTS):
        from ..io.adapters import load_adapter_set
        from ..merging.device import pick_device
        from ..models.loaded import LoadedModel

        check_grants(spec, grants)
        self.spec = spec
        self.device = pick_device(device)
        self.data: dict[str, TaskData | LmEvalTaskData] = load_all(spec)
        tasks = spec.all_tasks
        self.aset = load_adapter_set(spec.base, {t: spec.adapters[t] for t in tasks}, allow_pickle=spec.allow_pickle)
        self.model = LoadedModel(
            self.aset, spec.architecture, self.device, spec.batch_size, spec.trust_remote_code, spec.dtype
        )
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

    def evaluate(self, task: str):
        """The model as it is now, scored on ``task``: by MergeLab's scorers, or by lm-eval's task
        definition for an lm_eval task (the same model object, weights swapped in place)."""
        data = self.data[task]
        if isinstance(data, LmEvalTaskData):
            from ..models import lm_eval_bridge

            m = self.model
            return lm_eval_bridge.evaluate(m.model, m.tokenizer, data.config, m.batch_size, m.device, data.task)
        return self.model.evaluate_rows(data)

    def probe_texts(self, tasks: list[str]) -> tuple[list[str], list[str]]:
        texts, owners = [], []
        for t in tasks:
            for row in self.data[t].probe_rows:
                texts.append(self.data[t].prompt(row))
                owners.append(t)
        return texts, owners

    def merged(self, group: str, method: str, params: dict) -> dict[str, torch.Tensor]:
        from ..io.adapters import AdapterSet
        from ..merging.merge import merge

        members = self.spec.members(group)
        key = (tuple(members), method, json.dumps(params, sort_keys=True))
        if key not in self._merges:
            sub = AdapterSet(
                self.aset.base,
                self.aset.base_ref,
                [self.aset.adapters[self.aset.names.index(t)] for t in members],
                self.aset.module_keys,
            )
            self._merges[key] = merge(
                sub, method, {**params, "seed": params.get("seed", self.spec.seed)}, device=str(self.device)
            ).deltas
            while len(self._merges) > 4:
                self._merges.popitem(last=False)
        return self._merges[key]


def _row(spec: StudySpec, task: str, **fields) -> dict:
    return {
        "group_name": "",
        "params_hash": "",
        "seed": spec.seed,
        "metric": spec.tasks[task].metric,
        "task": task,
        "expert_score": None,
        "loss": None,
        "source": "computed",
        **fields,
    }


def run_unit(ctx: StudyContext, job: dict, progress: Progress = lambda f, m: None) -> UnitOutput:
    """Run one unit and return what it produced.

    Debugging and test knobs: ``MERGELAB_UNIT_DELAY_S`` sleeps inside every unit before it returns
    (a crash mid-unit is then easy to provoke); ``MERGELAB_CRASH_UNIT=<kind>`` ends the process
    abruptly in every unit of that kind (a unit that kills its worker).
    """
    kind, p = job["kind"], job["payload"]
    if os.environ.get("MERGELAB_CRASH_UNIT") == kind:
        os._exit(9)
    out = _run(ctx, kind, p, job["unit_key"], progress)
    delay = float(os.environ.get("MERGELAB_UNIT_DELAY_S", "0") or 0)
    if delay:
        time.sleep(delay)
    return out


def _scored(spec: StudySpec, evaluation, task: str, **fields) -> UnitOutput:
    """A result row and its per-row records (keyed like it) for one evaluation."""
    if evaluation.metric:  # an lm-eval task names its own metric, its direction and its aggregation
        fields = {
            "metric": evaluation.metric,
            "higher_is_better": int(evaluation.higher_is_better),
            "aggregation": evaluation.aggregation,
            **fields,
        }
    result = _row(spec, task, score=evaluation.score, **fields)
    key = {k: result[k] for k in RECORD_KEY}
    return UnitOutput(results=[result], records=[{**key, **r} for r in evaluation.records])


def _run(ctx: StudyContext, kind: str, p: dict, unit_key: str, progress: Progress) -> UnitOutput:
    spec, model = ctx.spec, ctx.model
    if kind == "base":  # the untrained base on a task: what the expert must beat
        model.use("base", {})
        return _scored(spec, ctx.evaluate(p["task"]), p["task"], model="base", method="base")
    if kind == "expert":
        model.use_expert(p["task"])
        ev = ctx.evaluate(p["task"])
        return _scored(
            spec, ev, p["task"], model=f"expert:{p['task']}", method="expert", expert_score=ev.score, loss=0.0
        )
    if kind == "merge":
        deltas = ctx.merged(p["group"], p["method"], p["params"])
        progress(0.5, f"evaluating {p['task']}")
        model.use(f"merged:{p['group']}:{p['method']}", deltas, model.head_of(p["task"]))
        return _scored(
            spec,
            ctx.evaluate(p["task"]),
            p["task"],
            group_name=held_out_name(p["group"]) if p.get("held_out") else p["group"],
            method=p["method"],
            model=f"merged:{p['group']}:{p['method']}",
            params_hash=spec.fingerprint(p["method"], p["params"]),
        )
    if kind in ("states", "mstates"):
        if kind == "states":
            model.use_expert(p["task"])
            tasks, name = spec.all_tasks, expert_name(p["task"])
        else:
            model.use("merged", ctx.merged(p["group"], p["method"], p["params"]))
            tasks, name = spec.groups[p["group"]], merged_name(p["group"], p["method"])
        texts, owners = ctx.probe_texts(tasks)
        states = model.hidden_states(texts)
        n_layers = next(iter(states.values())).shape[0]
        meta = {"probe_tasks": json.dumps(owners), "unit_key": unit_key, "n_layers": str(n_layers)}
        if spec.hidden.layers:  # keep only the layers the study analyses (0 = embeddings)
            states = {k: v[spec.hidden.layers] for k, v in states.items()}
            meta["layers"] = json.dumps(spec.hidden.layers)
        return UnitOutput(states={name: ({k: v.numpy() for k, v in states.items()}, meta)})
    if kind == "conflicts":
        from ..merging.conflicts import conflict_metrics

        frame = conflict_metrics(ctx.aset, device=str(ctx.device), progress=lambda d, n, k: progress(d / n, k))
        return UnitOutput(pair_metrics=frame.to_dict(orient="records"))
    raise ValueError(f"unknown unit kind {kind!r}")
