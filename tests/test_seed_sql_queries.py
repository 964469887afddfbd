"""The spec's monitoring and cleanup SQL, run verbatim on MariaDB, tells the truth.

State is made through the driver (push, later, pop, fail); only the passage of
time is simulated, by moving a timestamp back with one UPDATE, the way an hour
or a month would have moved it. Each query below is copied character for
character from the user's spec (docs "Monitoring > Database" and "Regular
Cleanup").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from backends.sql_engine import engine_from_url
from backends.sql_tables import create_tables, drop_tables
from queues.drivers.base import ReservedJob
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope
from tests.conftest import MARIADB_URL, need_service, private_database_name

PENDING_BY_QUEUE = """SELECT queue, COUNT(*) as pending_jobs
FROM queue_jobs
WHERE reserved_at IS NULL
GROUP BY queue;"""

PROCESSING_BY_QUEUE = """SELECT queue, COUNT(*) as processing_jobs
FROM queue_jobs
WHERE reserved_at IS NOT NULL
GROUP BY queue;"""

JOB_AGE = """SELECT queue,
       MIN(created_at) as oldest_job,
       MAX(created_at) as newest_job,
       COUNT(*) as total_jobs
FROM queue_jobs
GROUP BY queue;"""

FAILED_BY_QUEUE = """SELECT queue, COUNT(*) as failed_jobs
FROM queue_failed_jobs
GROUP BY queue;"""

STUCK_JOBS = """SELECT * FROM queue_jobs
WHERE reserved_at < DATE_SUB(NOW(), INTERVAL 1 HOUR);"""

CLEAN_OLD_FAILED = """DELETE FROM queue_failed_jobs
WHERE failed_at < DATE_SUB(NOW(), INTERVAL 30 DAY);"""

#: The spec's "Pushing a job" INSERT, with its `?` placeholders as named parameters.
SPEC_PUSH = """INSERT INTO queue_jobs
(queue, payload, attempts, available_at, created_at)
VALUES (:queue, :payload, 0, :available_at, NOW())"""

BACKDATE_FAILURE = (
    "UPDATE queue_failed_jobs SET failed_at = NOW(6) - INTERVAL :d DAY WHERE id = :id"
)

#: Private database on the shared server: other suites recreate the tables of `test`.
PRIVATE_DATABASE = private_database_name("test_seed_sql_queries")


@pytest.fixture
def engine() -> Iterator[Engine]:
    need_service("MariaDB", "127.0.0.1", 3306)
    server = engine_from_url(MARIADB_URL)
    with server.begin() as connection:
        connection.execute(text(f"CREATE DATABASE IF NOT EXISTS {PRIVATE_DATABASE}"))
    server.dispose()
    engine = engine_from_url(MARIADB_URL.rsplit("/", 1)[0] + "/" + PRIVATE_DATABASE)
    drop_tables(engine)
    create_tables(engine)
    yield engine
    engine.dispose()


def _push(driver: DatabaseDriver, queue: str, delay: float = 0.0) -> Envelope:
    env = Envelope(job="tests.noop", data={}, queue=queue)
    if delay:
        driver.later(queue, env.to_json(), delay)
    else:
        driver.push(queue, env.to_json())
    return env


def _pop(driver: DatabaseDriver, queue: str) -> ReservedJob:
    job = driver.pop([queue])
    assert job is not None
    return job


def _run(engine: Engine, sql: str) -> dict[str, tuple[object, ...]]:
    with engine.connect() as connection:
        return {str(row[0]): tuple(row[1:]) for row in connection.execute(text(sql))}


def _row_id(job: ReservedJob) -> int:
    return int(job.token.split(":")[0])


def test_pending_processing_age_and_failed_counts_match_live_state(engine: Engine) -> None:
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    for _ in range(4):
        _push(driver, "default")
    _push(driver, "default", delay=60)
    _push(driver, "emails")
    _push(driver, "emails")
    _pop(driver, "default")  # processing
    assert driver.fail(_pop(driver, "default"), "boom")
    _pop(driver, "emails")  # processing

    # "pending" in the spec's query is every unreserved job, delayed ones included.
    assert _run(engine, PENDING_BY_QUEUE) == {"default": (3,), "emails": (1,)}
    assert _run(engine, PROCESSING_BY_QUEUE) == {"default": (1,), "emails": (1,)}
    assert _run(engine, FAILED_BY_QUEUE) == {"default": (1,)}
    sizes = driver.sizes("default")
    assert (sizes.pending + sizes.delayed, sizes.reserved, sizes.failed) == (3, 1, 1)

    ages = _run(engine, JOB_AGE)
    assert {queue: row[2] for queue, row in ages.items()} == {"default": 4, "emails": 2}
    with engine.connect() as connection:
        now = connection.execute(text("SELECT NOW(6)")).scalar_one()
    for oldest, newest, _ in ages.values():
        assert isinstance(oldest, type(now)) and isinstance(newest, type(now))
        assert oldest <= newest <= now
        assert (now - oldest).total_seconds() < 60, "created_at must be the server's NOW()"


def test_stuck_jobs_query_finds_exactly_the_jobs_reserved_over_an_hour_ago(
    engine: Engine,
) -> None:
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine), retry_after=90)
    stuck_env = _push(driver, "default")
    _push(driver, "default")
    _push(driver, "default")  # stays pending
    stuck, fresh = _pop(driver, "default"), _pop(driver, "default")
    assert _run(engine, STUCK_JOBS) == {}, "a job reserved just now is not stuck"
    with engine.begin() as connection:  # its worker died 2 hours ago
        connection.execute(
            text("UPDATE queue_jobs SET reserved_at = NOW(6) - INTERVAL 2 HOUR WHERE id = :id"),
            {"id": _row_id(stuck)},
        )
    rows = _run(engine, STUCK_JOBS)
    assert list(rows) == [str(_row_id(stuck))]
    assert stuck_env.id in str(rows[str(_row_id(stuck))])
    # The driver agrees: the stuck lease expired, so the next pop takes it back.
    again = _pop(driver, "default")
    assert (again.id, again.attempts) == (stuck_env.id, 2)
    assert driver.ack(fresh)
    assert not driver.ack(stuck)


def test_thirty_day_cleanup_deletes_only_failures_older_than_thirty_days(
    engine: Engine,
) -> None:
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    for _ in range(3):
        _push(driver, "default")
    for _ in range(3):
        assert driver.fail(_pop(driver, "default"), "boom")
    failed = driver.failed_store.all()
    old, borderline, recent = failed[2], failed[1], failed[0]
    with engine.begin() as connection:
        for entry, days in ((old, 31), (borderline, 29)):
            connection.execute(
                text(BACKDATE_FAILURE),
                {"d": days, "id": int(entry.id)},
            )
    with engine.begin() as connection:
        deleted = connection.execute(text(CLEAN_OLD_FAILED)).rowcount
    assert deleted == 1
    assert [f.id for f in driver.failed_store.all()] == [recent.id, borderline.id]
    assert driver.failed_store.flush(older_than_days=28) == 1
    assert [f.id for f in driver.failed_store.all()] == [recent.id]


def test_the_specs_own_insert_makes_a_job_the_driver_runs_and_fences(engine: Engine) -> None:
    env = Envelope(job="tests.noop", data={})
    with engine.begin() as connection:
        now = connection.execute(text("SELECT NOW(6)")).scalar_one()
        connection.execute(
            text(SPEC_PUSH), {"queue": "default", "payload": env.to_json(), "available_at": now}
        )
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    first = _pop(driver, "default")
    assert (first.id, first.attempts) == (env.id, 1)
    assert driver.release(first)
    second = _pop(driver, "default")
    assert not driver.ack(first), "the fence counts reservations of rows the spec's INSERT made"
    assert driver.ack(second)
