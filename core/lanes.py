"""A bounded pool of threads that runs items in order per key and in parallel across keys.

`LanePool.submit(key, item)` never blocks: the item joins the lane of its key.
At most one thread works on a lane at a time, so items of one key run in the
order they were submitted; lanes of different keys run side by side on
`threads` threads. A lane with more items after one finishes goes to the back
of the ready list, so one busy key cannot starve the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LanePool(Generic[T]):
    """Runs `run(item)` on `threads` threads, in submission order per key."""

    def __init__(self, run: Callable[[T], None], threads: int, name: str = "lane") -> None:
        if threads < 1:
            raise ValueError(f"a lane pool needs at least one thread, got {threads}")
        self._run = run
        self._cond = threading.Condition(threading.Lock())
        self._lanes: dict[Hashable, deque[T]] = {}  #: key -> items waiting; present while busy
        self._ready: deque[Hashable] = deque()  #: keys whose lane has an item and no thread
        self._closed = False
        self._queued = 0  #: items submitted and not started
        self._running = 0  #: items being run right now
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, item: T) -> None:
        """Queue `item` behind the other items of `key`; returns at once."""
        with self._cond:
            self._queued += 1
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append(item)
                return
            self._lanes[key] = deque((item,))
            self._ready.append(key)
            self._cond.notify()

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

    def _work(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._ready:
                    if self._closed:
                        return
                    cond.wait()
                key = self._ready.popleft()
                item = self._lanes[key].popleft()
                self._queued -= 1
                self._running += 1
            try:
                self._run(item)
            except BaseException:  # the runner guards itself; this keeps the thread alive
                log.exception("lane item of %r raised", key)
            finally:
                with cond:
                    self._running -= 1
                    lane = self._lanes.get(key)  # None once close() dropped the lanes
                    if lane:
                        self._ready.append(key)  # this thread (or another) takes it next
                    elif lane is not None:
                        del self._lanes[key]
