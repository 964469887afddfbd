"""Workflow steps raced by several real processes on every driver.

* Batch accounting: every child counts every job of one batch (so each job is
  "finished" by several processes at the same moment, as a redo after a crash
  or two workers would): each job is counted once, and exactly one call in
  all children sees the batch reach 0 pending as a new count.
* dispatch_once: children dispatch the same deterministic ids at once; each
  id is queued exactly once.
* End to end: worker processes (`main.py --queue-work`) run many small batches
  and chains; every callback runs once, every link once and in order.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues import batch, chain
from queues.drivers.base import QueueDriver
from queues.workflows import batch_status, store_of
from tests.conftest import MARIADB_URL, POSTGRES_URL
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.driver_race_child import PROJECT_ROOT
from tests.jobs_fixture.jobs import RetriedStepJob, StepJob
from tests.jobs_fixture.support import main_env, registry, start_main

#: Racing child processes per test.
CHILDREN = 4
#: Seconds from spawning the children to their common start (they import meanwhile).
START_MARGIN = 2.5
#: Upper bound on any child's run, seconds (a loaded 2-core machine).
CHILD_TIMEOUT = 120


@pytest.fixture(params=DRIVER_NAMES)
def driver_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def driver(driver_name: str, tmp_path: Path) -> Iterator[QueueDriver]:
    made = make_driver(driver_name, tmp_path)
    yield made
    made.close()


def race(driver_name: str, tmp_path: Path, mode: str, **options: object) -> list[list[str]]:
    """Run CHILDREN workflow_race_child processes at once; their output lines, split."""
    start = time.time() + START_MARGIN
    outs = [tmp_path / f"{mode}-{i}.out" for i in range(CHILDREN)]
    children = []
    for out in outs:
        command = [sys.executable, "-m", "tests.workflow_race_child", "--driver", driver_name]
        command += ["--mode", mode, "--out", str(out), "--state-dir", str(tmp_path)]
        command += ["--start-at", repr(start)]
        for key, value in options.items():
            command += [f"--{key}", str(value)]
        children.append(subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.PIPE))
    for child in children:
        _, err = child.communicate(timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, err.decode()
    return [line.split() for out in outs for line in out.read_text().splitlines()]


def test_each_batch_job_is_counted_once_and_one_call_sees_the_end(
    driver_name: str, driver: QueueDriver, tmp_path: Path
) -> None:
    jobs = 30
    assert store_of(driver).create("race-batch", jobs, {}, None)
    calls = race(driver_name, tmp_path, "finish", batch="race-batch", count=jobs)
    assert len(calls) == CHILDREN * jobs
    counted = Counter(job for job, new, _ in calls if new == "1")
    assert sorted(counted) == sorted(f"race-batch.{i}" for i in range(jobs))
    assert set(counted.values()) == {1}  # each job counted by exactly one call
    endings = [call for call in calls if call[1] == "1" and call[2] == "0"]
    assert len(endings) == 1  # exactly one call took the batch to 0 pending
    state = store_of(driver).get("race-batch")
    assert state is not None and (state.pending, state.done, state.failed) == (0, jobs, 0)


def test_dispatch_once_queues_each_id_once_under_a_race(
    driver_name: str, driver: QueueDriver, tmp_path: Path
) -> None:
    ids = 20
    calls = race(driver_name, tmp_path, "once", count=ids)
    added = Counter(job for job, flag in calls if flag == "1")
    assert sorted(added) == sorted(f"once-{i}" for i in range(ids))
    assert set(added.values()) == {1}
    popped = []
    while (job := driver.pop(["flow"])) is not None:
        popped.append(job.id)
        assert driver.ack(job)
    assert sorted(popped) == sorted(added)


def _worker_env(driver_name: str, tmp_path: Path) -> dict[str, str]:
    if driver_name == "redis-cluster":
        from tests.redis_topology import shared_cluster

        seed = shared_cluster().seed
        return main_env(
            "redis",
            tmp_path,
            REDIS_HOST=seed.host,
            REDIS_PORT=str(seed.port),
            REDIS_DB="0",
            REDIS_CLUSTER="true",
        )
    if driver_name == "mariadb":
        return main_env("database", tmp_path, DB_URL=MARIADB_URL, ENABLE_MYSQL="false")
    if driver_name == "postgres":
        return main_env("database", tmp_path, DB_URL=POSTGRES_URL, ENABLE_MYSQL="false")
    return main_env("redis" if driver_name == "redis" else "database", tmp_path)


@pytest.mark.slow
def test_worker_processes_run_every_callback_and_link_exactly_once(
    driver_name: str, driver: QueueDriver, tmp_path: Path
) -> None:
    steps, calls = tmp_path / "steps", tmp_path / "callbacks"
    batches = [
        batch(
            [
                StepJob(path=str(steps), value=f"b{n}.{i}", fail=(n % 3 == 0 and i == 0))
                for i in range(2)
            ],
            then=StepJob(path=str(calls), value=f"b{n}.then"),
            catch=StepJob(path=str(calls), value=f"b{n}.catch"),
            finally_=StepJob(path=str(calls), value=f"b{n}.finally"),
        ).dispatch(driver, registry=registry())
        for n in range(12)
    ]
    for n in range(6):
        chain(*(StepJob(path=str(steps), value=f"c{n}.{i}") for i in range(3))).dispatch(
            driver, registry=registry()
        )
    env = _worker_env(driver_name, tmp_path)
    workers = [
        start_main(["--queue-work", "--queue", "flow", "--sleep", "0.05", "--stop-when-empty"], env)
        for _ in range(CHILDREN)
    ]
    deadline = time.monotonic() + CHILD_TIMEOUT
    expected_calls = 12 + 4 + 8  # finally each; catch for the 4 failing; then for the 8 others

    def finished() -> bool:
        done = calls.exists() and len(calls.read_text().splitlines()) >= expected_calls
        return done and len(steps.read_text().splitlines()) >= 24 + 18

    while not finished() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # anything queued twice would run now
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.communicate(timeout=30)
    ran = Counter(steps.read_text().splitlines())
    assert set(ran.values()) == {1} and len(ran) == 24 + 18
    called = Counter(calls.read_text().splitlines())
    assert set(called.values()) == {1}
    for n in range(12):
        failing = n % 3 == 0
        wanted = {f"b{n}.finally", f"b{n}.catch" if failing else f"b{n}.then"}
        assert {c for c in called if c.startswith(f"b{n}.")} == wanted
        state = batch_status(batches[n], driver)
        assert state is not None and (state.pending, state.failed) == (0, int(failing))
    order = steps.read_text().splitlines()
    for n in range(6):
        links = [step for step in order if step.startswith(f"c{n}.")]
        assert links == [f"c{n}.0", f"c{n}.1", f"c{n}.2"]


@pytest.mark.slow
def test_a_worker_killed_after_queuing_the_next_link_does_not_queue_it_twice(
    driver_name: str, driver: QueueDriver, tmp_path: Path
) -> None:
    steps = tmp_path / "steps"
    chain_id = chain(
        RetriedStepJob(path=str(steps), value="link0"), StepJob(path=str(steps), value="link1")
    ).dispatch(driver, registry=registry())
    out = tmp_path / "step.out"
    command = [sys.executable, "-m", "tests.workflow_race_child", "--driver", driver_name]
    command += ["--mode", "step", "--out", str(out), "--state-dir", str(tmp_path)]
    crashing = subprocess.Popen([*command, "--retry-after", "1"], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().split() == [f"{chain_id}.0"]  # link 1 queued, link 0 not acked
    crashing.kill()
    crashing.wait(timeout=30)
    env = _worker_env(driver_name, tmp_path) | {"QUEUE_RETRY_AFTER": "1"}
    # A wait of 5 s outlasts link 0's 1 s lease: the workers are still there to redo it.
    args = ["--queue-work", "--queue", "flow", "--sleep", "5", "--stop-when-empty"]
    workers = [start_main(args, env) for _ in range(2)]
    while (
        Counter(steps.read_text().split() if steps.exists() else [])
        != {
            "link0": 1,
            "link1": 1,
        }
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    time.sleep(2.5)  # a second copy of link 1 would be queued and run by now
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.communicate(timeout=30)
    # each link ran once: link 0's redo found link 1 queued (or done) and queued nothing
    assert sorted(steps.read_text().split()) == ["link0", "link1"]
    link0 = driver.job_status(f"{chain_id}.0")
    assert link0 is not None and (link0.state, link0.attempts) == ("done", 2)
