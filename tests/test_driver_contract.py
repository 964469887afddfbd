"""The one contract every queue driver keeps (queues/drivers/base.py), run against each.

Parametrised over `tests.driver_factories.DRIVER_NAMES`; each test gets a fresh
driver on empty state from `make_driver`. Waits use short leases and blocking
pops with generous upper bounds: these are correctness checks, not benchmarks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from queues.drivers.base import QueueDriver, ReservedJob
from queues.envelope import Envelope
from tests.driver_factories import DRIVER_NAMES, make_driver

#: Seconds slept to outlive a 1-second lease on every driver (SQL rounds to seconds).
PAST_ONE_SECOND_LEASE = 2.1


@pytest.fixture(params=DRIVER_NAMES)
def driver_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(driver_name: str, tmp_path: Path) -> Iterator[Callable[..., QueueDriver]]:
    """Build the driver under test once per test, with a chosen lease length."""
    made: list[QueueDriver] = []

    def build(retry_after: int = 90) -> QueueDriver:
        driver: QueueDriver = make_driver(driver_name, tmp_path, retry_after=retry_after)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close()


@pytest.fixture
def driver(make: Callable[..., QueueDriver]) -> QueueDriver:
    return make()


def envelope(queue: str = "default", **data: object) -> Envelope:
    return Envelope(job="tests.noop", data=dict(data), queue=queue)


def pop_now(driver: QueueDriver, *queues: str) -> ReservedJob | None:
    return driver.pop(list(queues) or ["default"])


def test_oldest_job_pops_first_for_a_thousand_jobs(driver: QueueDriver) -> None:
    ids = []
    for i in range(1000):
        env = envelope(n=i)
        ids.append(env.id)
        driver.push("default", env.to_json())
    popped = []
    while (job := pop_now(driver)) is not None:
        popped.append(job.id)
        assert driver.ack(job)
    assert popped == ids


def test_pop_counts_one_attempt_and_keeps_the_payload(driver: QueueDriver) -> None:
    env = envelope(items=[], big=2**64 + 1, text="ünï")
    driver.push("default", env.to_json())
    job = pop_now(driver)
    assert job is not None
    assert job.id == env.id and job.queue == "default" and job.attempts == 1
    env.attempts = 1
    assert job.payload == env.to_json()
    assert Envelope.from_json(job.payload).data == {"items": [], "big": 2**64 + 1, "text": "ünï"}


def test_delayed_job_is_invisible_before_its_time_and_pops_after(driver: QueueDriver) -> None:
    env = envelope()
    driver.later("default", env.to_json(), 1.5)
    assert pop_now(driver) is None
    assert driver.sizes("default").delayed == 1
    job = driver.pop(["default"], block=5)
    assert job is not None and job.id == env.id and job.attempts == 1


def test_queues_are_popped_in_the_given_priority_order(driver: QueueDriver) -> None:
    low, high = envelope("low"), envelope("high")
    driver.push("low", low.to_json())
    driver.push("high", high.to_json())
    first = driver.pop(["high", "low"])
    second = driver.pop(["high", "low"])
    assert first is not None and second is not None
    assert (first.id, first.queue) == (high.id, "high")
    assert (second.id, second.queue) == (low.id, "low")
    assert driver.pop(["high", "low"]) is None


def test_ack_removes_the_job_for_good(driver: QueueDriver) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    job = pop_now(driver)
    assert job is not None
    assert driver.ack(job)
    assert pop_now(driver) is None
    assert not driver.contains("default", env.id)
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)
    assert not driver.ack(job), "a second ack of the same reservation must be refused"


def test_released_job_reappears_after_its_delay_with_one_more_attempt(
    driver: QueueDriver,
) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    job = pop_now(driver)
    assert job is not None
    assert driver.release(job, 1.0)
    assert pop_now(driver) is None
    assert driver.sizes("default").reserved == 0
    again = driver.pop(["default"], block=5)
    assert again is not None and again.id == env.id and again.attempts == 2
    assert driver.release(again)
    third = pop_now(driver)
    assert third is not None and third.attempts == 3


def test_extend_keeps_a_lease_alive_past_retry_after(make: Callable[..., QueueDriver]) -> None:
    driver = make(retry_after=2)
    driver.push("default", envelope().to_json())
    job = pop_now(driver)
    assert job is not None
    for _ in range(4):  # 3.2 s in all, well past the 2 s lease
        time.sleep(0.8)
        assert driver.extend(job)
    assert pop_now(driver) is None, "an extended lease must not be taken by another worker"
    assert driver.ack(job)


def test_expired_lease_returns_the_job_with_its_attempt_counted(
    make: Callable[..., QueueDriver],
) -> None:
    driver = make(retry_after=1)
    env = envelope()
    driver.push("default", env.to_json())
    first = pop_now(driver)
    assert first is not None and first.attempts == 1
    time.sleep(PAST_ONE_SECOND_LEASE)
    second = pop_now(driver)
    assert second is not None and second.id == env.id
    assert second.attempts == 2
    assert second.token != first.token


def test_stale_owner_cannot_ack_release_fail_or_extend_the_new_owners_job(
    make: Callable[..., QueueDriver],
) -> None:
    driver = make(retry_after=1)
    driver.push("default", envelope().to_json())
    stale = pop_now(driver)
    assert stale is not None
    time.sleep(PAST_ONE_SECOND_LEASE)
    assert not driver.ack(stale), "ack after the lease expired must be refused"
    owner = pop_now(driver)
    assert owner is not None and owner.id == stale.id
    assert not driver.ack(stale)
    assert not driver.release(stale)
    assert not driver.fail(stale, "stale failure")
    assert not driver.extend(stale)
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (0, 0, 1, 0)
    assert driver.contains("default", owner.id)
    assert driver.failed_store.all() == []
    assert driver.ack(owner)


def test_failed_job_lands_in_the_failed_store_with_its_exception(driver: QueueDriver) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    job = pop_now(driver)
    assert job is not None
    assert driver.fail(job, "ValueError: boom\nTraceback line")
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.reserved, sizes.failed) == (0, 0, 1)
    assert not driver.contains("default", env.id)
    [failed] = driver.failed_store.all()
    assert failed.queue == "default"
    assert failed.connection == driver.name
    assert failed.exception == "ValueError: boom\nTraceback line"
    assert Envelope.from_json(failed.payload).id == env.id
    assert driver.failed_store.get(failed.id) == failed


def test_failed_store_lists_newest_first_and_forgets_and_flushes(driver: QueueDriver) -> None:
    store = driver.failed_store
    first = store.add(driver.name, "default", envelope().to_json(), "first")
    time.sleep(0.01)
    second = store.add(driver.name, "emails", envelope("emails").to_json(), "second")
    assert [f.id for f in store.all()] == [second, first]
    assert [f.id for f in store.all(queue="emails")] == [second]
    assert [f.id for f in store.all(limit=1)] == [second]
    assert store.counts() == {"default": 1, "emails": 1}
    assert store.forget(first)
    assert store.get(first) is None
    assert not store.forget(first)
    assert store.flush(older_than_days=1) == 0, "nothing is a day old yet"
    time.sleep(0.1)
    assert store.flush(older_than_days=0.01 / 86400) == 1
    assert store.all() == []
    store.add(driver.name, "default", envelope().to_json(), "again")
    assert store.flush() == 1
    assert store.counts() == {}


def test_sizes_count_each_state_from_live_state(driver: QueueDriver) -> None:
    for _ in range(3):
        driver.push("default", envelope().to_json())
    for _ in range(2):
        driver.later("default", envelope().to_json(), 60)
    reserved = pop_now(driver)
    failing = pop_now(driver)
    assert reserved is not None and failing is not None
    assert driver.fail(failing, "boom")
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (1, 2, 1, 1)
    assert sizes.oldest_pending_age is not None and sizes.oldest_pending_age >= 0
    assert driver.queues() == ["default"]
    assert driver.clear("default") == 4
    assert driver.queues() == []
    empty = driver.sizes("default")
    assert (empty.pending, empty.delayed, empty.reserved, empty.oldest_pending_age) == (
        0,
        0,
        0,
        None,
    )


def test_bulk_adds_all_jobs_in_order(driver: QueueDriver) -> None:
    jobs = [envelope("a" if i % 3 else "b", n=i) for i in range(60)]
    later = envelope("a")
    driver.bulk([(env.queue, env.to_json(), 0.0) for env in jobs] + [("a", later.to_json(), 60)])
    assert driver.sizes("a").delayed == 1
    for queue in ("a", "b"):
        expected = [env.id for env in jobs if env.queue == queue]
        popped = []
        while (job := driver.pop([queue])) is not None:
            popped.append(job.id)
        assert popped == expected


def test_release_with_undo_attempt_gives_the_attempt_back(driver: QueueDriver) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    first = pop_now(driver)
    assert first is not None and first.attempts == 1
    assert driver.release(first, 0, undo_attempt=True)
    again = pop_now(driver)
    assert again is not None and again.id == env.id
    assert again.attempts == 1
    assert '"attempts":1,' in again.payload
    assert driver.release(again, 0)
    third = pop_now(driver)
    assert third is not None and third.attempts == 2
    assert driver.ack(third)


def test_take_for_transfer_leases_jobs_without_counting_an_attempt(
    driver: QueueDriver,
) -> None:
    pending = [envelope() for _ in range(2)]
    delayed = envelope()
    for env in pending:
        driver.push("default", env.to_json())
    driver.later("default", delayed.to_json(), 60)
    before = time.time()
    taken = driver.take_for_transfer("default", 10)
    assert [job.id for job in taken] == [pending[0].id, pending[1].id, delayed.id]
    assert all(job.attempts == 0 for job in taken)
    assert all(job.available_at is not None for job in taken)
    assert taken[0].available_at is not None and abs(taken[0].available_at - before) < 5
    assert taken[2].available_at is not None and 50 < taken[2].available_at - before < 70
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 3)
    assert pop_now(driver) is None
    assert all(driver.contains("default", job.id) for job in taken)
    assert all(driver.ack(job) for job in taken)
    assert not any(driver.contains("default", job.id) for job in taken)


def test_take_for_transfer_respects_its_limit(driver: QueueDriver) -> None:
    envs = [envelope() for _ in range(5)]
    for env in envs:
        driver.push("default", env.to_json())
    taken = driver.take_for_transfer("default", 2)
    assert [job.id for job in taken] == [envs[0].id, envs[1].id]
    assert driver.sizes("default").pending == 3


def test_take_for_transfer_retakes_a_job_whose_lease_expired(
    make: Callable[..., QueueDriver],
) -> None:
    driver = make(retry_after=1)
    env = envelope()
    driver.push("default", env.to_json())
    dead = driver.take_for_transfer("default", 10)  # a migration that then died
    assert [job.id for job in dead] == [env.id]
    assert driver.take_for_transfer("default", 10) == []  # its lease still holds
    time.sleep(1.3)
    again = driver.take_for_transfer("default", 10)
    assert [job.id for job in again] == [env.id]
    assert again[0].attempts == 0
    assert driver.ack(again[0])
    assert not driver.contains("default", env.id)


def test_transfer_fences_out_the_worker_whose_lease_expired(
    make: Callable[..., QueueDriver],
) -> None:
    driver = make(retry_after=1)
    env = envelope()
    driver.push("default", env.to_json())
    stale = pop_now(driver)
    assert stale is not None and stale.attempts == 1
    time.sleep(1.3)  # the worker is cut off; its lease runs out
    [taken] = driver.take_for_transfer("default", 10)
    assert taken.id == env.id
    assert taken.attempts == 1  # the worker's attempt happened; the move counts none
    assert not driver.extend(stale)
    assert not driver.ack(stale)
    assert not driver.release(stale, 0)
    assert not driver.fail(stale, "late")
    assert driver.failed_store.counts() == {}
    assert driver.ack(taken)
    assert not driver.contains("default", env.id)


def test_contains_sees_pending_delayed_and_reserved_jobs(driver: QueueDriver) -> None:
    now_env, later_env, reserved_env = envelope(), envelope(), envelope()
    driver.push("default", reserved_env.to_json())
    driver.push("default", now_env.to_json())
    driver.later("default", later_env.to_json(), 60)
    job = pop_now(driver)
    assert job is not None and job.id == reserved_env.id
    for env in (now_env, later_env, reserved_env):
        assert driver.contains("default", env.id)
    assert not driver.contains("default", envelope().id)
    assert not driver.contains("other", now_env.id)


def test_blocking_pop_wakes_up_when_a_job_is_pushed(driver: QueueDriver) -> None:
    env = envelope()
    timer = threading.Timer(0.2, lambda: driver.push("default", env.to_json()))
    start = time.monotonic()
    timer.start()
    try:
        job = driver.pop(["default"], block=5)
    finally:
        timer.join()
    elapsed = time.monotonic() - start
    assert job is not None and job.id == env.id
    assert elapsed < 1.2, f"blocking pop took {elapsed:.2f}s to see a pushed job (block=5)"


def test_delayed_job_becomes_poppable_during_a_blocking_pop(driver: QueueDriver) -> None:
    env = envelope()
    driver.later("default", env.to_json(), 1.0)
    start = time.monotonic()
    job = driver.pop(["default"], block=8)
    elapsed = time.monotonic() - start
    assert job is not None and job.id == env.id
    assert elapsed < 3.0, f"a job due in 1 s was picked up after {elapsed:.2f}s"


def test_blocking_pop_returns_none_after_its_timeout_on_an_empty_queue(
    driver: QueueDriver,
) -> None:
    start = time.monotonic()
    assert driver.pop(["default"], block=0.3) is None
    assert time.monotonic() - start >= 0.25
