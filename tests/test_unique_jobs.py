"""Unique jobs: a second dispatch with the same unique id while the first is queued or
running queues nothing and returns the first id; the lock goes when the job finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues import dispatch, dispatch_many
from queues.drivers.base import QueueDriver
from queues.envelope import Envelope
from queues.unique import ExistingJobId
from queues.worker import Worker
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.jobs_fixture import jobs, workflow_jobs
from tests.jobs_fixture.support import registry


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path):
    made = make_driver(request.param, tmp_path)
    _clear_locks(made)
    yield made
    made.close()


def _clear_locks(driver: QueueDriver) -> None:
    """Empty the coordination state of the test backend (Redis test db is flushed already)."""
    engine = getattr(driver, "engine", None)
    if engine is not None:
        from sqlalchemy import delete

        from backends.sql_tables import QueueLock

        with engine.begin() as connection:
            connection.execute(delete(QueueLock))


def _work(driver: QueueDriver) -> None:
    Worker(driver, ["default"], sleep=0.05, handle_signals=False, stop_when_empty=True,
           registry=registry()).run()  # fmt: skip


def _pending(driver: QueueDriver) -> list[Envelope]:
    found = []
    while (job := driver.pop(["default"])) is not None:
        found.append(Envelope.from_json(job.payload))
        driver.ack(job)
    return found


def test_a_second_dispatch_while_queued_is_dropped_and_returns_the_first_id(
    driver: QueueDriver, tmp_path: Path
) -> None:
    reg = registry()
    out = tmp_path / "out"
    first = dispatch(workflow_jobs.UniqueRecord(path=str(out), value=1, device_id="d1"),
                     connection=driver, registry=reg)  # fmt: skip
    second = dispatch(workflow_jobs.UniqueRecord(path=str(out), value=2, device_id="d1"),
                      connection=driver, registry=reg)  # fmt: skip
    other = dispatch(workflow_jobs.UniqueRecord(path=str(out), value=3, device_id="d2"),
                     connection=driver, registry=reg)  # fmt: skip
    assert second == first and isinstance(second, ExistingJobId)
    assert not isinstance(first, ExistingJobId) and not isinstance(other, ExistingJobId)
    assert driver.sizes("default").pending == 2
    _work(driver)
    assert sorted(out.read_text().split()) == ["1", "3"]
    # The job finished: its lock is gone, so the same unique id queues again.
    again = dispatch(workflow_jobs.UniqueRecord(path=str(out), value=4, device_id="d1"),
                     connection=driver, registry=reg)  # fmt: skip
    assert not isinstance(again, ExistingJobId) and again != first
    assert [e.data["value"] for e in _pending(driver)] == [4]


def test_the_lock_is_released_when_the_job_fails_for_good_not_between_retries(
    driver: QueueDriver, tmp_path: Path
) -> None:
    reg = registry()
    out = tmp_path / "out"
    first = dispatch(workflow_jobs.UniqueFailing(path=str(out)), connection=driver, registry=reg)
    reserved = driver.pop(["default"])
    assert reserved is not None
    Worker(driver, ["default"], handle_signals=False, registry=reg).process(reserved)
    # Released for its retry: still unique.
    assert dispatch(workflow_jobs.UniqueFailing(path=str(out)), connection=driver,
                    registry=reg) == first  # fmt: skip
    _work(driver)
    assert out.read_text().split() == ["attempt", "attempt"]
    assert driver.failed_store.find(first) is not None
    assert dispatch(workflow_jobs.UniqueFailing(path=str(out)), connection=driver,
                    registry=reg) != first  # fmt: skip


def test_dispatch_unique_for_makes_any_job_unique_per_class(driver: QueueDriver) -> None:
    reg = registry()
    first = dispatch(jobs.RecordJob(path="-", value=1), connection=driver, registry=reg,
                     unique_for=30)  # fmt: skip
    assert dispatch(jobs.RecordJob(path="-", value=2), connection=driver, registry=reg,
                    unique_for=30) == first  # fmt: skip
    # Without unique_for the class is not unique.
    assert dispatch(jobs.RecordJob(path="-", value=3), connection=driver, registry=reg) != first
    assert [e.data["value"] for e in _pending(driver)] == [1, 3]


def test_the_lock_expires_after_unique_for(driver: QueueDriver) -> None:
    reg = registry()
    first = dispatch(jobs.RecordJob(path="-", value=1), connection=driver, registry=reg,
                     unique_for=0.3)  # fmt: skip
    import time

    time.sleep(0.5)
    assert dispatch(jobs.RecordJob(path="-", value=2), connection=driver, registry=reg,
                    unique_for=0.3) != first  # fmt: skip


def test_dispatch_many_drops_the_unique_jobs_already_queued(driver: QueueDriver) -> None:
    reg = registry()
    first = dispatch(workflow_jobs.UniqueRecord(path="-", value=1, device_id="d1"),
                     connection=driver, registry=reg)  # fmt: skip
    ids = dispatch_many(
        [
            workflow_jobs.UniqueRecord(path="-", value=2, device_id="d1"),
            workflow_jobs.UniqueRecord(path="-", value=3, device_id="d2"),
            workflow_jobs.UniqueRecord(path="-", value=4, device_id="d2"),
        ],
        connection=driver,
        registry=reg,
    )
    assert ids[0] == first and ids[2] == ids[1] != first
    assert [e.data["value"] for e in _pending(driver)] == [1, 3]


def test_a_bad_unique_for_names_the_job(driver: QueueDriver) -> None:
    from queues.job import JobDataError

    with pytest.raises(JobDataError, match="RecordJob unique_for must be seconds > 0"):
        dispatch(jobs.RecordJob(path="-", value=1), connection=driver, registry=registry(),
                 unique_for=-1)  # fmt: skip


def test_processes_racing_to_dispatch_one_unique_job_queue_it_once(
    driver: QueueDriver, tmp_path: Path
) -> None:
    import time

    from tests.coordination_race_child import spawn

    start_at = time.time() + 2.0
    outs = [tmp_path / f"out{n}" for n in range(6)]
    children = [
        spawn(_kind(driver), "dispatch", out, tmp_path, key="dev-1", count=5, start_at=start_at)
        for out in outs
    ]
    for child in children:
        assert child.wait(timeout=60) == 0
    lines = [line.split() for out in outs for line in out.read_text().splitlines()]
    assert len(lines) == 30
    new = [job_id for job_id, kind in lines if kind == "new"]
    assert len(new) == 1
    assert {job_id for job_id, _ in lines} == set(new)  # every dispatch returned the first id
    assert [e.id for e in _pending(driver)] == new


def _kind(driver: QueueDriver) -> str:
    """The name tests/driver_race_child.py connects a child to the same state by."""
    if driver.name == "redis":
        return "redis-cluster" if driver.cluster else "redis"  # type: ignore[attr-defined]
    dialect = driver.engine.dialect.name  # type: ignore[attr-defined]
    kinds = {"sqlite": "sqlite", "mysql": "mariadb", "mariadb": "mariadb", "postgresql": "postgres"}
    if dialect not in kinds:
        raise NotImplementedError(
            f"no race child for SQL dialect {dialect!r}: teach "
            "tests/driver_race_child.connect_driver and this mapping about it"
        )
    return kinds[dialect]


def test_a_claim_in_a_handler_is_short_until_its_job_is_stored(redis_client: object) -> None:
    """A message an outage leaves unacknowledged must not find its own unique lock
    (or dedupe key) held for long by a job that was never stored."""
    from app.middleware.dedupe import Dedupe
    from core.message import Message
    from queues.coordination import RedisCoordinator
    from queues.drivers.redis import RedisDriver, RedisFailedStore
    from queues.outbox import DispatchOutbox
    from queues.unique import IN_FLIGHT_SECONDS

    client = redis_client
    driver = RedisDriver(client, RedisFailedStore(client))  # type: ignore[arg-type]
    outbox = DispatchOutbox()
    dedupe = Dedupe("id", window=900, coordinator=RedisCoordinator(client))

    def handler(message: Message) -> None:
        job = workflow_jobs.UniqueRecord(path="-", value=1, device_id="d1")
        dispatch(job, connection=driver, registry=registry(), unique_for=600)

    outbox.begin()
    dedupe.handle(Message("dd/d1", b'{"id": "r-1"}', 1, False), handler)
    records = outbox.end()
    assert records is not None
    lock, seen = "routemq:coord:unique:UniqueRecord:d1", "routemq:coord:dedupe:dd/d1:r-1"
    for key in (lock, seen):
        assert 0 < client.pttl(key) <= IN_FLIGHT_SECONDS * 1000  # type: ignore[attr-defined]
    outbox.flush([records])  # the intake stored the batch: the claims become final
    assert driver.sizes("default").pending == 1
    assert client.pttl(lock) > 500_000  # type: ignore[attr-defined]
    assert client.pttl(seen) > 800_000  # type: ignore[attr-defined]
