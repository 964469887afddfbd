"""The coordination primitives on every store: a claim has one holder, only the holder
releases or extends it, and it expires (races: tests/test_unique_jobs.py, test_rate_limits.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from queues.coordination import Coordinator, LocalCoordinator, coordinator_for
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.test_unique_jobs import _clear_locks


@pytest.fixture(params=(*DRIVER_NAMES, "local"))
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        yield LocalCoordinator()
        return
    driver = make_driver(request.param, tmp_path)
    _clear_locks(driver)
    yield coordinator_for(driver)
    driver.close()


def test_a_claim_has_one_holder_until_released_by_it(store: Coordinator) -> None:
    assert store.claim("k", "a", 10) == "a"
    assert store.claim("k", "b", 10) == "a"
    assert store.release("k", "b") is False  # not the holder: nothing changes
    assert store.extend("k", "b", 10) is False
    assert store.claim("k", "b", 10) == "a"
    assert store.release("k", "a") is True
    assert store.release("k", "a") is False
    assert store.claim("k", "b", 10) == "b"


def test_a_claim_expires_and_an_expired_claim_cannot_be_extended(store: Coordinator) -> None:
    assert store.claim("short", "a", 0.2) == "a"
    assert store.extend("short", "a", 0.3) is True
    time.sleep(0.45)
    assert store.extend("short", "a", 10) is False
    assert store.claim("short", "b", 10) == "b"


def test_bad_arguments_name_what_is_wrong(store: Coordinator) -> None:
    with pytest.raises(ValueError, match="ttl must be seconds > 0"):
        store.claim("k", "a", 0)
    with pytest.raises(ValueError, match="rate limit must be an integer >= 1"):
        store.take("k", 0, 1)
    with pytest.raises(ValueError, match="at most 180 characters"):
        store.claim("x" * 181, "a", 1)
