"""Threads chosen on purpose (mergelab.threads, issue 27): the usable cores from affinity and the cgroup
quota, the precedence of --threads / $MERGELAB_THREADS / $OMP_NUM_THREADS, passive waiting by default."""

import os
import subprocess
import sys
import types

import pytest

from mergelab import threads


def _cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def _cgroup_v1(tmp_path, quota, period, folder="cpu,cpuacct"):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert threads.cgroup_cpu_quota(_cgroup_v2(v2, "150000 100000\n")) == 1.5
    assert threads.cgroup_cpu_quota(_cgroup_v2(tmp_path, "max 100000\n")) is None
    v1 = tmp_path / "v1"
    v1.mkdir()
    assert threads.cgroup_cpu_quota(_cgroup_v1(v1, 50000, 100000)) == 0.5
    v1u = tmp_path / "v1u"
    v1u.mkdir()
    assert threads.cgroup_cpu_quota(_cgroup_v1(v1u, -1, 100000, "cpu")) is None
    empty = tmp_path / "none"
    empty.mkdir()
    assert threads.cgroup_cpu_quota(empty) is None


def test_usable_cores_are_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert threads.usable_cores(_cgroup_v2(tmp_path, "250000 100000")) == 3  # 2.5 cores of quota, rounded up
    (tmp_path / "cpu.max").write_text("max 100000")
    assert threads.usable_cores(tmp_path) == 8
    (tmp_path / "cpu.max").write_text("20000 100000")
    assert threads.usable_cores(tmp_path) == 1  # a fifth of a core is still one thread
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3})
    (tmp_path / "cpu.max").write_text("max 100000")
    assert threads.usable_cores(tmp_path) == 1  # `taskset -c 3` on a big machine


def test_precedence_flag_then_mergelab_threads_then_omp_then_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 6)
    assert threads.chosen_threads(None, {}) == 6
    assert threads.chosen_threads(None, {"OMP_NUM_THREADS": "3"}) == 3
    assert threads.chosen_threads(None, {"OMP_NUM_THREADS": "4,2"}) == 4  # OpenMP's nested list: the outer level
    assert threads.chosen_threads(None, {"OMP_NUM_THREADS": "lots"}) == 6
    assert threads.chosen_threads(None, {"OMP_NUM_THREADS": "3", "MERGELAB_THREADS": "2"}) == 2
    assert threads.chosen_threads(5, {"OMP_NUM_THREADS": "3", "MERGELAB_THREADS": "2"}) == 5


@pytest.mark.parametrize("bad", ["0", "-2", "x", "2.5", "", "100000"])
def test_bad_counts_are_one_clear_error(bad):
    with pytest.raises(ValueError, match="--threads must be"):
        threads.chosen_threads(bad, {})
    if bad.strip():
        with pytest.raises(ValueError, match=r"\$MERGELAB_THREADS must be"):
            threads.chosen_threads(None, {"MERGELAB_THREADS": bad})


def test_environment_waits_passively_and_respects_the_user(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    env: dict[str, str] = {}
    threads.prepare_environment(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "4"}
    threads.prepare_environment(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "4"}
    env = {"OMP_NUM_THREADS": "1", "MERGELAB_THREADS": "3"}
    threads.prepare_environment(env)
    assert env["OMP_NUM_THREADS"] == "3"
    env = {"MERGELAB_THREADS": "nonsense"}
    threads.prepare_environment(env)  # left for apply() (the command line) to report
    assert "OMP_NUM_THREADS" not in env


def test_apply_tells_a_loaded_torch_and_the_children(monkeypatch):
    told = []
    monkeypatch.setitem(threads.sys.modules, "torch", types.SimpleNamespace(set_num_threads=told.append))
    env: dict[str, str] = {}
    assert threads.apply(3, env) == 3
    assert told == [3] and env["MERGELAB_THREADS"] == "3" and env["OMP_NUM_THREADS"] == "3"


def test_ray_actors_get_their_reserved_cpus_as_threads():
    from mergelab.study.ray_executor import actor_threads

    assert actor_threads(2.0, {}) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}
    assert actor_threads(0.5, {})["OMP_NUM_THREADS"] == "1"
    assert actor_threads(1.0, {"MERGELAB_THREADS": "4"})["OMP_NUM_THREADS"] == "4"


def test_numpy_blas_loaded_first_is_held_to_one_thread():
    """`streamlit run` imports numpy before MergeLab: the thread limit is applied to the loaded BLAS."""
    code = (
        "import numpy, threadpoolctl; import mergelab; "
        "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
