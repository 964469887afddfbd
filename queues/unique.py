"""Unique jobs (Laravel's ShouldBeUnique): one job per unique id while it is queued or running.

`dispatch(job, unique_for=seconds)`, or a class with `unique_for` (and usually a
`unique_id()` method), claims the lock `unique:{job name}:{unique id}` for the
new job's id before anything is stored (queues/coordination.py: one atomic
claim on the driver's own backend). A dispatch that finds the lock held queues
nothing and returns the holder's id as an `ExistingJobId` (a `str`), with a
DEBUG log line. The envelope carries the lock's name (`unique`), and the worker
releases it (only if this job still holds it) when the job succeeds or fails
for good (queues/lifecycle.py); a release for a retry keeps it. Otherwise it
expires `unique_for` seconds after the dispatch, so a lost job never blocks its
id for ever.

Inside an MQTT handler the claim is made at dispatch (so the second dispatch of
the same batch is dropped too) and given back if the handler attempt raises
(`DispatchOutbox.discard`). Until the intake has stored the job it lasts at
most IN_FLIGHT_SECONDS, and `unique_for` from then on, so a message left
unacknowledged by an outage (and redelivered) is not refused for a job that
was never stored.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

from queues.coordination import MAX_NAME_LENGTH, Coordinator, coordinator_for
from queues.envelope import Envelope
from queues.job import Job, JobDataError
from queues.outbox import after_stored

logger = logging.getLogger("queues.unique")

#: Prefix of every unique-job lock name.
UNIQUE_PREFIX = "unique:"
#: Seconds a claim made inside a handler lasts until its job is stored (then unique_for).
IN_FLIGHT_SECONDS = 60.0


class ExistingJobId(str):
    """The id `dispatch()` returns when it queued nothing: the job already queued (or
    running) under the same unique id. Compare it like any id; test with `isinstance`."""

    __slots__ = ()


def unique_seconds(job: Job, unique_for: float | None) -> float | None:
    """The lock's lifetime for this dispatch: the argument, else the class's; None if the
    job is not unique. `JobDataError` naming the job for a value that is not seconds > 0."""
    value = type(job).unique_for if unique_for is None else unique_for
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise JobDataError(f"{job.job_name()} unique_for must be seconds > 0, got {value!r}")
    return float(value)


def lock_name(job: Job) -> str:
    """`unique:{job name}:{unique_id()}`, hashed when it would be too long for a key."""
    unique_id = job.unique_id()
    if not isinstance(unique_id, str):
        raise JobDataError(
            f"{job.job_name()}.unique_id() must return a str, got {type(unique_id).__name__}"
        )
    name = f"{UNIQUE_PREFIX}{job.job_name()}:{unique_id}"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        name = f"{UNIQUE_PREFIX}{job.job_name()[:80]}:#{digest}"
    return name


def claim(
    envelope: Envelope, coordinator: Coordinator, seconds: float, recorded: bool = False
) -> tuple[ExistingJobId | None, Callable[[], Any]]:
    """Claim `envelope.unique` for the envelope's id; `(existing id or None, undo)`.

    `undo` gives the claim back (when the job could not be stored after all).
    With `recorded` (the job waits in a handler's outbox) the claim lasts at
    most IN_FLIGHT_SECONDS until the job is stored, then `seconds`
    (`queues.outbox.after_stored`): a message an outage leaves unacknowledged
    comes back to a free lock instead of to the id of a job never stored."""
    name = envelope.unique
    assert name is not None
    ttl = min(seconds, IN_FLIGHT_SECONDS) if recorded else seconds
    holder = coordinator.claim(name, envelope.id, ttl)
    if holder != envelope.id:
        logger.debug(
            "job %s not queued: unique lock %s is held by job %s", envelope.job, name, holder
        )
        return ExistingJobId(holder), lambda: None
    return None, lambda: coordinator.release(name, envelope.id)


def confirm_when_stored(envelope: Envelope, coordinator: Coordinator, seconds: float) -> None:
    """After `claim(recorded=True)` and recording the job: once it is stored, make the
    claim last `seconds` from then."""
    name = envelope.unique
    assert name is not None
    if seconds > IN_FLIGHT_SECONDS:
        after_stored(lambda: coordinator.extend(name, envelope.id, seconds))


def release_finished(driver: Any, envelope: Envelope, outcome: str) -> None:
    """Lifecycle listener: free a finished unique job's lock (if it still holds it)."""
    if envelope.unique is None:
        return
    coordinator_for(driver).release(envelope.unique, envelope.id)
