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

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


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
    #: gives back what the dispatch claimed (a unique job's lock) if the job is never
    #: stored because its handler attempt raised (`DispatchOutbox.discard`)
    undo: Callable[[], Any] | None = None


#: The list the current handler attempt's dispatches go to. A context variable, not a
#: thread-local: an `async def` handler runs on the event loop's thread, in a copy of
#: the calling thread's context (core/handler_call.py), and must record there too.
_recording: ContextVar[list[PendingJob] | None] = ContextVar("dispatch_recording", default=None)


def recorded() -> list[PendingJob] | None:
    """The list this context's dispatches go to, or None when they are stored at once."""
    return _recording.get()


class _AfterStored:
    """A sink that stores nothing: its `bulk` runs a callback. Recorded after a handler's
    jobs, it runs once every driver holding those jobs has stored them (`flush` walks
    the drivers in the order the records first name them)."""

    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback

    def enqueue(self, queue: str, payload: str, delay: float = 0.0) -> None:
        """Run the callback."""
        self.callback()

    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        """Run the callback (the rows are the marker's own, empty)."""
        self.callback()


def after_stored(callback: Callable[[], Any]) -> bool:
    """Inside a handler attempt: run `callback` once the jobs it dispatched so far are
    stored (never if it raises). Outside one: False, and nothing is run.

    Used to make a claim taken for a message final only once its jobs are durable
    (unique jobs, message dedupe): until then the claim is short, so a message left
    unacknowledged by an outage is not refused as a repeat when it comes back.
    """
    jobs = _recording.get()
    if jobs is None:
        return False
    jobs.append(PendingJob(_AfterStored(callback), "", "", 0.0))
    return True


class DispatchOutbox:
    """The intake's `Outbox` for queue jobs (see the module docstring)."""

    def begin(self) -> None:
        """Record, not store, what this thread's handler attempt dispatches from now on."""
        _recording.set([])

    def end(self) -> list[PendingJob] | None:
        """Stop recording; the jobs dispatched since `begin`, or None if there were none."""
        jobs = _recording.get()
        _recording.set(None)
        return jobs or None

    def discard(self) -> None:
        """Stop recording after a handler attempt that raised: its jobs are never
        stored, so what their dispatch claimed (unique-job locks) is given back."""
        jobs = _recording.get()
        _recording.set(None)
        for job in jobs or ():
            if job.undo is not None:
                job.undo()

    def flush(self, records: Sequence[list[PendingJob]]) -> None:
        """Store every recorded job, in order: one atomic `bulk` per driver.

        Drivers do not commit together, so each driver's jobs are removed from
        `records` once its `bulk` returned: a flush tried again (after an
        outage of another driver) or message by message (after a refusal)
        writes only what is not stored yet, never a job twice.
        """
        by_driver: dict[int, tuple[JobSink, list[tuple[str, str, float]]]] = {}
        for jobs in records:
            for job in jobs:
                entry = by_driver.setdefault(id(job.driver), (job.driver, []))
                entry[1].append((job.queue, job.payload, job.delay))
        for driver, rows in by_driver.values():
            driver.bulk(rows)
            for jobs in records:
                jobs[:] = [job for job in jobs if job.driver is not driver]
