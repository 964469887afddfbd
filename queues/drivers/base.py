"""The queue driver contract shared by the Redis and the database drivers.

Both drivers implement `QueueDriver` with identical semantics, and one contract
test suite (tests/test_driver_contract.py) runs against every driver:

* FIFO per queue: the oldest available job pops first.
* `pop` looks at several queues in priority order and, in one atomic step, makes
  due delayed jobs and expired reservations available, moves the head of the
  first non-empty queue into the reserved state, counts one attempt and records
  a lease of `retry_after` seconds.
* A reservation is fenced: `ack`, `release`, `extend` and `fail` succeed only
  while the caller's reservation is still the live one and its lease has not
  expired; otherwise they change nothing and return False.
* A job whose lease expired goes back to pending with its attempts counted; the
  worker fails it without running it when its attempts exceed its max_tries.
  The next reservation reports how long that abandoned attempt stayed
  unsettled (`ReservedJob.abandoned_after`), so the worker can tell an attempt
  that overran its timeout (and was ended by the hard limit) from one whose
  worker died early.
* A second copy of a job (same envelope id) is never reserved under the
  running copy's reservation, so it can neither settle nor hide it. Redis
  marks such a copy `duplicate_of` when it meets it while the job is reserved,
  and the worker moves it to the failed store; on SQL each copy is its own row,
  fenced on its own, and runs (see queues/drivers/database.py).
* Delays (`later`, `bulk`, `release`) must be finite (ValueError otherwise) and
  are capped at `queues.envelope.MAX_DELAY_SECONDS`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backends.errors import BackendError, BackendUnavailableError
from queues.envelope import JOB_ID_PATTERN
from queues.group_commit import GroupCommit

#: Seconds a reservation lasts without a heartbeat before another worker may take it.
DEFAULT_RETRY_AFTER = 90

#: Seconds a finished job's status is kept (the JOB_STATUS_RETENTION setting's
#: default; 0 writes none). Memory on Redis: one key of about 230 bytes per
#: finished job for this long (MEMORY USAGE), e.g. 100 jobs/s keep 360,000 keys, about 85 MB.
DEFAULT_STATUS_RETENTION = 3600

#: Least seconds a workflow's dispatch marks and a finished batch are kept,
#: whatever JOB_STATUS_RETENTION says: a step redone after a crash (its lease
#: expired, QUEUE_RETRY_AFTER) must still find the mark of what it queued.
MIN_WORKFLOW_RETENTION = 3600

#: Most characters of a failure reason kept in a job's status (its first line).
STATUS_REASON_CHARS = 500

#: The states `QueueDriver.job_status` reports.
JOB_STATES = ("queued", "running", "done", "failed")


#: A queue backend failed or is unreachable; the message names the backend. The
#: same class as `BackendError`, which the connections in `backends/` raise.
QueueError = BackendError


#: The queue backend cannot take work now (unreachable, timing out, locked,
#: refusing): an outage, not a fault of the job; callers hold their work and retry.
QueueUnavailable = BackendUnavailableError


@dataclass(frozen=True)
class ReservedJob:
    """A job held by one worker under a lease.

    `token` is the driver's proof of this reservation (fencing): a later
    reservation of the same job carries a different token. It is short (a
    nonce and row numbers), never the payload.
    """

    id: str  #: envelope id (uuid); the driver's fencing key (see `duplicate_of`)
    queue: str
    payload: str  #: the envelope JSON as stored, attempts counted
    attempts: int  #: attempts including the current one
    token: str
    available_at: float | None = None  #: unix due time; set only by take_for_transfer
    #: the envelope id of the job this entry is a second copy of, met while that
    #: job was reserved (Redis): the worker fails this copy and never runs it
    duplicate_of: str | None = None
    #: seconds the job's previous attempt stayed unsettled before its lease
    #: expired (None if the previous reservation was settled, or there was none)
    abandoned_after: float | None = None


@dataclass(frozen=True)
class QueueSizes:
    """How many jobs of one queue are in each state."""

    pending: int
    delayed: int
    reserved: int
    failed: int
    oldest_pending_age: float | None = None  #: seconds since the oldest pending job was created


@dataclass(frozen=True)
class FailedJob:
    """One entry of the failed store."""

    id: str  #: the failed-store id (a Redis record's uuid, a SQL row's number)
    connection: str
    queue: str
    payload: str
    exception: str
    failed_at: datetime
    #: the store's own handle on this very record, so it can remove exactly it
    ref: Any = field(default=None, compare=False, repr=False)

    @property
    def job_id(self) -> str | None:
        """The envelope id of the failed job, read from the payload's prefix."""
        match = JOB_ID_HEAD.match(self.payload)
        return match.group(1) if match else None


