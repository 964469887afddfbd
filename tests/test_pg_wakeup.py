"""PostgreSQL LISTEN/NOTIFY wake-ups: idle workers wake on commit, not on a poll.

Real PostgreSQL on 127.0.0.1:5432 (the suite's database). The fallback poll is
raised to far longer than any wait below, so a pop that returns early can only
have been woken by a notification.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from queues.drivers import database
from queues.drivers.base import ReservedJob
from queues.drivers.database import DatabaseDriver
from queues.drivers.pg_wakeup import MAX_CHANNEL_BYTES, channel_for
from queues.envelope import Envelope
from tests.driver_factories import make_driver

#: Fallback poll of these tests: far beyond WAKE_BOUND, so only a NOTIFY wakes in time.
LONG_FALLBACK = 60.0

#: Seconds a woken pop may take on a loaded machine (still far below LONG_FALLBACK).
WAKE_BOUND = 10.0


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseDriver]:
    monkeypatch.setattr(database, "NOTIFY_FALLBACK_POLL_SECONDS", LONG_FALLBACK)
    made = make_driver("postgres", tmp_path)
    assert isinstance(made, DatabaseDriver)
    yield made
    made.close()


def _job() -> str:
    return Envelope(job="tests.noop", data={}).to_json()


class _Popper(threading.Thread):
    """One blocking pop in the background, with the time it returned."""

    def __init__(self, driver: DatabaseDriver, queues: list[str], block: float) -> None:
        super().__init__(daemon=True)
        self.driver, self.queues, self.block = driver, queues, block
        self.job: ReservedJob | None = None
        self.returned_at = 0.0

    def run(self) -> None:
        self.job = self.driver.pop(self.queues, block=self.block)
        self.returned_at = time.monotonic()


def _idle_popper(driver: DatabaseDriver, queues: list[str]) -> _Popper:
    """A popper that is already waiting on LISTEN (its first empty claim is done)."""
    popper = _Popper(driver, queues, block=LONG_FALLBACK - 5)
    popper.start()
    deadline = time.monotonic() + WAKE_BOUND
    waker: Any = driver._waker
    while not waker._channels:  # subscribed: from now on every NOTIFY reaches it
        assert time.monotonic() < deadline, "the worker never subscribed"
        time.sleep(0.01)
    time.sleep(0.1)
    return popper


def test_an_idle_worker_wakes_when_another_process_pushes(
    driver: DatabaseDriver, tmp_path: Path
) -> None:
    popper = _idle_popper(driver, ["default"])
    pusher = make_driver_without_reset(tmp_path)
    pushed_at = time.monotonic()
    pusher.push("default", _job())
    popper.join(WAKE_BOUND)
    assert not popper.is_alive(), "the idle worker slept through the NOTIFY"
    assert popper.job is not None and popper.returned_at - pushed_at < WAKE_BOUND
    assert driver.ack(popper.job)
    pusher.close()


def make_driver_without_reset(tmp_path: Path) -> DatabaseDriver:
    """A second driver (own engine, own connections) on the same tables: another client."""
    from backends.sql_engine import engine_from_url
    from queues.drivers.database import DatabaseFailedStore
    from tests.conftest import POSTGRES_URL

    engine = engine_from_url(POSTGRES_URL)
    return DatabaseDriver(engine, DatabaseFailedStore(engine))


def test_a_release_wakes_an_idle_worker_of_its_queue(driver: DatabaseDriver) -> None:
    driver.push("default", _job())
    held = driver.pop(["default"])
    assert held is not None
    popper = _idle_popper(driver, ["default"])
    assert driver.release(held)
    popper.join(WAKE_BOUND)
    assert not popper.is_alive() and popper.job is not None
    assert popper.job.id == held.id and popper.job.attempts == 2


def test_a_delayed_job_wakes_the_worker_when_it_comes_due(driver: DatabaseDriver) -> None:
    popper = _idle_popper(driver, ["default"])
    driver.later("default", _job(), 1.0)
    popper.join(WAKE_BOUND)
    assert not popper.is_alive(), "the announced due time did not wake the worker"
    assert popper.job is not None


def test_a_bulk_push_wakes_workers_of_each_queue(driver: DatabaseDriver) -> None:
    popper = _idle_popper(driver, ["other"])
    driver.bulk([("default", _job(), 0.0), ("other", _job(), 0.0)])
    popper.join(WAKE_BOUND)
    assert not popper.is_alive() and popper.job is not None and popper.job.queue == "other"


def test_an_idle_worker_sends_no_claims_while_nothing_happens(
    driver: DatabaseDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "NOTIFY_FALLBACK_POLL_SECONDS", 0.5)
    claims = 0
    claim = driver._claim_once

    def counted(queues: Any) -> ReservedJob | None:
        nonlocal claims
        claims += 1
        return claim(queues)

    monkeypatch.setattr(driver, "_claim_once", counted)
    assert driver.pop(["default"], block=2.0) is None
    # 50 ms polling would have claimed 40 times; the fallback claims every 0.5 s,
    # plus the first claim and the one right after subscribing.
    assert claims <= 7, f"{claims} claims in 2 s of idling"


def test_wakeups_survive_a_killed_listen_connection(driver: DatabaseDriver) -> None:
    popper = _idle_popper(driver, ["default"])
    waker: Any = driver._waker
    pid = waker._connection.info.backend_pid
    with driver.engine.begin() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    driver.push("default", _job())  # its NOTIFY is lost with the connection
    popper.join(WAKE_BOUND)  # ...but the broken wait returns and the claim finds the job
    assert not popper.is_alive() and popper.job is not None
    assert driver.ack(popper.job)
    again = _idle_popper(driver, ["default"])  # reconnected and listening again
    driver.push("default", _job())
    again.join(WAKE_BOUND)
    assert not again.is_alive() and again.job is not None


def test_a_long_queue_name_gets_a_channel_postgres_accepts(driver: DatabaseDriver) -> None:
    name = "q" * 200
    assert len(channel_for(name).encode()) <= MAX_CHANNEL_BYTES
    assert channel_for("default") == "routemq:queue:default"
    popper = _idle_popper(driver, [name])
    driver.push(name, _job())
    popper.join(WAKE_BOUND)
    assert not popper.is_alive() and popper.job is not None


@pytest.mark.slow
def test_four_listening_processes_take_each_trickled_job_exactly_once(tmp_path: Path) -> None:
    """Every push wakes all four idle workers (they LISTEN on one channel); SKIP LOCKED
    claims still hand each job to exactly one of them, none is left behind."""
    from collections import Counter

    from tests.driver_race_child import read_handled, spawn

    driver = make_driver("postgres", tmp_path)
    outs = [tmp_path / f"handled-{n}.txt" for n in range(4)]
    start_at = time.time() + 1.5
    children = [spawn("postgres", "work", out, tmp_path, start_at=start_at, idle=5) for out in outs]
    try:
        time.sleep(max(0.0, start_at - time.time()) + 1.0)  # all of them idle on LISTEN
        pushed = []
        for _ in range(300):
            env = Envelope(job="tests.noop", data={})
            driver.push("default", env.to_json())
            pushed.append(env.id)
            time.sleep(0.005)
        for child in children:
            _, stderr = child.communicate(timeout=120)
            assert child.returncode == 0, stderr.decode(errors="replace")
    finally:
        for child in children:
            child.kill()
            child.wait()
    handled = read_handled(outs)
    counts = Counter(job_id for job_id, _ in handled)
    assert sorted(counts) == sorted(pushed) and set(counts.values()) == {1}
    assert all(attempts == 1 for _, attempts in handled)
    assert sum(1 for out in outs if out.exists() and out.read_text()) >= 2, "work was shared"
    driver.close()
