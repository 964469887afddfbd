"""`--concurrency N`: runner threads in one worker process, each job under its own lease,
timeout and fence (queues/worker.py, queues/timeouts.py ThreadDeadline/SharedWatchdog)."""

from __future__ import annotations

import itertools
import subprocess
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from queues.timeouts import HARD_LIMIT_GRACE, WATCHDOG_EXIT_CODE
from queues.worker import Worker
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs, prefetch_jobs
from tests.jobs_fixture.support import main_env, registry, start_main

#: Jobs and their sleep in the overlap test.
OVERLAP_JOBS, OVERLAP_SECONDS = 16, 0.2


def put(driver, queue: str, job: str, count: int, **data: object) -> None:
    """`count` jobs of class `job` (its own timeout and max_tries), value 0..count-1."""
    cls = getattr(jobs, job, None) or getattr(prefetch_jobs, job)
    for i in range(count):
        dispatch(cls(**data, value=i), queue=queue, connection=driver, registry=registry())


def test_runner_threads_run_sleeping_jobs_at_the_same_time(tmp_path: Path) -> None:
    driver = make_driver("redis", tmp_path)
    queue = f"c-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "overlap"
    try:
        put(driver, queue, "OverlapJob", OVERLAP_JOBS, path=str(out), seconds=OVERLAP_SECONDS)
        worker = Worker(driver, [queue], sleep=0.5, stop_when_empty=True, handle_signals=False,
                        registry=registry(), concurrency=8)  # fmt: skip
        assert worker.run() == 0
        rows = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
        assert sorted(int(r[0]) for r in rows) == list(range(OVERLAP_JOBS))  # each once
        spans = sorted((float(r[1]), float(r[2])) for r in rows)
        overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
        assert overlapping >= 1, "no two jobs ever ran at the same time"
        assert len({r[3] for r in rows}) >= 2  # more than one runner thread
        sizes = driver.sizes(queue)
        assert (sizes.pending, sizes.reserved, sizes.failed) == (0, 0, 0)
    finally:
        driver.close()


@pytest.mark.parametrize("connection", ["redis", "sqlite"])
def test_a_thread_job_past_its_timeout_is_stopped_and_failed(tmp_path: Path, connection) -> None:
    """A busy loop in a runner thread is ended by its timeout (no SIGALRM in threads)."""
    driver = make_driver(connection, tmp_path)
    queue = f"t-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "busy"
    try:
        put(driver, queue, "BusyJob", 1, path=str(out))
        put(driver, queue, "RecordJob", 3, path=str(tmp_path / "quick"))
        worker = Worker(driver, [queue], sleep=0.5, stop_when_empty=True, handle_signals=False,
                        max_time=60, registry=registry(), concurrency=2)  # fmt: skip
        assert worker.run() == 0
        assert out.read_text(encoding="utf-8").split() == ["start", "start"]  # max_tries 2
        [failed] = driver.failed_store.all(queue)
        assert failed.exception.startswith("JobTimeout: job BusyJob")
        assert sorted((tmp_path / "quick").read_text(encoding="utf-8").split()) == ["0", "1", "2"]
    finally:
        driver.close()


def test_async_jobs_run_on_runner_threads(tmp_path: Path) -> None:
    driver = make_driver("redis", tmp_path)
    queue = f"a-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "async"
    try:
        put(driver, queue, "AsyncJob", 6, path=str(out), seconds=0.05)
        worker = Worker(driver, [queue], sleep=0.5, stop_when_empty=True, handle_signals=False,
                        registry=registry(), concurrency=3)  # fmt: skip
        assert worker.run() == 0
        assert sorted(out.read_text(encoding="utf-8").splitlines()) == [
            f"async {i}" for i in range(6)
        ]
    finally:
        driver.close()


def test_max_jobs_is_shared_by_the_runner_threads(tmp_path: Path) -> None:
    driver = make_driver("sqlite", tmp_path)
    queue = f"m-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "count"
    try:
        put(driver, queue, "RecordJob", 10, path=str(out))
        worker = Worker(driver, [queue], sleep=0.2, max_jobs=3, handle_signals=False,
                        registry=registry(), concurrency=4)  # fmt: skip
        assert worker.run() == 0
        assert len(out.read_text(encoding="utf-8").split()) == 3
        sizes = driver.sizes(queue)
        assert (sizes.pending, sizes.reserved) == (7, 0)
    finally:
        driver.close()


def test_concurrent_worker_processes_racing_run_every_job_once(tmp_path: Path) -> None:
    driver = make_driver("redis", tmp_path)
    queue = f"r-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "ran"
    try:
        put(driver, queue, "RecordJob", 200, path=str(out))
        env = main_env("redis", tmp_path)
        args = ["--queue-work", "--queue", queue, "--concurrency", "4", "--prefetch", "4",
                "--stop-when-empty", "--sleep", "1"]  # fmt: skip
        workers = [start_main(args, env) for _ in range(2)]
        outputs = [w.communicate(timeout=120) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        assert sorted(int(v) for v in out.read_text(encoding="utf-8").split()) == list(range(200))
        sizes = driver.sizes(queue)
        assert (sizes.pending, sizes.reserved, sizes.failed) == (0, 0, 0)
    finally:
        driver.close()


def test_a_job_stuck_in_c_on_a_runner_thread_ends_the_process_at_its_hard_limit(
    tmp_path: Path,
) -> None:
    """The process watchdog still works per job with threads: the earliest hard limit of
    the running jobs ends the process, and the stuck job's lease then runs out."""
    driver = make_driver("redis", tmp_path)
    queue = f"s-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "stuck"
    try:
        dispatch(jobs.StuckJob(path=str(out)), queue=queue, connection=driver,
                 registry=registry())  # fmt: skip
        env = main_env("redis", tmp_path, QUEUE_RETRY_AFTER="4")
        worker = start_main(
            ["--queue-work", "--queue", queue, "--sleep", "0.2", "--concurrency", "2"], env
        )
        try:
            code = worker.wait(timeout=jobs.STUCK_TIMEOUT + HARD_LIMIT_GRACE + 20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            pytest.fail("the worker was still running its stuck job past its hard time limit")
        stderr = worker.communicate()[1]
        assert code == WATCHDOG_EXIT_CODE, stderr
        assert "Timeout" in stderr, stderr
        assert out.read_text(encoding="utf-8").split("\n")[0] == "attempt 1"
        assert driver.sizes(queue).reserved == 1, "its lease still holds it"
    finally:
        driver.close()
