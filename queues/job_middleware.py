"""Job middleware: code the worker runs around a job's `handle()`.

A job lists its middleware in `middleware()` (outermost first); each is an
object with `handle(job, next)` that calls `next(job)` to run the rest (later
middleware, then `handle()`, awaited when it is `async def`) or raises
`ReleaseJob(delay)` to give the job back without running it: the worker
releases it for another try after `delay` seconds and takes back the attempt
this reservation counted, so waiting for a limit never spends `max_tries`.

Shipped, both atomic across processes and machines on the worker's own backend
(queues/coordination.py):

* `RateLimited(key, limit, per)`: at most `limit` jobs with this key start in
  any `per` seconds (sliding window); the others are released until a pass frees up.
* `WithoutOverlapping(key)`: two jobs with the same key never run at once; the
  second is released after `release_after` seconds. The lock lasts the job's
  timeout plus `LOCK_MARGIN` (or `expires_after` without a timeout), so a
  worker that died holding it blocks the key no longer than that.

`key` is a string or a callable taking the job (`lambda job: job.device_id`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from queues.coordination import Coordinator, coordinator_for
from queues.job import Job
from queues.timeouts import HARD_LIMIT_GRACE

#: Seconds an overlap lock outlives the job's timeout (its hard limit and a settle).
LOCK_MARGIN = HARD_LIMIT_GRACE + 5.0
#: Seconds an overlap lock lasts for a job without a timeout (WithoutOverlapping).
DEFAULT_LOCK_SECONDS = 300.0
#: Seconds before a job refused by WithoutOverlapping is tried again.
DEFAULT_RELEASE_AFTER = 1.0

#: The rest of the chain as a job middleware sees it.
JobNext = Callable[[Job], Any]

_coordinator: ContextVar[Coordinator | None] = ContextVar("job_coordinator", default=None)


class JobMiddleware(Protocol):
    """Anything with `handle(job, next)`."""

    def handle(self, job: Job, next: JobNext) -> Any: ...


class ReleaseJob(Exception):
    """Raised by job middleware: give the job back for another try after `delay` seconds."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"released for {delay:g} s")
        self.delay = max(float(delay), 0.0)


def current_coordinator() -> Coordinator:
    """The coordinator of the worker running the current job (process-local outside one)."""
    found = _coordinator.get()
    return found if found is not None else coordinator_for(None)


@contextmanager
def coordinating(driver: Any) -> Iterator[None]:
    """Make `current_coordinator()` the one beside `driver` while inside."""
    token = _coordinator.set(coordinator_for(driver))
    try:
        yield
    finally:
        _coordinator.reset(token)


def run_job(job: Job, handle: JobNext, driver: Any) -> None:
    """Run `handle(job)` through the job's middleware (none: a direct call)."""
    chain = job.middleware()
    if not chain:
        handle(job)
        return
    call = handle
    for item in reversed(chain):
        call = _link(item, call)
    with coordinating(driver):
        call(job)


def _link(middleware: JobMiddleware, rest: JobNext) -> JobNext:
    def step(job: Job) -> Any:
        return middleware.handle(job, rest)

    return step


def _key_of(key: str | Callable[[Job], str], job: Job) -> str:
    value = key(job) if callable(key) else key
    if not isinstance(value, str) or not value:
        raise ValueError(f"job {job.job_name()}: middleware key must be a non-empty str")
    return value


class RateLimited:
    """At most `limit` jobs with `key` start per `per` seconds, across all workers;
    the others are released until the window has room (see the module docstring)."""

    def __init__(self, key: str | Callable[[Job], str], limit: int, per: float) -> None:
        from queues.coordination import check_limit

        check_limit(limit, per)
        self.key, self.limit, self.per = key, limit, float(per)

    def handle(self, job: Job, next: JobNext) -> Any:
        """Pass the job on if the limit has room, else raise `ReleaseJob` with the wait."""
        name = f"job:{_key_of(self.key, job)}"
        wait = current_coordinator().take(name, self.limit, self.per)
        if wait > 0:
            raise ReleaseJob(wait, f"rate limit {name} ({self.limit} per {self.per:g} s) is full")
        return next(job)

    def __repr__(self) -> str:
        return f"RateLimited({self.key!r}, {self.limit}, {self.per:g})"


class WithoutOverlapping:
    """Two jobs with `key` never run at once; the second is released after
    `release_after` seconds (see the module docstring)."""

    def __init__(
        self,
        key: str | Callable[[Job], str],
        release_after: float = DEFAULT_RELEASE_AFTER,
        expires_after: float = DEFAULT_LOCK_SECONDS,
    ) -> None:
        self.key, self.release_after, self.expires_after = key, release_after, expires_after

    def handle(self, job: Job, next: JobNext) -> Any:
        """Run the job holding the key's lock, or raise `ReleaseJob` if another holds it."""
        name = f"overlap:{_key_of(self.key, job)}"
        timeout = type(job).timeout
        ttl = self.expires_after if timeout is None else float(timeout) + LOCK_MARGIN
        token = f"{job.job_id}:{uuid.uuid4().hex[:12]}"
        coordinator = current_coordinator()
        if coordinator.claim(name, token, ttl) != token:
            raise ReleaseJob(self.release_after, f"{name} is held by another job")
        try:
            return next(job)
        finally:
            coordinator.release(name, token)

    def __repr__(self) -> str:
        return f"WithoutOverlapping({self.key!r})"
