"""Rate limits: at most `limit` passes in any window of `per` seconds, across processes,
as a coordinator step, as job middleware (releases without spending attempts) and as
route middleware (drops or dead-letters)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.middleware.rate_limited import RateLimited as RouteRateLimited
from core.router import Router
from queues import dispatch
from queues.coordination import LocalCoordinator, RedisCoordinator, coordinator_for
from queues.drivers.base import QueueDriver
from queues.worker import Worker
from testing import TestClient
from tests.coordination_race_child import spawn
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.jobs_fixture import workflow_jobs
from tests.jobs_fixture.support import registry
from tests.test_unique_jobs import _clear_locks, _kind

#: Passes per second each driver is hammered with (SQL takes a smaller count to stay fast).
RACE_LIMITS = {"redis": 100, "redis-cluster": 100, "mariadb": 20, "postgres": 20, "sqlite": 20}
#: Seconds the race lasts.
RACE_SECONDS = 3.0


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path):
    made = make_driver(request.param, tmp_path)
    _clear_locks(made)
    yield made
    made.close()


def most_in_any_window(passes: list[tuple[float, float]], per: float) -> int:
    """The most passes that surely fell in one window of `per` seconds.

    A pass was granted at some instant between its `before` and `after`
    times; a window starting at a pass's `before` surely holds every pass
    whose `before` is not earlier and whose `after` is earlier than its end.
    """
    most = 0
    for start, _ in passes:
        inside = sum(1 for b, a in passes if b >= start and a < start + per)
        most = max(most, inside)
    return most


def test_eight_processes_hammering_a_limit_pass_at_most_limit_per_window(
    driver: QueueDriver, tmp_path: Path
) -> None:
    kind = _kind(driver)
    limit = RACE_LIMITS[kind]
    start_at = time.time() + 2.0
    outs = [tmp_path / f"take{n}" for n in range(8)]
    children = [
        spawn(
            kind,
            "take",
            out,
            tmp_path,
            key="hammer",
            limit=limit,
            per=1.0,
            seconds=RACE_SECONDS,
            start_at=start_at,
        )
        for out in outs
    ]
    for child in children:
        assert child.wait(timeout=90) == 0
    passes = sorted(
        (float(b), float(a))
        for out in outs
        for b, a in (line.split() for line in out.read_text().splitlines())
    )
    assert most_in_any_window(passes, 1.0) <= limit
    # The limit is used, not starved: about `limit` per second got through (children
    # that start late under load stretch the race, so the ceiling follows its span).
    span = passes[-1][1] - passes[0][0]
    assert len(passes) >= limit * (RACE_SECONDS - 1)
    assert len(passes) <= limit * (span + 1)


def test_the_limit_frees_up_as_the_window_slides(driver: QueueDriver) -> None:
    coordinator = coordinator_for(driver)
    assert [coordinator.take("slide", 2, 0.5) for _ in range(2)] == [0.0, 0.0]
    wait = coordinator.take("slide", 2, 0.5)
    assert 0 < wait <= 0.5
    time.sleep(wait + 0.05)
    assert coordinator.take("slide", 2, 0.5) == 0.0


def test_job_middleware_releases_over_the_limit_without_spending_attempts(
    driver: QueueDriver, tmp_path: Path
) -> None:
    reg = registry()
    out = tmp_path / "starts"
    for _ in range(7):
        dispatch(workflow_jobs.Limited(path=str(out), key="jobs", limit=3, per=1.0),
                 connection=driver, registry=reg)  # fmt: skip
    Worker(driver, ["default"], sleep=1.5, handle_signals=False, stop_when_empty=True,
           registry=reg).run()  # fmt: skip
    starts = sorted(float(line) for line in out.read_text().splitlines())
    assert len(starts) == 7  # every job ran: releases spent none of its single try
    assert most_in_any_window([(t, t) for t in starts], 1.0) <= 3
    assert starts[-1] - starts[0] >= 2.0  # 7 jobs at 3 per second span two windows
    assert driver.failed_store.counts() == {}


@pytest.mark.parametrize("dead_letter", [False, True])
def test_route_middleware_drops_or_dead_letters_over_the_limit(
    redis_client: object, dead_letter: bool
) -> None:
    handled: list[str] = []
    router = Router()
    limited = RouteRateLimited(
        lambda m: m.params["device"],
        3,
        60,
        dead_letter=dead_letter,
        coordinator=RedisCoordinator(redis_client),
    )
    router.on("rl/{device}", lambda m: handled.append(m.topic), middleware=[limited])
    client = TestClient(router)
    results = [client.publish("rl/d1", b"{}") for _ in range(5)]
    client.publish("rl/d2", b"{}")
    assert handled == ["rl/d1"] * 3 + ["rl/d2"]
    assert [r.dead_lettered for r in results] == [False] * 3 + [dead_letter] * 2
    if dead_letter:
        letter = results[-1].dead_letter
        assert letter is not None and "rate limit 'd1'" in letter.json()["error"]


def test_local_coordinator_keeps_the_same_rule() -> None:
    local = LocalCoordinator()
    assert [local.take("x", 2, 10) for _ in range(2)] == [0.0, 0.0]
    assert local.take("x", 2, 10) > 9