@dataclass(frozen=True)
class JobStatus:
    """Where one job is in its life, as `--job-status ID` prints it.

    `queued` and `running` are read from the queue's live state (no write is
    made for them); `done` and `failed` from the record the ack or the final
    fail wrote in the same atomic step, kept JOB_STATUS_RETENTION seconds.
    Times are unix seconds on the backend's clock; None when unknown.
    """

    job_id: str
    state: str  #: one of JOB_STATES
    queue: str
    connection: str
    job: str | None = None  #: the registered job name
    attempts: int | None = None  #: attempts so far (None when not known)
    started_at: float | None = None  #: when the running attempt was reserved
    finished_at: float | None = None
    reason: str | None = None  #: first line of the final failure's exception


def status_reason(exception: str) -> str:
    """The part of a failure text a job's status keeps: its first line, shortened."""
    first = exception.strip().splitlines()[0] if exception.strip() else ""
    return first[:STATUS_REASON_CHARS]


def payload_job_name(payload: str) -> str | None:
    """The `job` field of an envelope, read from its first KB without decoding it."""
    match = JOB_NAME_FIELD.search(payload, 0, 1024)
    return match.group(1) if match else None


#: The `"job":"Name"` member of an envelope (names are plain identifiers).
JOB_NAME_FIELD = re.compile(r'"job":"([^"\\]{1,255})"')


#: The id in an envelope's fixed prefix `{"attempts":N,"id":"..."`.
JOB_ID_HEAD = re.compile(r'^\{"attempts":-?[0-9]+,"id":"(' + JOB_ID_PATTERN.pattern + ')"')


