"""What every executor is — the seam between the driver (which claims units and writes results) and
whatever runs them (this process, worker processes, Ray actors) — the outcome it hands back, and
the in-process executor every other one runs units with in the end. The driver and local workers
(:mod:`.executors`) and the Ray executor (:mod:`.ray_executor`) both build on it; neither needs the
other."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..storage.jobs import UnitOutput
from .grants import NO_GRANTS, Grants
from .spec import StudySpec


@dataclass
class Outcome:
    """A unit an executor finished: its output, or the error (one line) and traceback."""

    job: dict
    output: UnitOutput | None = None
    error: str | None = None
    traceback: str = ""
    seconds: float = 0.0
    load_seconds: float | None = None  # a base was (re)loaded for this unit first
    rss_mb: float = float("nan")
    lost: str | None = None  # the unit did not run to the end (its executor's worker died): requeue it
    actor: str | None = None  # which of the executor's workers ran it


class Executor:
    """What the driver needs from whatever runs units."""

    def slots(self) -> int:
        """How many more units it can take now."""
        raise NotImplementedError

    def submit(self, job: dict, spec: StudySpec, progress: Callable[[float, str], None]) -> None:
        raise NotImplementedError

    def collect(self, timeout: float) -> list[Outcome]:
        """Units finished since the last call (waiting up to ``timeout`` seconds for one)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration, ValueError):
        return float("nan")


class InProcess(Executor):
    """Runs each unit here, at once; keeps one loaded base per study between units."""

    def __init__(self, device: str | None = None, grants: Grants = NO_GRANTS):
        self.device, self.grants = device, grants
        self.contexts: dict = {}
        self._done: list[Outcome] = []

    def slots(self) -> int:
        return 0 if self._done else 1

    def submit(self, job: dict, spec: StudySpec, progress) -> None:
        from .units import StudyContext, run_unit

        started = time.perf_counter()
        load = None
        try:
            sid = job["study_id"]
            if sid not in self.contexts or not self.contexts[sid].refresh(spec):
                self.contexts[sid] = StudyContext(spec, self.device, self.grants)
                load, started = time.perf_counter() - started, time.perf_counter()
            output = run_unit(self.contexts[sid], job, progress)
            self._done.append(
                Outcome(job, output, seconds=time.perf_counter() - started, load_seconds=load, rss_mb=rss_mb())
            )
        except Exception as exc:  # a unit failing must not take the worker (or other units) down
            self._done.append(
                Outcome(
                    job,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                    seconds=time.perf_counter() - started,
                    load_seconds=load,
                )
            )

    def collect(self, timeout: float) -> list[Outcome]:
        done, self._done = self._done, []
        return done
