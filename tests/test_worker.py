"""The worker on real drivers: retries, failures, time limits, heartbeats, shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from queues.envelope import Envelope
from queues.worker import Worker
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, start_main

DRIVERS = ("redis", "sqlite")
#: Seconds the clocks of test and driver may disagree when comparing times.
CLOCK_SLACK = 0.03


@pytest.fixture(params=DRIVERS)
def driver(request, tmp_path):
    made = make_driver(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def queue() -> str:
    """A queue name of this test alone: other suites share the test Redis db."""
    return f"w-{uuid.uuid4().hex[:12]}"


def make_worker(driver, queue, **options) -> Worker:
    options.setdefault("sleep", 0.05)
    options.setdefault("max_time", 20)
    options.setdefault("handle_signals", False)
    return Worker(driver, [queue], registry=registry(), **options)


def put(driver, job, queue) -> str:
    return dispatch(job, connection=driver, queue=queue, registry=registry())


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def only_failed(driver, queue):
    failed = driver.failed_store.all(queue)
    assert len(failed) == 1, [f.exception.splitlines()[0] for f in failed]
    return failed[0]


def assert_empty(driver, queue):
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)


def test_a_job_runs_once_and_is_acked(driver, queue, tmp_path, caplog):
    out = tmp_path / "out"
    job_id = put(driver, jobs.RecordJob(path=str(out), value=42), queue)
    with caplog.at_level(logging.DEBUG, logger="queues.worker"):
        assert make_worker(driver, queue, max_jobs=1).run() == 0
    assert lines(out) == ["42"]
    assert_empty(driver, queue)
    assert driver.failed_store.all(queue) == []
    assert any(job_id in r.message and "finished in" in r.message for r in caplog.records)


@pytest.mark.parametrize("driver", ["redis", "sqlite", "mariadb"], indirect=True)
def test_retries_follow_the_backoff_then_fail_with_traceback_and_call_the_hook(
    driver, queue, tmp_path
):
    out = tmp_path / "attempts"
    put(driver, jobs.FailingJob(path=str(out), value=7), queue)
    make_worker(driver, queue, max_jobs=1).run()
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.delayed) == (0, 1)  # released with its 0.2 s backoff

    make_worker(driver, queue, max_jobs=2).run()
    times = [float(line) for line in lines(out)]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 - CLOCK_SLACK
    assert times[2] - times[1] >= 0.5 - CLOCK_SLACK
    assert_empty(driver, queue)
    failed = only_failed(driver, queue)
    assert failed.exception.splitlines()[0] == "ValueError: boom 7"
    assert "Traceback (most recent call last)" in failed.exception
    assert "jobs_fixture/jobs.py" in failed.exception
    assert Envelope.from_json(failed.payload).job == "FailingJob"
    assert lines(Path(f"{out}.failed")) == ["ValueError: boom 7"]


def test_a_flaky_job_succeeds_on_a_retry(driver, queue, tmp_path):
    out = tmp_path / "flaky"
    put(driver, jobs.FlakyJob(path=str(out), succeed_on=2), queue)
    make_worker(driver, queue, max_jobs=2).run()
    assert lines(out) == ["attempt", "attempt"]
    assert lines(Path(f"{out}.done")) == ["ok"]
    assert_empty(driver, queue)
    assert driver.failed_store.all(queue) == []


def test_unknown_job_is_failed_with_the_reason_and_nothing_is_imported(driver, queue, tmp_path):
    name = "tests.jobs_fixture.outside.evil.Evil"
    driver.push(queue, Envelope(job=name, data={}, queue=queue).to_json())
    make_worker(driver, queue, max_jobs=1).run()
    failed = only_failed(driver, queue)
    assert failed.exception.startswith(
        f"UnknownJob: unknown job {name!r}: not registered in tests.jobs_fixture"
    )
    assert "tests.jobs_fixture.outside.evil" not in sys.modules
    assert_empty(driver, queue)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"attempts":0,"id":"bad-1","job":"RecordJob"}', "payload has no 'data' field"),
        ('{"attempts":0,"id":"bad-2","job":"RecordJob","data":[}', "payload is not valid JSON"),
        ('{"attempts":0,"id":"bad-3","job":"RecordJob","data":[1]}', "'data' is not an object"),
    ],
)
def test_malformed_payload_is_failed_with_the_reason(driver, queue, payload, reason):
    driver.push(queue, payload)
    make_worker(driver, queue, max_jobs=1).run()
    failed = only_failed(driver, queue)
    assert failed.exception.startswith("EnvelopeError: ")
    assert reason in failed.exception
    assert_empty(driver, queue)


def test_a_failing_failed_hook_does_not_stop_the_worker(driver, queue, tmp_path):
    out = tmp_path / "after"
    put(driver, jobs.BadHookJob(), queue)
    put(driver, jobs.RecordJob(path=str(out), value="next"), queue)
    make_worker(driver, queue, max_jobs=2).run()
    assert lines(out) == ["next"]
    assert only_failed(driver, queue).exception.startswith("KeyError: 'first'")


def test_hard_timeout_stops_a_busy_loop_and_counts_an_attempt(driver, queue, tmp_path):
    out = tmp_path / "busy"
    put(driver, jobs.BusyJob(path=str(out)), queue)
    make_worker(driver, queue, max_jobs=2).run()
    assert lines(out) == ["start", "start"]  # two attempts (max_tries = 2)
    failed = only_failed(driver, queue)
    assert failed.exception.startswith("JobTimeout: job BusyJob (")
    assert "exceeded 0.3 s" in failed.exception.splitlines()[0]
    assert_empty(driver, queue)


def test_hard_timeout_stops_time_sleep(driver, queue, tmp_path):
    out = tmp_path / "sleep"
    put(driver, jobs.SleepJob(path=str(out), seconds=30), queue)
    make_worker(driver, queue, max_jobs=1).run()
    assert lines(out) == ["start"]
    assert only_failed(driver, queue).exception.startswith("JobTimeout: ")


def test_async_handle_runs_and_async_timeout_is_enforced(driver, queue, tmp_path):
    out = tmp_path / "async"
    put(driver, jobs.AsyncJob(path=str(out), seconds=0.01, value=1), queue)
    put(driver, jobs.AsyncJob(path=str(out), seconds=30, value=2), queue)
    put(driver, jobs.AsyncJob(path=str(out), seconds=0.01, value=3), queue)
    make_worker(driver, queue, max_jobs=3).run()
    assert lines(out) == ["async 1", "async 3"]  # one persistent loop survives the timeout
    assert only_failed(driver, queue).exception.startswith("JobTimeout: job AsyncJob")


@pytest.mark.parametrize("driver", DRIVERS, indirect=True)
def test_job_of_a_dead_worker_past_max_tries_fails_without_running(driver, queue, tmp_path):
    out = tmp_path / "never"
    driver.retry_after = 1
    job_id = put(driver, jobs.RecordJob(path=str(out), value=1), queue)
    assert driver.pop([queue]) is not None  # a worker that then dies
    time.sleep(1.2)  # its lease expires
    make_worker(driver, queue, max_jobs=1).run()
    assert lines(out) == []
    failed = only_failed(driver, queue)
    assert failed.exception.startswith(
        f"MaxAttemptsExceeded: job RecordJob ({job_id}) was attempted 2 times"
    )


def test_retry_until_passed_fails_without_running(driver, queue, tmp_path):
    out = tmp_path / "late"
    put(driver, jobs.ShortDeadlineJob(path=str(out)), queue)
    time.sleep(0.35)
    make_worker(driver, queue, max_jobs=1).run()
    assert lines(out) == []
    assert only_failed(driver, queue).exception.startswith("RetryUntilExpired: ")


def test_heartbeat_keeps_a_long_job_leased(driver, queue, tmp_path):
    out = tmp_path / "long"
    driver.retry_after = 1
    put(driver, jobs.SlowJob(path=str(out), seconds=2.5), queue)
    stolen: list[object] = []

    def compete() -> None:
        for _ in range(2):
            time.sleep(1.1)
            stolen.append(driver.pop([queue]))

    thief = threading.Thread(target=compete)
    thief.start()
    make_worker(driver, queue, max_jobs=1).run()
    thief.join()
    assert stolen == [None, None]  # without heartbeats the lease ends after 1 s
    assert lines(out) == ["start", "finished"]
    assert_empty(driver, queue)


def test_worker_exits_after_max_jobs_and_on_the_memory_limit(driver, queue, tmp_path):
    out = tmp_path / "count"
    for i in range(3):
        put(driver, jobs.RecordJob(path=str(out), value=i), queue)
    assert make_worker(driver, queue, max_jobs=2).run() == 0
    assert lines(out) == ["0", "1"]
    assert make_worker(driver, queue, memory_mb=1).run() == 0  # any process is above 1 MB
    assert lines(out) == ["0", "1"]
    assert driver.sizes(queue).pending == 1


def test_start_warns_when_a_timeout_is_not_shorter_than_the_lease(driver, queue, caplog):
    driver.retry_after = 1
    with caplog.at_level(logging.WARNING, logger="queues.worker"):
        make_worker(driver, queue, max_time=0.01).run()
    assert not [r for r in caplog.records if "not shorter than" in r.message]  # all < 1 s
    with caplog.at_level(logging.WARNING, logger="queues.worker"):
        make_worker(driver, queue, max_time=0.01, default_timeout=5).run()
    warned = [r.message for r in caplog.records if "not shorter than" in r.message]
    assert any(m.startswith("job RecordJob: timeout 5 s") for m in warned)
    assert not any(m.startswith("job BusyJob") for m in warned)  # its own 0.3 s applies


def test_grace_period_over_releases_the_job_and_exits_zero(driver, queue, tmp_path):
    out = tmp_path / "graceful"
    put(driver, jobs.SlowJob(path=str(out), seconds=30), queue)

    def terminate_when_started() -> None:
        while lines(out) != ["start"]:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_started, daemon=True).start()
    worker = make_worker(driver, queue, grace=0.3, handle_signals=True)
    assert worker.run() == 0
    assert lines(out) == ["start"]
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.reserved) == (1, 0)  # released at once for another worker
    again = driver.pop([queue])
    assert again is not None and again.attempts == 1  # the interrupted attempt was given back


@pytest.mark.parametrize("connection", ["redis", "database"])
def test_sigterm_mid_job_lets_it_finish_and_exits_zero(connection, queue, tmp_path):
    driver = make_driver("redis" if connection == "redis" else "sqlite", tmp_path)
    out = tmp_path / "term"
    put(driver, jobs.SlowJob(path=str(out), seconds=1.0), queue)
    worker = start_main(
        ["--queue-work", "--sleep", "0.2", "--queue", queue], main_env(connection, tmp_path)
    )
    try:
        deadline = time.monotonic() + 15
        while lines(out) != ["start"] and time.monotonic() < deadline:
            time.sleep(0.02)
        if lines(out) != ["start"]:
            worker.kill()
            pytest.fail(f"the worker never started the job: {worker.communicate()[1]}")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert lines(out) == ["start", "finished"]
    assert_empty(driver, queue)
    assert "stopped after a signal" in worker.communicate()[1]
    driver.close()


def test_second_signal_exits_at_once_and_the_lease_keeps_the_job(queue, tmp_path):
    driver = make_driver("sqlite", tmp_path)
    out = tmp_path / "twice"
    put(driver, jobs.SlowJob(path=str(out), seconds=30), queue)
    worker = start_main(
        ["--queue-work", "--sleep", "0.2", "--queue", queue], main_env("database", tmp_path)
    )
    try:
        deadline = time.monotonic() + 15
        while lines(out) != ["start"] and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=5) == 1
    finally:
        if worker.poll() is None:
            worker.kill()
    assert lines(out) == ["start"]
    assert driver.sizes(queue).reserved == 1  # comes back when the lease expires
    driver.close()


def test_a_dead_backend_at_ack_time_does_not_kill_the_worker(tmp_path, caplog):
    from backends.redis_client import build_redis
    from config.settings import Settings
    from core.broker import free_port
    from queues.drivers.redis import RedisDriver, RedisFailedStore

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = build_redis(Settings(redis_host="127.0.0.1", redis_port=port))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except Exception:
                time.sleep(0.05)
        driver = RedisDriver(client, RedisFailedStore(client), retry_after=90)
        put(driver, jobs.KillServerJob(pid=server.pid), "default")
        caplog.set_level(logging.ERROR)
        worker = make_worker(driver, "default", max_jobs=1, max_time=30)
        assert worker.run() == 0  # the ack failed, the worker carried on
        assert "cannot ack it" in caplog.text
    finally:
        server.kill()
        server.wait()