class FailedStore(ABC):
    """Where permanently failed jobs are kept for inspection and retry.

    Every failed-job command accepts the failed id or the job id (`find`):
    the job id is the one `dispatch()` printed and every log line names, and
    it stays the same across retries.
    """

    #: which kind of store: "redis" (failed lists) or "database" (queue_failed_jobs)
    kind: str

    @abstractmethod
    def add(self, connection: str, queue: str, payload: str, exception: str) -> str:
        """Store one failed job; return its failed-store id."""

    @abstractmethod
    def all(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Failed jobs, newest first, optionally of one queue."""

    @abstractmethod
    def get(self, failed_id: str) -> FailedJob | None:
        """One failed job by its failed-store id, or None."""

    @abstractmethod
    def forget(self, failed_id: str) -> bool:
        """Delete one failed job; False when there was none with this id."""

    @abstractmethod
    def flush(self, older_than_days: float | None = None) -> int:
        """Delete all failed jobs, or those older than the given days; return the count."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of failed jobs per queue name."""

    @abstractmethod
    def find(self, key: str) -> FailedJob | None:
        """The job with failed id `key`, else the newest failed record of job id `key`."""

    @abstractmethod
    def oldest(self, queue: str, limit: int) -> list[FailedJob]:
        """The oldest `limit` failed jobs of one queue, oldest first."""

    @abstractmethod
    def remove(self, jobs: Sequence[FailedJob]) -> int:
        """Delete exactly these records (as read from this store); return how many went."""

    @abstractmethod
    def restore(self, job: FailedJob) -> str:
        """Add a record moved from another store, keeping its connection and failed_at."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues this store holds failed jobs of (or did)."""

    @abstractmethod
    def where(self, queue: str) -> str:
        """Where the failed jobs of `queue` live, for operators (a key, a table)."""


class QueueDriver(ABC):
    """Storage of pending, delayed and reserved jobs for one connection."""

    #: connection name: "redis" or "database"
    name: str

    def __init__(self, failed_store: FailedStore, retry_after: int = DEFAULT_RETRY_AFTER):
        self.failed_store = failed_store
        self.retry_after = retry_after
        #: seconds finished jobs' statuses and dispatch marks are kept (JOB_STATUS_RETENTION)
        self.status_retention = DEFAULT_STATUS_RETENTION
        self._group_commit: GroupCommit[tuple[str, str, float]] | None = None

    def enqueue(self, queue: str, payload: str, delay: float = 0.0) -> None:
        """Add one job durably, sharing a round trip with concurrent callers (group commit).

        Returns once the job is stored, like `push`/`later`; when several threads
        enqueue at the same time (the MQTT intake's handlers), their jobs are
        written together by one atomic `bulk` call. A lone caller pays one `push`
        or `later`, exactly as without batching.
        """
        group = self._group_commit
        if group is None:
            group = self._group_commit = GroupCommit(self._write_rows)
        group.write((queue, payload, delay))

    def _write_rows(self, rows: Sequence[tuple[str, str, float]]) -> None:
        if len(rows) > 1:
            self.bulk(rows)
            return
        queue, payload, delay = rows[0]
        if delay > 0:
            self.later(queue, payload, delay)
        else:
            self.push(queue, payload)

    @abstractmethod
    def push(self, queue: str, payload: str) -> None:
        """Append a job to the tail of `queue`, available now."""

    @abstractmethod
    def later(self, queue: str, payload: str, delay: float) -> None:
        """Add a job that becomes available `delay` seconds from now."""

    @abstractmethod
    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        """Add many `(queue, payload, delay)` jobs at once, in order, atomically."""

    @abstractmethod
    def pop(self, queues: Sequence[str], block: float = 0.0) -> ReservedJob | None:
        """Reserve the oldest available job of the first non-empty queue.

        With `block > 0`, wait up to that many seconds for a job: a job pushed
        meanwhile is picked up within milliseconds, and a delayed job that comes
        due meanwhile is picked up on time.
        """

    def pop_many(self, queues: Sequence[str], count: int, block: float = 0.0) -> list[ReservedJob]:
        """Reserve up to `count` jobs at once (a worker's prefetch), each under its own lease.

        The same as `count` calls of `pop` back to back (priority order, oldest
        first, one attempt counted and one fenced lease per job), in as few
        round trips as the driver can: a prefetched job whose worker dies comes
        back when its own lease expires. Waits like `pop` only while nothing is
        available; an empty list means none came within `block` seconds. This
        default pops one job; the drivers reserve several per round trip.
        """
        job = self.pop(queues, block)
        return [] if job is None else [job]

    def ack_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Ack several finished jobs (a worker's batch settle); one verdict per job, in order.

        Each verdict is what `ack` would return for that job: fenced per job.
        This default acks one by one; the drivers settle a batch per queue in
        one atomic call.
        """
        return [self.ack(job) for job in jobs]

    def extend_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Heartbeat of every job a worker process holds; one verdict per job, fenced per job."""
        return [self.extend(job) for job in jobs]

    @abstractmethod
    def ack(self, job: ReservedJob) -> bool:
        """Delete a finished job. False (and no change) if the reservation is not live."""

    @abstractmethod
    def release(self, job: ReservedJob, delay: float = 0.0, *, undo_attempt: bool = False) -> bool:
        """Give a job back for another attempt after `delay` seconds. Fenced like `ack`.

        With `undo_attempt=True` the attempt this reservation counted is taken
        back (the worker was stopped before the job could finish: like Sidekiq's
        shutdown requeue, that must not spend the job's max_tries budget).
        """

    @abstractmethod
    def extend(self, job: ReservedJob) -> bool:
        """Heartbeat: renew the lease to `retry_after` seconds from now. Fenced like `ack`."""

    @abstractmethod
    def fail(self, job: ReservedJob, exception: str) -> bool:
        """Move a job to the failed store with its exception text. Fenced like `ack`."""

    @abstractmethod
    def sizes(self, queue: str) -> QueueSizes:
        """Counts of the queue's jobs per state, read from live state."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues that hold any pending, delayed or reserved job."""

    @abstractmethod
    def take_for_transfer(self, queue: str, limit: int) -> list[ReservedJob]:
        """Reserve up to `limit` pending, delayed and lease-expired jobs for a migration.

        Used by `--queue-migrate`: each returned job has `available_at` set,
        `attempts` and `payload` as the job should arrive in the target (no
        attempt is counted for the move), and stays leased (so a crash returns
        it) until it is acked. The transfer's token is fenced against the
        reservation it replaces: a worker whose lease expired before the
        migration took its job can no longer ack, release, extend or fail it.
        """

    @abstractmethod
    def contains(self, queue: str, job_id: str) -> bool:
        """True if a job with this envelope id is pending, delayed or reserved.

        Redis answers from its id index in O(1): an entry written by hand is
        seen once a pop or migration has reserved it.
        """

    @abstractmethod
    def clear(self, queue: str) -> int:
        """Delete every pending, delayed and reserved job of `queue`; return the count."""

    @property
    def workflow_retention(self) -> int:
        """Seconds dispatch marks and finished batches are kept (>= MIN_WORKFLOW_RETENTION)."""
        return max(self.status_retention, MIN_WORKFLOW_RETENTION)

    def dispatch_once(self, queue: str, payload: str, delay: float = 0.0) -> bool:
        """Add a job unless its id was dispatched once before (within the retention).

        For workflow steps whose ids are deterministic (a chain's next link, a
        batch's callbacks): the check and the add are one atomic step, so a
        step redone after a crash queues nothing twice. True if it was added.
        """
        raise NotImplementedError(f"the {self.name} driver has no dispatch_once")

    def job_status(self, job_id: str) -> JobStatus | None:
        """The status of the job with this envelope id, or None if none is known."""
        raise NotImplementedError(f"the {self.name} driver keeps no job status")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by the driver."""
