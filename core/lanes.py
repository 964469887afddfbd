"""A bounded pool of threads that runs items in order per key and in parallel across keys.

`LanePool.submit(key, item)` never blocks: the item joins the lane of its key.
A thread takes a batch of items, `run_batch(items)`, and holds the lanes of
that batch until it returns, so items of one key run one after the other in
the order they were submitted, while lanes of different keys run side by side
on `threads` threads. A lane with items left after its holder's batch goes to the
back of the ready list, so one busy key cannot starve the others.

Batches adapt to how long items take (a running average): a thread takes as
many waiting items as fit in `batch_seconds` (at most `batch_limit`, at least a
fair share of the backlog per thread). Quick items therefore come in large
batches, whose side effects can be written together, while slow ones spread
over all threads. For the same reason an idle thread is woken for a new item
only when that is worth it: when no batch is running, when items are slow, or
when the backlog exceeds a batch; otherwise a running thread takes it with its
next batch. A watchdog makes sure no item waits more than `2 * batch_seconds`
behind a batch that turned out slow: then it wakes an idle thread. `run_batch`
may stop early and return how many items it finished; the others go back to the
front of their lanes.
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
#: Fraction of `batch_seconds` a thread waits for more items when a stream of quick
#: items is arriving and fewer than a batch's worth wait (Kafka's linger.ms): a
#: larger batch costs the backend one round trip for more items.
LINGER_SHARE = 0.2


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
        self._cond = threading.Condition(threading.Lock())
        self._lanes: dict[Hashable, deque[T]] = {}  #: key -> items waiting; present while held
        self._ready: deque[Hashable] = deque()  #: keys whose lane has items and no holder
        self._closed = False
        self._queued = 0  #: items submitted and not started
        self._running = 0  #: items in batches being run right now
        self._batches = 0  #: batches being run right now
        self._idle = 0  #: threads waiting for work
        self._last_take = time.monotonic()  #: when a thread last took a batch
        self._last_submit = 0.0  #: when the latest item arrived
        self._watch = threading.Event()  #: set when an item waits without a woken thread
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._watchdog, name=f"{name}-watch"))
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def submit(self, key: Hashable, item: T) -> None:
        """Queue `item` behind the other items of `key`; returns at once."""
        with self._cond:
            self._queued += 1
            self._last_submit = time.monotonic()
            lane = self._lanes.get(key)
            if lane is None:
                self._lanes[key] = deque((item,))
                self._ready.append(key)
            else:
                lane.append(item)
            if not self._ready or not self._idle:
                return
            if (
                self._batches == 0
                or self._per_item >= self._batch_seconds
                or self._queued * self._per_item >= self._batch_seconds
            ):
                self._cond.notify()
            elif not self._watch.is_set():
                self._watch.set()

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
            self._cond.notify_all()
        self._watch.set()
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

    def _watchdog(self) -> None:
        """Wake an idle thread for items that wait behind a batch running too long."""
        patience = 2 * self._batch_seconds
        while True:
            self._watch.wait()
            self._watch.clear()
            if self._closed:
                return
            time.sleep(patience)
            with self._cond:
                if not self._ready or not self._idle:
                    continue
                if time.monotonic() - self._last_take >= patience:
                    self._cond.notify()
                self._watch.set()  # look again until the items are taken

    def _take(self) -> tuple[list[tuple[Hashable, T]], list[Hashable]] | None:
        """Wait for work; return a batch and the keys it holds (None once closed and idle)."""
        with self._cond:
            while not self._ready:
                if self._closed:
                    return None
                self._idle += 1
                try:
                    self._cond.wait()
                finally:
                    self._idle -= 1
            fits = int(self._batch_seconds / self._per_item) if self._per_item > 0 else 0
            linger = self._batch_seconds * LINGER_SHARE
            if self._queued < min(fits, self._batch_limit) and (
                time.monotonic() - self._last_submit < linger
            ):
                self._cond.wait(linger)  # items are streaming in: let a batch gather
            share = -(-self._queued // self._threads_count)  # ceil: spread over the threads
            limit = max(1, min(self._batch_limit, max(share, fits)))
            batch: list[tuple[Hashable, T]] = []
            held: list[Hashable] = []
            while self._ready and len(batch) < limit:
                key = self._ready.popleft()
                held.append(key)
                lane = self._lanes[key]
                while lane and len(batch) < limit:
                    batch.append((key, lane.popleft()))
            self._queued -= len(batch)
            self._running += len(batch)
            self._batches += 1
            self._last_take = time.monotonic()
            return batch, held

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
            if woken and self._idle and self._per_item >= self._batch_seconds:
                self._cond.notify(woken)  # slow items: spread the lanes over idle threads
