"""A bounded pool of threads that runs items in order per key and in parallel across keys.

`LanePool.submit(key, item)` never blocks: the item joins the lane of its key.
A thread takes a batch of items, `run_batch(items)`, and holds the lanes of
that batch until it returns, so items of one key run one after the other in
the order they were submitted, while lanes of different keys run side by side
on `threads` threads. A lane with items left after its holder's batch goes to the
back of the ready list, so one busy key cannot starve the others.

One thread at a time is the taker: it waits for items, takes a batch, hands the
taker's role to an idle thread and runs its batch. How much it takes adapts to
how long items take (a running average): as many as fit in `batch_seconds` (at
most `batch_limit`). While other batches are running (the pool is busy), the
taker lingers up to `batch_seconds` for a batch's worth to gather (Kafka's
linger.ms): quick items then come in large batches, whose side effects are
written together; an idle pool takes an item the moment it arrives, and slow
items go one per thread. `run_batch` may stop early and return how many items
it finished; the others go back to the front of their lanes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Weight of the latest batch in the running average time per item.
AVERAGE_WEIGHT = 0.2


class LanePool(Generic[T]):
    """Runs `run_batch(items)` on `threads` threads, in submission order per key."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], int],
        threads: int,
        batch_limit: int,
        batch_seconds: float,
        name: str = "lane",
    ) -> None:
        if threads < 1 or batch_limit < 1 or batch_seconds <= 0:
            raise ValueError(
                f"a lane pool needs a thread, a batch of one and a batch time, "
                f"got {threads}, {batch_limit}, {batch_seconds}"
            )
        self._run_batch = run_batch
        self._threads_count = threads
        self._batch_limit = batch_limit
        self._batch_seconds = batch_seconds
        #: Running average of seconds per item; starts at a whole batch's worth, so the
        #: first items spread over the threads until their speed is known.
        self._per_item = batch_seconds
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  #: the taker waits here for items
        self._lanes: dict[Hashable, deque[T]] = {}  #: key -> items waiting; present while held
        self._ready: deque[Hashable] = deque()  #: keys whose lane has items and no holder
        self._closed = False
        self._queued = 0  #: items submitted and not started
        self._running = 0  #: items in batches being run right now
        self._batches = 0  #: batches being run right now
        self._taker = False  #: a thread holds the taker's role
        #: Items the waiting taker wants queued before it is woken (0: it is not waiting).
        self._taker_wants = 0
        self._role = threading.Condition(lock)  #: idle threads wait here to become the taker
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, item: T) -> bool:
        """Queue `item` behind the other items of `key`; returns at once.

        False (and nothing queued) once the pool is closing.
        """
        with self._cond:
            if self._closed:
                return False
            self._queued += 1
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = deque((item,))
                self._ready.append(key)
            else:
                lane.append(item)
            if self._taker_wants and self._queued >= self._taker_wants:
                self._taker_wants = 0
                self._cond.notify()
            return True

    @property
    def backlog(self) -> int:
        """Items submitted and not finished (queued plus running)."""
        return self._queued + self._running

    def close(self, timeout: float) -> bool:
        """Run what is queued, then end the threads; False if `timeout` s were not enough.

        Items still queued when the time is up are dropped (never run).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._taker_wants = 0
            self._cond.notify_all()
            self._role.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        if not finished:
            with self._cond:
                dropped = self._queued
                self._lanes.clear()
                self._ready.clear()
                self._queued = 0
            log.warning("%d queued item(s) were not run before the stop timeout", dropped)
        return finished

    def _take(self) -> tuple[list[tuple[Hashable, T]], list[Hashable]] | None:
        """Become the taker, wait for items, take a batch and pass the role on.

        Returns the batch and the keys it holds, or None once closed and idle.
        """
        with self._cond:
            while self._taker and not self._closed:
                self._role.wait()
            self._taker = True
            try:
                while not self._ready:
                    if self._closed:
                        return None
                    self._taker_wants = 1
                    self._cond.wait()
                fits = int(self._batch_seconds / self._per_item) if self._per_item > 0 else 0
                wanted = max(1, min(self._batch_limit, fits))
                if self._batches and self._queued < wanted:
                    # Busy: let a batch's worth gather, for at most a batch's time.
                    deadline = time.monotonic() + self._batch_seconds
                    while self._queued < wanted and not self._closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._taker_wants = wanted
                        self._cond.wait(left)
                self._taker_wants = 0
                batch: list[tuple[Hashable, T]] = []
                held: list[Hashable] = []
                while self._ready and len(batch) < wanted:
                    key = self._ready.popleft()
                    held.append(key)
                    lane = self._lanes[key]
                    while lane and len(batch) < wanted:
                        batch.append((key, lane.popleft()))
                self._queued -= len(batch)
                self._running += len(batch)
                self._batches += 1
                return batch, held
            finally:
                self._taker = False
                self._role.notify()

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            batch, held = taken
            started = time.monotonic()
            done = len(batch)
            try:
                done = min(len(batch), max(0, self._run_batch([item for _, item in batch])))
            except BaseException:  # the runner guards itself; this keeps the thread alive
                log.exception("a batch of %d item(s) raised", len(batch))
            finally:
                self._finish(batch, held, done, time.monotonic() - started)

    def _finish(
        self, batch: list[tuple[Hashable, T]], held: list[Hashable], done: int, elapsed: float
    ) -> None:
        """Put back what was not run, update the average, release the batch's lanes."""
        with self._cond:
            if done:
                self._per_item += AVERAGE_WEIGHT * (elapsed / done - self._per_item)
            for key, item in reversed(batch[done:]):  # not run: back to the front
                lane = self._lanes.get(key)  # None once close() dropped the lanes
                if lane is not None:
                    lane.appendleft(item)
                    self._queued += 1
            self._running -= len(batch)
            self._batches -= 1
            woken = 0
            for key in held:
                lane = self._lanes.get(key)
                if lane:
                    self._ready.append(key)
                    woken += 1
                elif lane is not None:
                    del self._lanes[key]
            if woken and self._taker_wants:
                self._taker_wants = 0
                self._cond.notify()  # the taker waits: lanes are ready again
