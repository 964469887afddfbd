"""`timeout` is hard, also for code that signals cannot reach.

A job stuck in C code that holds the GIL and never checks for signals ignores
SIGALRM: the watchdog ends its worker process HARD_LIMIT_GRACE seconds past the
timeout; the next worker to reserve the job after its lease ran out learns that
the attempt overran and fails or retries it per its policy, with a JobTimeout
reason. Stuck jobs only ever run in child processes here (a stuck job in the
test process would hang the suite); the in-process tests use jobs signals do
reach.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from queues.drivers.base import QueueDriver
from queues.timeouts import HARD_LIMIT_GRACE, WATCHDOG_EXIT_CODE
from queues.worker import Worker
from tests.driver_factories import driver_for, make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main, start_main

#: Lease of the stuck jobs, seconds: longer than timeout + grace, so no second
#: worker can reserve the job while the stuck one may still run it.
LEASE = 4
#: Seconds a stuck worker may take to be ended (timeout + grace, with slack).
ENDED_WITHIN = jobs.STUCK_TIMEOUT + HARD_LIMIT_GRACE + 8


@pytest.fixture(params=["redis", "database"])
def connection(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def setup_queue(connection: str, tmp_path: Path) -> tuple[QueueDriver, dict[str, str], str]:
    driver = driver_for(connection, tmp_path)
    env = main_env(connection, tmp_path, QUEUE_RETRY_AFTER=str(LEASE))
    return driver, env, f"h-{uuid.uuid4().hex[:10]}"


def run_stuck_worker(env: dict[str, str], queue: str, out: Path) -> str:
    """Start a worker that meets the stuck attempt; it must be ended by the watchdog."""
    worker = start_main(["--queue-work", "--queue", queue, "--sleep", "0.2"], env)
    deadline = time.monotonic() + 15
    while not lines(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    try:
        code = worker.wait(timeout=ENDED_WITHIN)
    except Exception:
        worker.kill()
        worker.wait()
        pytest.fail("the worker was still running its stuck job past its hard time limit")
    assert time.monotonic() - started >= jobs.STUCK_TIMEOUT, "ended before its timeout"
    assert code == WATCHDOG_EXIT_CODE
    stderr = worker.communicate()[1]
    assert "Timeout" in stderr, stderr
    return stderr


def test_a_job_stuck_in_gil_holding_c_code_is_ended_and_then_failed_as_timed_out(
    connection: str, tmp_path: Path
) -> None:
    driver, env, queue = setup_queue(connection, tmp_path)
    out = tmp_path / "stuck"
    try:
        job_id = dispatch(jobs.StuckJob(path=str(out)), queue=queue, connection=driver,
                          registry=registry())  # fmt: skip
        run_stuck_worker(env, queue, out)
        assert driver.sizes(queue).reserved == 1, "its lease still holds it"

        after = run_main(["--queue-work", "--queue", queue, "--sleep", "0.2", "--max-jobs", "1"],
                         env, timeout=LEASE + 20)  # fmt: skip
        assert after.returncode == 0, after.stderr
        assert lines(out) == ["attempt 1"], "a job over max_tries never runs again"
        [failed] = driver.failed_store.all(queue)
        first_line = failed.exception.splitlines()[0]
        assert first_line.startswith(f"JobTimeout: job StuckJob ({job_id}) attempt 1 exceeded")
        assert f"{jobs.STUCK_TIMEOUT:g} s timeout" in first_line
        [hooked] = lines(Path(f"{out}.failed"))
        assert hooked.startswith("JobTimeout: "), "failed() hears the real reason"
    finally:
        driver.close()


def test_a_stuck_attempt_counts_as_failed_and_the_job_is_retried_per_its_policy(
    tmp_path: Path,
) -> None:
    driver, env, queue = setup_queue("redis", tmp_path)
    out = tmp_path / "once"
    try:
        dispatch(jobs.StuckOnceJob(path=str(out)), queue=queue, connection=driver,
                 registry=registry())  # fmt: skip
        run_stuck_worker(env, queue, out)
        after = run_main(["--queue-work", "--queue", queue, "--sleep", "0.2", "--max-jobs", "2"],
                         env, timeout=LEASE + 20)  # fmt: skip
        assert after.returncode == 0, after.stderr
        assert lines(out) == ["attempt 1", "attempt 2", "done"]
        assert "attempt 1/2 failed" in after.stderr and "JobTimeout" in after.stderr
        assert driver.failed_store.all(queue) == []
        assert driver.sizes(queue).reserved == 0
    finally:
        driver.close()


def test_the_heartbeat_stops_renewing_a_lease_past_the_hard_limit(tmp_path: Path) -> None:
    """A job that swallows its timeout alarms keeps running, but not keeps its lease."""
    driver = make_driver("redis", tmp_path, retry_after=1)
    out = tmp_path / "swallow"
    queue = f"s-{uuid.uuid4().hex[:10]}"
    try:
        dispatch(jobs.SwallowingJob(path=str(out), seconds=0.2 + HARD_LIMIT_GRACE + 3),
                 queue=queue, connection=driver, registry=registry())  # fmt: skip
        taken: list[object] = []

        def compete() -> None:
            time.sleep(0.2 + HARD_LIMIT_GRACE + 1.5)  # past the hard limit and one lease
            taken.append(driver.pop([queue]))

        thief = threading.Thread(target=compete)
        thief.start()
        worker = Worker(driver, [queue], sleep=0.05, max_jobs=1, max_time=20,
                        handle_signals=False, registry=registry())  # fmt: skip
        assert worker.run() == 0
        thief.join()
        assert lines(out) == ["start", "returned"]
        [other] = taken
        assert other is not None, "the lease was renewed past the job's hard time limit"
    finally:
        driver.close()


def test_a_catastrophic_regex_is_ended_by_its_timeout(tmp_path: Path) -> None:
    """CPython's `re` checks for signals while it backtracks: SIGALRM ends it."""
    driver = make_driver("sqlite", tmp_path)
    out = tmp_path / "regex"
    queue = f"r-{uuid.uuid4().hex[:10]}"
    try:
        dispatch(jobs.CatastrophicRegexJob(path=str(out)), queue=queue, connection=driver,
                 registry=registry())  # fmt: skip
        started = time.monotonic()
        worker = Worker(driver, [queue], sleep=0.05, max_jobs=1, max_time=20,
                        handle_signals=False, registry=registry())  # fmt: skip
        assert worker.run() == 0
        assert time.monotonic() - started < 5
        [failed] = driver.failed_store.all(queue)
        assert failed.exception.startswith("JobTimeout: job CatastrophicRegexJob")
    finally:
        driver.close()
