"""One rule for queue names wherever they enter, and delays that always come due."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from queues.drivers.base import QueueDriver
from queues.envelope import MAX_DELAY_SECONDS, validate_queue_name
from queues.job import JobDataError
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main
from tests.test_operator_cli import add_failed, one_error_line

#: Names whose Redis keys are another queue's (or bookkeeping keys).
COLLIDING = ["failed:probe", "probe:reserved", "probe:delayed", "failed", "pops:abc"]


@pytest.fixture
def driver(any_driver: QueueDriver) -> QueueDriver:
    return any_driver


@pytest.mark.parametrize("name", COLLIDING)
def test_the_one_rule_refuses_names_whose_keys_are_another_queues(name: str) -> None:
    for existing in (False, True):
        with pytest.raises(ValueError, match="queue name"):
            validate_queue_name(name, existing=existing)
    assert validate_queue_name("reports/daily", existing=True) == "reports/daily"
    with pytest.raises(ValueError, match="only letters"):
        validate_queue_name("reports/daily")


@pytest.mark.parametrize(
    "command",
    [
        ["--queue-work", "--queue", "failed:probe"],
        ["--queue-work", "--queue", "probe:reserved"],
        ["--queue-work", "--queue", "probe,probe:delayed"],
        ["--queue-status", "--queue", "probe:delayed"],
        ["--queue-failed", "--queue", "failed:probe"],
        ["--queue-retry", "all", "--queue", "failed:probe"],
        ["--queue-migrate", "--from", "redis", "--to", "database", "--queue", "failed:probe"],
        ["--dispatch", "RecordJob", "--data", "{}", "--queue", "probe:delayed"],
    ],
)
def test_every_command_refuses_a_colliding_queue_name_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    driver = make_driver("redis", tmp_path)
    try:
        add_failed(driver, "probe", 1)
        result = run_main(command, main_env("redis", tmp_path))
        assert result.returncode == 2
        assert "queue name" in one_error_line(result)
        assert len(driver.failed_store.all("probe")) == 1, "the failed record is untouched"
    finally:
        driver.close()


def test_the_redis_driver_never_reads_another_queues_keys_as_a_queue(tmp_path: Path) -> None:
    driver = make_driver("redis", tmp_path)
    try:
        add_failed(driver, "probe", 1)
        for name in COLLIDING:
            with pytest.raises(ValueError, match="queue name"):
                driver.pop([name])
            with pytest.raises(ValueError, match="queue name"):
                driver.sizes(name)
        assert len(driver.failed_store.all("probe")) == 1
    finally:
        driver.close()


@pytest.mark.parametrize("delay", [math.inf, -math.inf, math.nan])
def test_non_finite_delays_are_refused_at_dispatch_and_by_every_driver(
    driver: QueueDriver, delay: float
) -> None:
    with pytest.raises(JobDataError, match="finite"):
        dispatch(jobs.RecordJob(path="p", value=1), delay=delay, connection=driver,
                 registry=registry())  # fmt: skip
    with pytest.raises(ValueError, match="finite"):
        driver.later("default", '{"attempts":0,"id":"x","job":"RecordJob","data":{}}', delay)
    assert driver.queues() == []


def _due_in(driver: QueueDriver, queue: str) -> float:
    """Seconds until the one delayed job of `queue` is due, from the driver's own record."""
    if driver.name == "redis":
        [(_, score)] = driver.client.zrange(  # type: ignore[attr-defined]
            f"routemq:queue:{queue}:delayed", 0, 0, withscores=True
        )
        return float(score) - time.time()
    [job] = driver.take_for_transfer(queue, 1)
    assert job.available_at is not None
    return job.available_at - time.time()


def test_absurd_delays_are_capped_at_the_maximum_in_dispatch_and_release(
    driver: QueueDriver,
) -> None:
    queue = f"d-{uuid.uuid4().hex[:8]}"
    dispatch(jobs.RecordJob(path="p", value=1), delay=1e300, queue=queue, connection=driver,
             registry=registry())  # fmt: skip
    assert driver.sizes(queue).delayed == 1
    assert MAX_DELAY_SECONDS - 60 < _due_in(driver, queue) <= MAX_DELAY_SECONDS + 1

    other = f"r-{uuid.uuid4().hex[:8]}"
    dispatch(jobs.RecordJob(path="p", value=2), queue=other, connection=driver,
             registry=registry())  # fmt: skip
    job = driver.pop([other])
    assert job is not None
    with pytest.raises(ValueError, match="finite"):
        driver.release(job, math.inf)
    assert driver.release(job, 1e300)
    assert MAX_DELAY_SECONDS - 60 < _due_in(driver, other) <= MAX_DELAY_SECONDS + 1


def test_dispatch_command_refuses_an_infinite_delay_in_one_line(tmp_path: Path) -> None:
    env = main_env("database", tmp_path)
    data = json.dumps({"path": "p", "value": 1})
    line = one_error_line(
        run_main(["--dispatch", "RecordJob", "--data", data, "--delay", "inf"], env)
    )
    assert "finite" in line
