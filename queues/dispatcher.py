"""Put jobs on a queue: `dispatch(job)` and `dispatch_many(jobs)`.

A job is turned into a JSON `Envelope` (never pickle) carrying its registered
name, its data and its retry policy. Every check that can fail - data that is
not JSON, a class the workers would not recognise, a bad backoff - fails here,
in the dispatching process, before anything is queued.

The `sync` connection (queues/sync.py) runs the job at once instead; inside a
test's `fake_queue()` or `sync_queue()` every dispatch goes to that stand-in
(queues/substitution.py), after the same checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from queues import connections, substitution, unique
from queues.coordination import coordinator_for
from queues.drivers.base import QueueDriver
from queues.envelope import (
    MAX_PAYLOAD_BYTES,
    Envelope,
    EnvelopeError,
    check_fields,
    checked_delay,
    utf8_size,
    validate_queue_name,
)
from queues.job import Job, JobDataError
from queues.outbox import JobSink, PendingJob, recorded
from queues.registry import JobRegistry, get_registry
from queues.sync import SYNC_QUEUE, SyncQueue


class UnregisteredJobError(LookupError):
    """The dispatched class is not the one workers would run under its name."""


def build_envelope(
    job: Job,
    queue: str | None = None,
    registry: JobRegistry | None = None,
    now: float | None = None,
) -> Envelope:
    """The envelope of `job`, validated: JSON data, registered class, sane policy."""
    if not isinstance(job, Job):
        raise TypeError(f"dispatch() takes a Job instance, got {type(job).__name__}")
    cls = type(job)
    name = cls.job_name()
    reg = registry or get_registry()
    if name not in reg or reg.resolve(name) is not cls:
        raise UnregisteredJobError(
            f"job {name!r} ({cls.__module__}.{cls.__qualname__}) is not registered in "
            f"{reg.package}: define it in a module of that package so workers can run it"
        )
    data = job.validated_data()
    try:
        target_queue = validate_queue_name(queue or cls.queue)
    except ValueError as exc:
        raise JobDataError(f"{name}: {exc}") from None
    created = time.time() if now is None else now
    timeout = cls.timeout
    envelope = Envelope(
        job=name,
        data=data,
        queue=target_queue,
        max_tries=cls.max_tries,
        timeout=float(timeout)
        if isinstance(timeout, int) and not isinstance(timeout, bool)
        else timeout,
        backoff=list(cls.backoff) if isinstance(cls.backoff, tuple) else cls.backoff,
        retry_until=job.retry_deadline(created),
        created_at=created,
    )
    try:
        check_fields(envelope.as_dict())  # the worker's own rules: what it would refuse
    except EnvelopeError as exc:
        detail = str(exc).replace("payload field", "field", 1)
        raise JobDataError(f"{name} cannot be queued: {detail}") from None
    return envelope


def envelope_json(envelope: Envelope) -> str:
    """The envelope as stored; `JobDataError` if it is larger than a worker accepts."""
    text = envelope.to_json()
    if len(text) * 4 > MAX_PAYLOAD_BYTES and utf8_size(text) > MAX_PAYLOAD_BYTES:
        raise JobDataError(
            f"{envelope.job} is {utf8_size(text)} bytes as JSON; the limit is "
            f"{MAX_PAYLOAD_BYTES} (MAX_PAYLOAD_BYTES): pass a reference to large data instead"
        )
    return text


def _target(connection: str | QueueDriver | None) -> JobSink | SyncQueue:
    """Where jobs for `connection` go: a test's stand-in, the sync queue, or a driver."""
    substitute = substitution.current()
    if substitute is not None:
        target: JobSink | SyncQueue = substitute.target(connection)
        return target
    if isinstance(connection, QueueDriver):
        return connection
    name = connection or connections.current_settings().queue_connection
    if name == SYNC_QUEUE.name:
        return SYNC_QUEUE
    return connections.get_driver(name)


