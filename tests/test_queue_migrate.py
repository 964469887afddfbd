"""`--queue-migrate`: pending and delayed jobs move between drivers, none lost or duplicated."""

from __future__ import annotations

import time
import uuid

import pytest

from queues.envelope import Envelope
from queues.transfer import transfer
from tests.driver_factories import make_driver
from tests.jobs_fixture.support import main_env, run_main

DIRECTIONS = [("redis", "sqlite"), ("sqlite", "redis")]


@pytest.fixture(params=DIRECTIONS, ids=lambda d: f"{d[0]}-to-{d[1]}")
def pair(request, tmp_path):
    source_name, target_name = request.param
    source = make_driver(source_name, tmp_path, retry_after=1)
    target = make_driver(target_name, tmp_path)
    yield source, target
    source.close()
    target.close()


@pytest.fixture
def queue() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def envelope(queue: str, value: int) -> Envelope:
    return Envelope(job="RecordJob", data={"path": "/dev/null", "value": value}, queue=queue)


def drain(driver, queue: str) -> list[str]:
    """Ids of every job that can be popped now, in pop order."""
    ids = []
    while (job := driver.pop([queue])) is not None:
        ids.append(job.id)
    return ids


def test_migrate_moves_pending_and_delayed_jobs_keeping_order_and_delay(pair, queue):
    source, target = pair
    pending = [envelope(queue, i) for i in range(5)]
    delayed = [envelope(queue, 10 + i) for i in range(3)]
    for item in pending:
        source.push(queue, item.to_json())
    for item in delayed:
        source.later(queue, item.to_json(), 60)

    report = transfer(source, target, [queue])

    assert report.moved == {queue: 8}
    sizes = source.sizes(queue)
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)
    sizes = target.sizes(queue)
    assert (sizes.pending, sizes.delayed) == (5, 3)
    assert drain(target, queue) == [item.id for item in pending]  # FIFO kept
    assert all(target.contains(queue, item.id) for item in delayed)  # still delayed


def interrupted_migration(source, target, queue: str) -> list[Envelope]:
    """Six pending jobs; a migration leased three, copied two, then died before any ack."""
    items = [envelope(queue, i) for i in range(6)]
    for item in items:
        source.push(queue, item.to_json())
    taken = source.take_for_transfer(queue, 3)
    for job in taken[:2]:
        target.push(queue, job.payload)
    return items


def test_rerun_after_an_interruption_copies_no_job_twice(pair, queue):
    source, target = pair
    items = interrupted_migration(source, target, queue)
    report = transfer(source, target, [queue])  # the dead run's three are still leased
    assert report.moved == {queue: 3}
    moved = drain(target, queue)
    assert len(moved) == len(set(moved)) == 5
    assert set(moved) <= {item.id for item in items}
    assert source.sizes(queue).reserved == 3  # kept by the lease, not lost


def test_rerun_after_the_dead_runs_lease_expires_finishes_the_move(pair, queue):
    source, target = pair
    items = interrupted_migration(source, target, queue)
    transfer(source, target, [queue])
    time.sleep(1.2)  # the dead migration's lease (retry_after=1) expires
    second = transfer(source, target, [queue])
    assert (second.moved, second.already_there) == ({queue: 1}, {queue: 2})
    assert sorted(drain(target, queue)) == sorted(item.id for item in items)
    sizes = source.sizes(queue)
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)


def test_migrate_command_reports_counts_both_ways(tmp_path, queue):
    redis_driver = make_driver("redis", tmp_path)
    sqlite_driver = make_driver("sqlite", tmp_path)
    for i in range(4):
        redis_driver.push(queue, envelope(queue, i).to_json())
    redis_driver.later(queue, envelope(queue, 9).to_json(), 60)
    env = main_env("redis", tmp_path)

    there = run_main(
        ["--queue-migrate", "--from", "redis", "--to", "database", "--queue", queue], env
    )
    assert there.returncode == 0, there.stderr
    assert f"{queue}: moved 5" in there.stdout
    assert "moved 5 job(s) from redis to database" in there.stdout
    assert sqlite_driver.sizes(queue).pending == 4 and sqlite_driver.sizes(queue).delayed == 1

    back = run_main(["--queue-migrate", "--from", "database", "--to", "redis"], env)
    assert back.returncode == 0, back.stderr
    assert "moved 5 job(s) from database to redis" in back.stdout
    sizes = redis_driver.sizes(queue)
    assert (sizes.pending, sizes.delayed) == (4, 1)
    assert sqlite_driver.queues() == []
    redis_driver.close()
    sqlite_driver.close()
