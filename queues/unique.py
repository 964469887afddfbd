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
(`DispatchOutbox.discard`); a flush the backend refuses leaves the claim to
expire.
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

logger = logging.getLogger("queues.unique")

#: Prefix of every unique-job lock name.
UNIQUE_PREFIX = "unique:"


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
    envelope: Envelope, coordinator: Coordinator, seconds: float
) -> tuple[ExistingJobId | None, Callable[[], Any]]:
    """Claim `envelope.unique` for the envelope's id; `(existing id or None, undo)`.

    `undo` gives the claim back (when the job could not be stored after all)."""
    name = envelope.unique
    assert name is not None
    holder = coordinator.claim(name, envelope.id, seconds)
    if holder != envelope.id:
        logger.debug(
            "job %s not queued: unique lock %s is held by job %s", envelope.job, name, holder
        )
        return ExistingJobId(holder), lambda: None
    return None, lambda: coordinator.release(name, envelope.id)


def release_finished(driver: Any, envelope: Envelope, outcome: str) -> None:
    """Lifecycle listener: free a finished unique job's lock (if it still holds it)."""
    if envelope.unique is None:
        return
    coordinator_for(driver).release(envelope.unique, envelope.id)
