"""Chains and batches on every driver: order, failure stops a chain, callbacks once,
and a step redone after a crash queues nothing twice.

The races of several worker processes are in tests/test_workflow_races.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues import batch, chain
from queues.drivers.base import QueueDriver
from queues.worker import Worker
from queues.workflows import batch_status, before_settle
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.jobs_fixture.jobs import StepJob
from tests.jobs_fixture.support import registry


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueDriver]:
    made = make_driver(str(request.param), tmp_path, retry_after=1)
    yield made
    made.close()


def drain(driver: QueueDriver) -> None:
    worker = Worker(
        driver, ["flow"], sleep=0.05, max_time=30, handle_signals=False, registry=registry()
    )
    worker.stop_when_empty = True
    worker.run()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_chain_runs_its_links_in_order(driver: QueueDriver, tmp_path: Path) -> None:
    out = str(tmp_path / "steps")
    chain_id = chain(*(StepJob(path=out, value=i) for i in range(4))).dispatch(
        driver, registry=registry()
    )
    for _ in range(4):  # one link becomes available per run
        drain(driver)
    assert lines(tmp_path / "steps") == ["0", "1", "2", "3"]
    statuses = [driver.job_status(f"{chain_id}.{i}") for i in range(4)]
    assert [s.state if s else None for s in statuses] == ["done"] * 4


def test_a_failed_link_stops_the_chain_and_says_where(driver: QueueDriver, tmp_path: Path) -> None:
    out = str(tmp_path / "steps")
    jobs = [StepJob(path=out, value=0), StepJob(path=out, value=1, fail=True)]
    chain_id = chain(*jobs, StepJob(path=out, value=2)).dispatch(driver, registry=registry())
    for _ in range(3):
        drain(driver)
    assert lines(tmp_path / "steps") == ["0", "1"]
    stopped = driver.job_status(f"{chain_id}.1")
    assert stopped is not None and stopped.state == "failed"
    assert stopped.reason is not None and "step 1 broke" in stopped.reason
    assert driver.job_status(f"{chain_id}.2") is None  # never queued
    [record] = driver.failed_store.all()
    assert f'"chain":"{chain_id}","index":1' in record.payload  # where it stopped


def test_a_redone_link_does_not_queue_the_next_one_twice(
    driver: QueueDriver, tmp_path: Path
) -> None:
    out = str(tmp_path / "steps")
    chain_id = chain(StepJob(path=out, value=0), StepJob(path=out, value=1)).dispatch(
        driver, registry=registry()
    )
    first = driver.pop(["flow"])
    assert first is not None and first.id == f"{chain_id}.0"
    before_settle(driver, first, "ack")  # link 1 queued... then the worker "crashes"
    second = driver.pop(["flow"])
    assert second is not None and second.id == f"{chain_id}.1"
    assert driver.ack(second)  # link 1 even finished before the redo
    time.sleep(2.1)  # link 0's lease (1 s) expires; SQL compares whole seconds
    redo = driver.pop(["flow"])
    assert redo is not None and redo.id == f"{chain_id}.0" and redo.attempts == 2
    before_settle(driver, redo, "ack")
    assert driver.ack(redo)
    assert driver.pop(["flow"]) is None  # link 1 was not queued again


def test_a_batch_counts_its_jobs_and_runs_each_callback_once(
    driver: QueueDriver, tmp_path: Path
) -> None:
    out, calls = str(tmp_path / "steps"), str(tmp_path / "callbacks")
    jobs = [StepJob(path=out, value=i, fail=(i == 2)) for i in range(5)]
    batch_id = batch(
        jobs,
        then=StepJob(path=calls, value="then"),
        catch=StepJob(path=calls, value="catch"),
        finally_=StepJob(path=calls, value="finally"),
        name="nightly",
    ).dispatch(driver, registry=registry())
    started = batch_status(batch_id, driver)
    assert started is not None and (started.total, started.pending, started.name) == (
        5,
        5,
        "nightly",
    )
    drain(driver)
    drain(driver)  # the callbacks queued by the last jobs
    assert sorted(lines(tmp_path / "steps")) == ["0", "1", "2", "3", "4"]
    assert sorted(lines(tmp_path / "callbacks")) == ["catch", "finally"]  # no "then": one failed
    state = batch_status(batch_id, driver)
    assert state is not None
    assert (state.pending, state.done, state.failed) == (0, 4, 1)
    assert state.finished_at is not None


def test_a_batch_without_failures_runs_then_and_finally(
    driver: QueueDriver, tmp_path: Path
) -> None:
    calls = tmp_path / "callbacks"
    batch_id = batch(
        [StepJob(path=str(tmp_path / "steps"), value=i) for i in range(3)],
        then=StepJob(path=str(calls), value="then"),
        finally_=StepJob(path=str(calls), value="finally"),
    ).dispatch(driver, registry=registry())
    drain(driver)
    drain(driver)
    assert sorted(lines(calls)) == ["finally", "then"]
    assert driver.job_status(f"{batch_id}.then") is not None


def test_chains_and_batches_refuse_a_fake_queue(tmp_path: Path) -> None:
    from queues.job import JobDataError
    from testing import fake_queue

    with fake_queue(), pytest.raises(JobDataError, match="need a real queue connection"):
        chain(StepJob(path=str(tmp_path / "x"), value=1)).dispatch(registry=registry())
