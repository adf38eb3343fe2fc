"""How many threads torch's CPU kernels use, and how idle threads wait — chosen on purpose.

Torch's default is one intra-op thread per core of the machine, spin-waiting between parallel regions
(OpenMP's active wait). On a shared box, a notebook or a container with a CPU quota that is the wrong
choice: the threads outnumber the cores this process may use and burn them spinning, and the same
scoring run takes 1.5-5x longer than with one thread (issue 27). So MergeLab

- waits passively (``OMP_WAIT_POLICY=PASSIVE``) unless the environment says otherwise, and
- uses as many threads as the cores it may run on: its CPU affinity, capped by a cgroup CPU quota.

NumPy's BLAS (OpenBLAS in numpy's wheels) is a second pool of threads that spin while they wait. The
analyses multiply small matrices (probes × hidden size), where a second thread never pays and, on a
loaded machine, a spinning one made `mergelab report` 1.9x slower (13.3 s vs 7.1 s; a 40 × 576 Gram matrix: 0.08 ms
with one thread, 2.1 ms with two, under load). So numpy's BLAS gets one thread
(``OPENBLAS_NUM_THREADS=1``) unless the environment says otherwise; torch's own threads are chosen
as below.

Precedence for the thread count: ``--threads`` (every command), then ``$MERGELAB_THREADS``, then
``$OMP_NUM_THREADS``, then the usable cores. Both settings are put in the environment when
``mergelab`` is imported, before torch loads OpenMP, so the dashboard, every worker process and each
Ray actor inherit them.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: the environment variable that sets the thread count for every MergeLab process
ENV = "MERGELAB_THREADS"
#: the most threads asked for that MergeLab accepts (a typo such as 40000 is refused, not obeyed)
MAX_THREADS = 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: numpy's BLAS threads (read when numpy loads OpenBLAS); see :func:`limit_loaded_blas` for later
BLAS_ENV = "OPENBLAS_NUM_THREADS"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (``1.5`` = 150 ms of CPU per 100 ms), or None
    when there is none. Reads cgroup v2's ``cpu.max``, else v1's ``cpu.cfs_quota_us`` / ``cfs_period_us``.

    Args:
        root: where the cgroup file system is mounted.
    Returns:
        cores the quota allows, or None (no quota, or no cgroup files to read).
    """
    try:
        quota_text, period_text = (root / "cpu.max").read_text().split()[:2]
        return None if quota_text == "max" else int(quota_text) / int(period_text)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = int((root / folder / "cpu.cfs_quota_us").read_text())
            period = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """The cores this process may run on: its CPU affinity, capped by the cgroup quota (rounded up),
    at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def parse_threads(value: str | int, source: str) -> int:
    """A thread count from the command line or the environment; ValueError naming ``source`` if it
    is not a whole number from 1 to :data:`MAX_THREADS`."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{source} must be a whole number of threads, got {value!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{source} must be from 1 to {MAX_THREADS} threads, got {n}")
    return n


def chosen_threads(threads: int | None = None, environ=os.environ) -> int:
    """The intra-op thread count: ``threads`` if given, else ``$MERGELAB_THREADS``, else
    ``$OMP_NUM_THREADS``, else :func:`usable_cores`."""
    if threads is not None:
        return parse_threads(threads, "--threads")
    if environ.get(ENV, "").strip():
        return parse_threads(environ[ENV], f"${ENV}")
    if environ.get("OMP_NUM_THREADS", "").strip():
        try:
            return parse_threads(environ["OMP_NUM_THREADS"].split(",")[0], "$OMP_NUM_THREADS")
        except ValueError:
            pass  # OpenMP's own syntax we do not read: fall back to the cores
    return usable_cores()


def prepare_environment(environ=os.environ) -> None:
    """Passive waiting and the chosen thread count, put in the environment for OpenMP (read when torch
    loads it) and for every process started from this one. Respects what the user set; a bad
    ``$MERGELAB_THREADS`` is left for :func:`apply` to report."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    environ.setdefault(BLAS_ENV, "1")
    try:
        n = chosen_threads(environ=environ)
    except ValueError:
        return
    if environ.get(ENV, "").strip():
        environ["OMP_NUM_THREADS"] = str(n)
    else:
        environ.setdefault("OMP_NUM_THREADS", str(n))


def apply(threads: int | None = None, environ=os.environ) -> int:
    """Use ``threads`` (or the chosen default) from now on, in this process and the ones it starts;
    returns the count. Torch is told directly when it is already loaded, else through the
    environment it reads when it loads (so commands that never touch a model stay fast)."""
    n = chosen_threads(threads, environ)
    if threads is not None:
        environ[ENV] = str(n)
    environ["OMP_NUM_THREADS"] = str(n)
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return n


def limit_loaded_blas(environ=os.environ) -> None:
    """Hold numpy's already-loaded BLAS to ``$OPENBLAS_NUM_THREADS`` threads: when numpy was imported
    before MergeLab (``streamlit run`` imports it first) the variable came too late for OpenBLAS to
    read it, so it is applied through threadpoolctl."""
    if "numpy" not in sys.modules or not environ.get(BLAS_ENV, "").strip():
        return
    try:
        n = parse_threads(environ[BLAS_ENV], f"${BLAS_ENV}")
    except ValueError:
        return  # OpenBLAS's own reading of it stands
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
