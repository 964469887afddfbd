"""Prefetch and batch settle: several jobs reserved per round trip, acked in batches,
each job still under its own fenced lease (queues/worker.py, drivers' pop_many/ack_many)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from queues.envelope import Envelope
from queues.worker import Worker
from tests.conftest import MARIADB_URL
from tests.driver_factories import make_driver
from tests.jobs_fixture.support import main_env, registry, start_main

#: Jobs the racing workers share.
RACE_JOBS = 300
#: Racing worker processes.
RACERS = 3


def payload(job: str, queue: str, max_tries: int = 1, **data: object) -> str:
    return Envelope(job=job, data=dict(data), queue=queue, max_tries=max_tries).to_json()


def fill(driver, queue: str, jobs: list[str]) -> None:
    driver.bulk([(queue, p, 0.0) for p in jobs])


def values(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_pop_many_reserves_distinct_jobs_each_under_its_own_fenced_lease(any_driver):
    driver = any_driver
    queue = f"p-{uuid.uuid4().hex[:8]}"
    fill(driver, queue, [payload("RecordJob", queue, path="-", value=i) for i in range(5)])
    first = driver.pop_many([queue], 3)
    if getattr(driver, "_postgres", False):  # one row per claim statement there
        assert len(first) == 1
        first += driver.pop_many([queue], 3) + driver.pop_many([queue], 3)
    assert len(first) == 3 and len({job.token for job in first}) == 3
    assert [job.attempts for job in first] == [1, 1, 1]
    rest = driver.pop_many([queue], 10)
    if getattr(driver, "_postgres", False):
        rest += driver.pop_many([queue], 10)
    assert len(rest) == 2 and not {job.id for job in rest} & {job.id for job in first}
    assert driver.pop_many([queue], 4) == []
    assert driver.extend_many(first) == [True, True, True]
    assert driver.release(first[1], 0) is True
    # Each verdict is the job's own: the released job's reservation is no longer live.
    assert driver.ack_many([*first, *rest]) == [True, False, True, True, True]
    [again] = driver.pop_many([queue], 8)
    assert again.id == first[1].id and again.attempts == 2
    assert driver.ack_many([again]) == [True]
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)


@pytest.mark.parametrize("kind", ["redis", "sqlite", "mariadb"])
def test_prefetching_workers_racing_run_every_job_once(tmp_path: Path, kind: str) -> None:
    driver = make_driver(kind, tmp_path)
    queue = f"race-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "ran"
    try:
        fill(driver, queue, [payload("RecordJob", queue, path=str(out), value=i)
                             for i in range(RACE_JOBS)])  # fmt: skip
        if kind == "redis":
            env = main_env("redis", tmp_path)
        else:
            url = MARIADB_URL if kind == "mariadb" else f"sqlite:///{tmp_path / 'queue.db'}"
            env = main_env("database", tmp_path, DB_URL=url)
        args = ["--queue-work", "--queue", queue, "--prefetch", "8", "--stop-when-empty",
                "--sleep", "1"]  # fmt: skip
        workers = [start_main(args, env) for _ in range(RACERS)]
        outputs = [w.communicate(timeout=120) for w in workers]
        assert [w.returncode for w in workers] == [0] * RACERS, outputs
        ran = values(out)
        assert sorted(ran, key=int) == [str(i) for i in range(RACE_JOBS)]  # once each, none lost
        sizes = driver.sizes(queue)
        assert (sizes.pending, sizes.reserved, sizes.failed) == (0, 0, 0)
        for _, stderr in outputs:
            assert "not acked" not in stderr and "lease lost" not in stderr, stderr
    finally:
        driver.close()


def test_a_killed_prefetching_worker_gives_its_jobs_back_by_their_leases(tmp_path: Path) -> None:
    driver = make_driver("redis", tmp_path, retry_after=1)
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    out, held = tmp_path / "ran", tmp_path / "held"
    before, after = 40, 20
    # max_tries 2: the victim's reservation counted one attempt of every job it held,
    # started or not (a reservation cannot tell whether its worker got to the job).
    jobs = [payload("RecordJob", queue, 2, path=str(out), value=i) for i in range(before)]
    jobs.append(payload("HoldFirstTime", queue, 2, path=str(held)))
    jobs += [
        payload("RecordJob", queue, 2, path=str(out), value=i)
        for i in range(before, before + after)
    ]
    try:
        fill(driver, queue, jobs)
        env = main_env("redis", tmp_path, QUEUE_RETRY_AFTER="1")
        victim = start_main(["--queue-work", "--queue", queue, "--prefetch", "8"], env)
        try:
            assert wait_until(lambda: Path(str(held) + ".held").exists()), "the hold job never ran"
            # The victim holds the running job and the jobs prefetched behind it.
            assert driver.sizes(queue).reserved >= 2
        finally:
            os.kill(victim.pid, signal.SIGKILL)
            victim.communicate(timeout=30)
        survivor = Worker(driver, [queue], sleep=3, stop_when_empty=True, handle_signals=False,
                          registry=registry(), prefetch=8)  # fmt: skip
        assert survivor.run() == 0
        ran = values(out)
        expected = [str(i) for i in range(before + after)]
        assert sorted(set(ran), key=int) == expected  # none lost
        # Only jobs finished and not yet acked when the victim died may run twice.
        assert len(ran) - len(expected) <= 8
        assert held.read_text(encoding="utf-8").split("\n")[0] == "done 2"
        sizes = driver.sizes(queue)
        assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (0, 0, 0, 0)
    finally:
        driver.close()
