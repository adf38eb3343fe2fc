"""Studies on a Ray cluster (a local one, 2 CPUs): the same scores as the local executor, an actor
killed mid-unit costs only that unit's attempt, a killed driver resumes with nothing redone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mergelab.analysis import progress
from mergelab.storage import jobs
from mergelab.storage.store import Store
from mergelab.study import executors, planner

from tinymodels import make_tiny_causal_study

ray = pytest.importorskip("ray")
MERGELAB = [sys.executable, "-m", "mergelab"]
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster():
    os.environ.update(ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_tiny_causal_study(tmp_path_factory.mktemp("ray-study"))


def _scores(store) -> dict:
    return {(r.group_name, r.model, r.task, r.method): r.score for r in store.results("tiny-causal").itertuples()}


def _local(study, tmp_path) -> dict:
    store = Store(tmp_path / "local.db")
    planner.prepare(store, study)
    executors.run_worker(store, "tiny-causal")
    return _scores(store)


def test_ray_stores_the_same_scores_as_the_local_executor(cluster, study, tmp_path):
    from mergelab.study.ray_executor import RayExecutor

    store = Store(tmp_path / "ray.db")
    planner.prepare(store, study)
    executor = RayExecutor(actors=2)
    out = executors.drive(store, "tiny-causal", executor)
    assert out == {"done": 15, "failed": 0}
    assert sum(executor.describe().values()) == 15 and len(executor.describe()) == 2
    frame = jobs.jobs_frame(store, "tiny-causal")
    assert frame["message"].str.match(r"done on actor-\d").all()
    from mergelab.analysis import views

    per_actor = progress.actor_progress(frame)  # what the Run page shows
    assert per_actor["done"].sum() == 15 and list(per_actor["actor"]) == sorted(executor.describe())
    local = _local(study, tmp_path)
    ours = _scores(store)
    assert ours.keys() == local.keys()
    assert all(abs(ours[k] - local[k]) <= 1e-6 for k in local)
    assert views.similarity(store, "tiny-causal", ["c0", "c1", "c2"], pooling="last").shape == (3, 3)


def test_an_actor_killed_mid_unit_costs_only_that_units_attempt(cluster, study, tmp_path):
    from mergelab.study.ray_executor import RayExecutor

    store = Store(tmp_path / "kill.db")
    planner.prepare(store, study)
    executor = RayExecutor(actors=2, actor_env={"MERGELAB_UNIT_DELAY_S": "1.5"})
    result = {}
    thread = threading.Thread(target=lambda: result.update(executors.drive(store, "tiny-causal", executor)))
    thread.start()
    deadline = time.time() + 120
    victim = None
    while time.time() < deadline and victim is None:
        frame = jobs.jobs_frame(store, "tiny-causal")
        running = frame[(frame.status == "running") & frame.message.str.startswith("on ray actor-")]
        if jobs.status_counts(store, "tiny-causal").get("done", 0) >= 2 and len(running):
            victim = running.iloc[0]
        time.sleep(0.05)
    assert victim is not None
    ray.kill(executor.actors[victim["message"].removeprefix("on ray ")])
    thread.join(timeout=300)
    assert result == {"done": 15, "failed": 0}
    frame = jobs.jobs_frame(store, "tiny-causal").set_index("id")
    assert (frame.status == "done").all()
    assert frame.loc[victim["id"], "attempts"] == 2
    assert (frame.drop(index=victim["id"])["attempts"] == 1).all()
    assert _scores(store) == pytest.approx(_local(study, tmp_path))


def test_a_killed_driver_resumes_with_nothing_redone(cluster, study, tmp_path):
    db = tmp_path / "driver.db"
    store = Store(db)
    planner.prepare(store, study)
    env = {**os.environ, **ENV, "MERGELAB_UNIT_DELAY_S": "0.7"}
    proc = subprocess.Popen(
        [*MERGELAB, "run", str(study), "--db", str(db), "--executor", "ray", "--actors", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and jobs.status_counts(store, "tiny-causal").get("done", 0) < 4:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    done = set(jobs.jobs_frame(store, "tiny-causal").query("status == 'done'")["id"])
    assert len(done) >= 4
    res = subprocess.run(
        [*MERGELAB, "run", str(study), "--db", str(db), "--executor", "ray"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    frame = jobs.jobs_frame(store, "tiny-causal").set_index("id")
    assert (frame.status == "done").all() and (frame.loc[sorted(done), "attempts"] == 1).all()
    assert "units per Ray actor" in res.stderr
