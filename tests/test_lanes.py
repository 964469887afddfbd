"""The lane pool: order per key, parallel keys, adaptive batches, no wait behind a slow item."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from core.lanes import LanePool
from tests.mqtt_helpers import wait_until

BATCH_SECONDS = 0.005


def test_quick_items_come_in_batches_and_keep_their_order_per_key() -> None:
    seen: dict[str, list[int]] = {}
    sizes: list[int] = []
    lock = threading.Lock()

    def run(batch: Sequence[tuple[str, int]]) -> int:
        with lock:
            sizes.append(len(batch))
            for key, n in batch:
                seen.setdefault(key, []).append(n)
        return len(batch)

    pool: LanePool[tuple[str, int]] = LanePool(run, 8, 50, BATCH_SECONDS)
    for n in range(2000):
        key = f"k{n % 5}"
        pool.submit(key, (key, n))
    assert wait_until(lambda: sum(sizes) == 2000)
    assert pool.close(5)
    assert seen == {f"k{k}": list(range(k, 2000, 5)) for k in range(5)}
    assert max(sizes) > 1, "quick items were never batched"


def test_a_slow_item_does_not_hold_back_the_items_of_other_keys() -> None:
    started: dict[str, float] = {}

    def run(batch: Sequence[str]) -> int:
        for item in batch:
            started.setdefault(item, time.monotonic())
            if item == "slow":
                time.sleep(1.0)
        return len(batch)

    pool: LanePool[str] = LanePool(run, 4, 50, BATCH_SECONDS)
    for n in range(300):  # quick items: the pool learns that items are quick
        pool.submit(f"warm{n % 3}", f"warm-{n}")
    assert wait_until(lambda: len(started) == 300)
    pool.submit("a", "slow")
    assert wait_until(lambda: "slow" in started)
    time.sleep(0.01)
    pool.submit("b", "other")
    submitted = time.monotonic()
    assert wait_until(lambda: "other" in started, timeout=2)
    assert started["other"] - submitted < 0.5, "an item of another key waited for the slow one"
    assert pool.close(5)


def test_items_a_batch_did_not_run_go_back_to_the_front_of_their_lane() -> None:
    ran: list[int] = []

    def run_one(batch: Sequence[int]) -> int:
        ran.append(batch[0])  # finish only the first, hand the rest back
        return 1

    pool: LanePool[int] = LanePool(run_one, 1, 10, 1.0)
    pool.submit("k", -1)
    for n in range(10):
        pool.submit("k", n)
    assert wait_until(lambda: len(ran) == 11)
    assert ran == [-1, *range(10)]
    assert pool.close(5)