def dispatch(
    job: Job,
    delay: float | None = None,
    queue: str | None = None,
    connection: str | QueueDriver | None = None,
    *,
    registry: JobRegistry | None = None,
    unique_for: float | None = None,
) -> str:
    """Queue one job and return its id (a uuid string).

    `unique_for` (seconds; default the class's `unique_for`) makes the job
    unique by its `unique_id()` while it is queued or running, at most that
    long: a dispatch that finds such a job queues nothing and returns that job's
    id as a `queues.unique.ExistingJobId` (see queues/unique.py).

    `delay` (seconds) defaults to the class's `delay`; `queue` to its `queue`;
    `connection` ("redis", "database" or a driver) to QUEUE_CONNECTION. Raises
    `JobDataError` / `UnregisteredJobError` before queueing anything.

    Outside an MQTT handler the job is stored before this returns
    (`QueueUnavailable` when the backend cannot be reached), and concurrent
    callers share round trips (`QueueDriver.enqueue`). Inside a handler run by
    the intake it is recorded and stored with the jobs of the other messages of
    its batch before its message is acknowledged; if the handler raises, it is
    never stored (see queues/outbox.py). On the `sync` connection the job has
    run (or raised) when this returns.
    """
    envelope = build_envelope(job, queue, registry)
    seconds = unique.unique_seconds(job, unique_for)
    if seconds is not None:
        envelope.unique = unique.lock_name(job)
    text = envelope_json(envelope)
    target, wait = _target(connection), _delay(job, delay)
    undo = None
    pending = recorded()
    if seconds is not None:
        coordinator = coordinator_for(target)
        in_outbox = pending is not None and not isinstance(target, SyncQueue)
        existing, undo = unique.claim(envelope, coordinator, seconds, in_outbox)
        if existing is not None:
            return existing
    if isinstance(target, SyncQueue):
        try:
            target.run(envelope, registry or get_registry())
        finally:
            if undo is not None:
                undo()
        return envelope.id
    if pending is not None:
        pending.append(PendingJob(target, envelope.queue, text, wait, undo))
        if seconds is not None:
            unique.confirm_when_stored(envelope, coordinator, seconds)
        return envelope.id
    try:
        target.enqueue(envelope.queue, text, wait)
    except BaseException:
        if undo is not None:
            undo()
        raise
    return envelope.id


def dispatch_many(
    jobs: Iterable[Job],
    delay: float | None = None,
    queue: str | None = None,
    connection: str | QueueDriver | None = None,
    *,
    registry: JobRegistry | None = None,
) -> list[str]:
    """Queue many jobs in one atomic driver call, in order; return their ids.

    Every job is validated first: one bad job queues none. Inside an MQTT
    handler they are recorded and stored like `dispatch`'s. On the `sync`
    connection they run one after the other; the first that fails stops the rest.
    A job whose class sets `unique_for` is dropped (its place in the result is
    the existing job's id) when its unique id is taken, as with `dispatch`.
    """
    now = time.time()
    envelopes: list[Envelope] = []
    rows: list[tuple[str, str, float]] = []
    unique_jobs: list[tuple[int, float]] = []
    for job in jobs:
        envelope = build_envelope(job, queue, registry, now)
        seconds = unique.unique_seconds(job, None)
        if seconds is not None:
            envelope.unique = unique.lock_name(job)
            unique_jobs.append((len(envelopes), seconds))
        envelopes.append(envelope)
        rows.append((envelope.queue, envelope_json(envelope), _delay(job, delay)))
    ids: list[str] = [envelope.id for envelope in envelopes]
    if not rows:
        return ids
    target = _target(connection)
    pending = recorded()
    in_outbox = pending is not None and not isinstance(target, SyncQueue)
    undo: dict[int, Callable[[], Any]] = {}
    for index, seconds in unique_jobs:
        coordinator = coordinator_for(target)
        existing, undo[index] = unique.claim(envelopes[index], coordinator, seconds, in_outbox)
        if existing is not None:
            ids[index] = existing
    kept = [i for i in range(len(envelopes)) if not isinstance(ids[i], unique.ExistingJobId)]
    if isinstance(target, SyncQueue):
        try:
            for index in kept:
                target.run(envelopes[index], registry or get_registry())
        finally:
            for release in undo.values():
                release()
        return ids
    if pending is not None:
        pending.extend(PendingJob(target, *rows[i], undo.get(i)) for i in kept)
        for index, seconds in unique_jobs:
            if index in kept:
                unique.confirm_when_stored(envelopes[index], coordinator_for(target), seconds)
        return ids
    try:
        if kept:
            target.bulk([rows[i] for i in kept])
    except BaseException:
        for release in undo.values():
            release()
        raise
    return ids


def _delay(job: Job, delay: float | None) -> float:
    """Seconds before the job is due: refused unless finite and >= 0, capped at
    MAX_DELAY_SECONDS (see `queues.envelope.checked_delay`)."""
    wait = type(job).delay if delay is None else delay
    name = type(job).job_name()
    try:
        capped = checked_delay(wait, f"{name} delay")
    except ValueError as exc:
        raise JobDataError(str(exc)) from None
    if wait < 0:
        raise JobDataError(f"{name} delay must be seconds >= 0, got {wait!r}")
    return capped
