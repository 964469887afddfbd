"""Job classes of the worker benchmark (benchmarks/bench_worker.py).

Workers started by the benchmark load this package (JOBS_PACKAGE=benchmarks.worker_jobs):
a no-op job, a job that sleeps 5 ms (threads), its `async def` twin (asyncio) and
one that stamps the time its `handle()` started (idle pickup latency).
"""

from __future__ import annotations

import asyncio
import time

from queues import Job

#: Seconds the sleeping jobs sleep: an I/O-bound job's wait (a webhook, a write).
SLEEP_SECONDS = 0.005


class BenchNoop(Job):
    """Does nothing: what is measured is the worker's own cost per job."""

    queue = "bench"

    def handle(self) -> None:
        """Nothing."""


class BenchSleep(Job):
    """Sleeps SLEEP_SECONDS, like a handler waiting on I/O."""

    queue = "bench"

    def handle(self) -> None:
        """Sleep without holding the GIL."""
        time.sleep(SLEEP_SECONDS)


class BenchAsyncSleep(Job):
    """`async def handle` that awaits SLEEP_SECONDS."""

    queue = "bench"

    async def handle(self) -> None:
        """Await a sleep on the worker's event loop."""
        await asyncio.sleep(SLEEP_SECONDS)


class BenchStamp(Job):
    """Appends `<seq> <unix time>` to the file `out` when it starts (pickup latency)."""

    queue = "bench"

    def handle(self) -> None:
        """Record when the worker got to this job."""
        now = time.time()
        with open(self.data["out"], "a", encoding="ascii") as out:
            out.write(f"{self.data['seq']} {now!r}\n")
