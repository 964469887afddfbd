"""A job's status (queued, running, done, failed) by its id, on every driver.

Live states come from the queue itself; the final state is written by the ack
or the last fail in the same atomic step (no extra round trip).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from queues.drivers.base import QueueDriver
from queues.envelope import Envelope
from tests.driver_factories import DRIVER_NAMES, make_driver


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueDriver]:
    made = make_driver(str(request.param), tmp_path)
    yield made
    made.close()


def envelope(job_id: str, queue: str = "status") -> str:
    return Envelope(job="Probe", data={"n": 1}, queue=queue, id=job_id).to_json()


def test_a_job_is_queued_then_running_then_done(driver: QueueDriver) -> None:
    assert driver.job_status("job-1") is None
    driver.push("status", envelope("job-1"))
    queued = driver.job_status("job-1")
    assert queued is not None and (queued.state, queued.queue) == ("queued", "status")
    reserved = driver.pop(["status"])
    assert reserved is not None
    running = driver.job_status("job-1")
    assert running is not None and running.state == "running"
    assert (running.attempts, running.job) == (1, "Probe")
    assert running.started_at is not None
    assert driver.ack(reserved)
    done = driver.job_status("job-1")
    assert done is not None and (done.state, done.attempts, done.job) == ("done", 1, "Probe")
    assert done.finished_at is not None and done.finished_at >= running.started_at - 1


def test_a_batch_settle_marks_each_acked_job_done_and_a_stale_one_not(
    driver: QueueDriver,
) -> None:
    for job_id in ("many-1", "many-2", "many-3"):
        driver.push("status", envelope(job_id))
    held = [driver.pop(["status"]) for _ in range(3)]
    assert all(job is not None for job in held)
    first, second, third = (job for job in held if job is not None)
    stale = replace(third, token=third.token + "0")  # a token this reservation never had
    assert driver.ack_many([first, second, stale]) == [True, True, False]
    for job in (first, second):
        status = driver.job_status(job.id)
        assert status is not None and (status.state, status.attempts) == ("done", 1)
    still = driver.job_status(third.id)
    assert still is not None and still.state == "running"


def test_a_failed_job_keeps_its_reason_and_a_retry_makes_it_queued_again(
    driver: QueueDriver,
) -> None:
    driver.push("status", envelope("job-2"))
    reserved = driver.pop(["status"])
    assert reserved is not None
    assert driver.fail(reserved, "ValueError: the sensor is gone\nTraceback ...")
    failed = driver.job_status("job-2")
    assert failed is not None and failed.state == "failed"
    assert failed.reason == "ValueError: the sensor is gone"
    driver.push("status", envelope("job-2"))  # an operator's retry keeps the id
    again = driver.job_status("job-2")
    assert again is not None and again.state == "queued"


def test_a_released_job_is_queued_not_finished(driver: QueueDriver) -> None:
    driver.push("status", envelope("job-3"))
    reserved = driver.pop(["status"])
    assert reserved is not None
    assert driver.release(reserved, 30)
    status = driver.job_status("job-3")
    assert status is not None and status.state == "queued"


def test_a_migration_does_not_mark_the_job_done(driver: QueueDriver) -> None:
    driver.push("status", envelope("job-4"))
    taken = driver.take_for_transfer("status", 10)
    assert [job.id for job in taken] == ["job-4"]
    assert driver.ack(taken[0])
    assert driver.job_status("job-4") is None


def test_dispatch_once_adds_a_step_once_even_after_it_finished(driver: QueueDriver) -> None:
    assert driver.dispatch_once("status", envelope("chain-1.1"))
    assert not driver.dispatch_once("status", envelope("chain-1.1"))  # still queued
    reserved = driver.pop(["status"])
    assert reserved is not None and driver.ack(reserved)
    assert not driver.dispatch_once("status", envelope("chain-1.1"))  # finished: still once
    assert driver.pop(["status"]) is None
    assert driver.dispatch_once("status", envelope("chain-1.2"), delay=0.01)


def test_finished_statuses_and_marks_go_after_the_retention(driver: QueueDriver) -> None:
    driver.status_retention = 60
    driver.push("status", envelope("job-5"))
    reserved = driver.pop(["status"])
    assert reserved is not None and driver.ack(reserved)
    if driver.name == "redis":
        client = driver.client  # type: ignore[attr-defined]
        keys = driver.keys("status")  # type: ignore[attr-defined]
        assert 0 < client.ttl(keys.status("job-5")) <= 60
        return
    driver.dispatch_once("status", envelope("job-6"))
    reserved = driver.pop(["status"])
    assert reserved is not None and driver.ack(reserved)
    engine = driver.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:  # job-6's row and mark are past their time
        for table in ("queue_job_status", "queue_dispatch_marks"):
            connection.execute(
                text(f"UPDATE {table} SET expires_at = :past WHERE job_id = 'job-6'"),
                {"past": datetime(2000, 1, 1)},
            )
    trimmed = driver.trim_workflow_rows()  # type: ignore[attr-defined]
    assert trimmed == 2  # job-6's status row and its mark; job-5's row is kept
    assert driver.job_status("job-6") is None
    status = driver.job_status("job-5")
    assert status is not None and status.state == "done"


def test_a_retention_of_zero_writes_no_status(driver: QueueDriver) -> None:
    driver.status_retention = 0
    driver.push("status", envelope("job-7"))
    reserved = driver.pop(["status"])
    assert reserved is not None and driver.ack(reserved)
    assert driver.job_status("job-7") is None
