"""The dispatch outbox: jobs an MQTT handler dispatches, stored before its message is acked.

The MQTT intake (core/intake.py) brackets each handler attempt with `begin()`
and `end()`. In between, `dispatch()` and `dispatch_many()` on that thread
validate the job and return its id at once, but only record the job here; the
intake then stores the records of a whole batch of messages with one `bulk`
call per driver (one Redis script, one SQL transaction) and acknowledges the
messages only after that returned. So a job is durable before its message's
PUBACK, a handler attempt that raises queues nothing, and the cost of a round
trip is shared by the batch (group commit).

Outside a handler (a script, a job dispatching a job) nothing is recorded and
`dispatch()` stores the job before returning, as always.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class JobSink(Protocol):
    """Where dispatched jobs are stored: a queue driver, or a test's fake queue."""

    def enqueue(self, queue: str, payload: str, delay: float = 0.0) -> None:
        """Store one job, due after `delay` seconds."""

    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        """Store `(queue, payload, delay)` rows at once, in order."""


@dataclass(frozen=True)
class PendingJob:
    """One dispatched job waiting to be stored: where, what, and when it is due."""

    driver: JobSink
    queue: str
    payload: str
    delay: float


_recording = threading.local()


def recorded() -> list[PendingJob] | None:
    """The list this thread's dispatches go to, or None when they are stored at once."""
    jobs: list[PendingJob] | None = getattr(_recording, "jobs", None)
    return jobs


class DispatchOutbox:
    """The intake's `Outbox` for queue jobs (see the module docstring)."""

    def begin(self) -> None:
        """Record, not store, what this thread dispatches from now on."""
        _recording.jobs = []

    def end(self) -> list[PendingJob] | None:
        """Stop recording; the jobs dispatched since `begin`, or None if there were none."""
        jobs = recorded()
        _recording.jobs = None
        return jobs or None

    def flush(self, records: Sequence[list[PendingJob]]) -> None:
        """Store every recorded job, in order: one atomic `bulk` per driver."""
        by_driver: dict[int, tuple[JobSink, list[tuple[str, str, float]]]] = {}
        for jobs in records:
            for job in jobs:
                entry = by_driver.setdefault(id(job.driver), (job.driver, []))
                entry[1].append((job.queue, job.payload, job.delay))
        for driver, rows in by_driver.values():
            driver.bulk(rows)
