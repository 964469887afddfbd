"""Every failed store at once: what the operator's failed-job commands read and change.

Failed jobs may live in more than one store: the `queue_failed_jobs` table and
the Redis lists `routemq:queue:failed:{name}` (a Redis deployment that later
enabled a database keeps its old records there). `FailedStores` reads all of
them, so no failed job is hidden, and each record is listed and counted once,
with the store it lives in. A record is found by its failed id or by its job
id (`FailedStore.find`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from queues.drivers.base import FailedJob, FailedStore


@dataclass(frozen=True)
class FailedEntry:
    """One failed job and the store that holds it."""

    store: FailedStore
    job: FailedJob


@dataclass(frozen=True)
class FailedCount:
    """How many failed jobs of one queue one store holds, and where."""

    store: str  #: the store's kind: "redis" or "database"
    queue: str
    count: int
    where: str  #: a Redis key or a table, for operators


def _utc(stamp: datetime) -> datetime:
    """Aware UTC time (SQL stores naive UTC wall-clock times)."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


class FailedStores:
    """The failed stores of this deployment, the configured one first."""

    def __init__(self, stores: Sequence[FailedStore]) -> None:
        self.stores = list(stores)

    def all(self, queue: str | None = None, limit: int = 100) -> list[FailedEntry]:
        """The newest `limit` failed jobs over every store, newest first."""
        entries = [
            FailedEntry(store, job) for store in self.stores for job in store.all(queue, limit)
        ]
        entries.sort(key=lambda entry: _utc(entry.job.failed_at), reverse=True)
        return entries[:limit]

    def find(self, key: str) -> FailedEntry | None:
        """The job with failed id `key`, else the newest failed record of job id `key`."""
        hits = [
            FailedEntry(store, job) for store in self.stores if (job := store.find(key)) is not None
        ]
        exact = [entry for entry in hits if entry.job.id == key]
        if exact:
            return exact[0]
        return max(hits, key=lambda entry: _utc(entry.job.failed_at), default=None)

    def oldest(self, queue: str | None, limit: int) -> list[FailedEntry]:
        """Up to `limit` of the oldest failed jobs of each queue of each store."""
        entries: list[FailedEntry] = []
        for store in self.stores:
            names = [queue] if queue is not None else store.queues()
            for name in names:
                entries.extend(FailedEntry(store, job) for job in store.oldest(name, limit))
        return entries

    def remove(self, entries: Sequence[FailedEntry]) -> int:
        """Delete exactly these records, each from its own store; return how many went."""
        removed = 0
        for store in self.stores:
            jobs = [entry.job for entry in entries if entry.store is store]
            if jobs:
                removed += store.remove(jobs)
        return removed

    def counts(self) -> list[FailedCount]:
        """Failed jobs per store and queue (each record counted once, where it lives)."""
        return [
            FailedCount(store.kind, queue, count, store.where(queue))
            for store in self.stores
            for queue, count in sorted(store.counts().items())
        ]

    def flush(self, older_than_days: float | None = None) -> int:
        """Delete every failed job (or those older than the given days) in every store."""
        return sum(store.flush(older_than_days) for store in self.stores)
