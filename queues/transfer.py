"""Move pending and delayed jobs from one driver to another (`--queue-migrate`).

For each batch: the source leases the jobs without counting an attempt
(`take_for_transfer`), each job is added to the target unless the target already
holds its id (`contains`), keeping its remaining delay, and only then is it
deleted from the source (`ack`). So:

* no loss: a job leaves the source only after it is in the target; if the run
  is interrupted, its leased jobs stay in the source (reserved) until the lease
  (QUEUE_RETRY_AFTER) expires;
* no duplicate on a re-run: a job already copied is recognised by its id and
  only deleted from the source.

A re-run after a dead run's lease expired takes those jobs again (the drivers
hand out expired leases to a migration, fenced against their old holder), so it
finishes the move.

Each job's lease is renewed (`extend`) right before it is copied, and a job
whose lease was lost meanwhile is skipped, not copied: a slow target cannot
make a batch outlive its leases and have source workers run jobs that are also
copied.

Remaining window: if a copied job is run and finished by a target worker, and
the transfer dies before acking it in the source, the source's copy comes back
when its lease expires and a re-run moves it again (the target no longer has
that id). Stop the target's workers while migrating to close it.
Reserved (running) jobs are not moved: they finish where they are.

An entry of the source that is not a valid envelope (garbage, too large, too
deep, wrong field types) is moved to the source's failed store with the reason
instead of being copied, so it neither stops the migration nor reaches the
target.

Failed jobs move too (`transfer_failed`): from the source's failed store to the
target's, oldest first, in batches; each batch is written to the target before
it is removed from the source, so an interruption loses none (it may leave one
batch in both stores, which a re-run does not copy again only if the run got
as far as removing it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from queues.drivers.base import FailedStore, QueueDriver
from queues.envelope import Envelope, EnvelopeError

#: Jobs leased from the source per round trip; small, so leases stay short-lived.
TRANSFER_BATCH = 20
#: Failed records moved per round by `transfer_failed`.
FAILED_TRANSFER_BATCH = 200


@dataclass
class TransferReport:
    """What a transfer did, per queue."""

    moved: dict[str, int] = field(default_factory=dict)  #: added to the target
    already_there: dict[str, int] = field(default_factory=dict)  #: copied by an earlier run
    lost_lease: dict[str, int] = field(default_factory=dict)  #: lease lost before copy or ack
    refused: dict[str, int] = field(default_factory=dict)  #: not an envelope: failed in source

    @property
    def total_moved(self) -> int:
        """Jobs added to the target over all queues."""
        return sum(self.moved.values())


def transfer(
    source: QueueDriver,
    target: QueueDriver,
    queues: list[str] | None = None,
    batch: int = TRANSFER_BATCH,
    progress: Callable[[int], object] | None = None,
) -> TransferReport:
    """Move every pending and delayed job of `queues` (default: all) from source to target.

    `progress(n)` is called after each batch with the number of jobs it handled.
    """
    if source is target:
        raise ValueError("source and target of a queue migration must differ")
    report = TransferReport()
    for queue in queues if queues is not None else source.queues():
        moved = already = lost = refused = 0
        while True:
            jobs = source.take_for_transfer(queue, batch)
            if not jobs:
                break
            for job in jobs:
                if not source.extend(job):
                    lost += 1  # a worker took it after the lease ran out: it stays there
                    continue
                try:
                    Envelope.from_json(job.payload)
                except EnvelopeError as exc:
                    reason = f"EnvelopeError: {exc} (found by a queue migration of {queue!r})"
                    refused += source.fail(job, f"{reason}\n\npayload: {job.payload[:2000]}")
                    continue
                if target.contains(queue, job.id):
                    already += 1
                else:
                    delay = 0.0 if job.available_at is None else job.available_at - time.time()
                    if delay > 0:
                        target.later(queue, job.payload, delay)
                    else:
                        target.push(queue, job.payload)
                    moved += 1
                if not source.ack(job):
                    lost += 1
            if progress is not None:
                progress(len(jobs))
        report.moved[queue] = moved
        report.already_there[queue] = already
        report.lost_lease[queue] = lost
        report.refused[queue] = refused
    return report


def transfer_failed(
    source: FailedStore,
    target: FailedStore,
    queues: list[str] | None = None,
    batch: int = FAILED_TRANSFER_BATCH,
) -> dict[str, int]:
    """Move the failed jobs of `queues` (default: all) from one failed store to another.

    Oldest first, keeping each record's connection, queue, payload, exception
    and failed time; returns how many moved per queue (queues with none are
    left out).
    """
    if source is target:
        return {}
    moved: dict[str, int] = {}
    for queue in queues if queues is not None else source.queues():
        count = 0
        while jobs := source.oldest(queue, batch):
            for job in jobs:
                target.restore(job)
            removed = source.remove(jobs)
            count += removed
            if removed < len(jobs):
                break  # a concurrent command moved some: stop rather than copy them again
        if count:
            moved[queue] = count
    return moved
