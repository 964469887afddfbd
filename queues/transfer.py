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

Known gap (drivers): `take_for_transfer` takes only pending and delayed jobs, so
the jobs a dead run had leased come back only through a worker's `pop` once the
lease expires, and a worker then runs a job that may already be in the target.
Until the drivers also hand out expired transfer leases, re-run the migration
with the source's workers stopped and check `--queue-status` for reserved jobs.

Remaining window: if a copied job is run and finished by a target worker, and
the transfer dies before acking it in the source, the source's copy comes back
when its lease expires and a re-run moves it again (the target no longer has
that id). Stop the target's workers while migrating to close it.
Reserved (running) jobs are not moved: they finish where they are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from queues.drivers.base import QueueDriver

#: Jobs leased from the source per round trip.
TRANSFER_BATCH = 100


@dataclass
class TransferReport:
    """What a transfer did, per queue."""

    moved: dict[str, int] = field(default_factory=dict)  #: added to the target
    already_there: dict[str, int] = field(default_factory=dict)  #: copied by an earlier run
    lost_lease: dict[str, int] = field(default_factory=dict)  #: source ack refused

    @property
    def total_moved(self) -> int:
        """Jobs added to the target over all queues."""
        return sum(self.moved.values())


def transfer(
    source: QueueDriver,
    target: QueueDriver,
    queues: list[str] | None = None,
    batch: int = TRANSFER_BATCH,
) -> TransferReport:
    """Move every pending and delayed job of `queues` (default: all) from source to target."""
    if source is target:
        raise ValueError("source and target of a queue migration must differ")
    report = TransferReport()
    for queue in queues if queues is not None else source.queues():
        moved = already = lost = 0
        while True:
            jobs = source.take_for_transfer(queue, batch)
            if not jobs:
                break
            for job in jobs:
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
        report.moved[queue] = moved
        report.already_there[queue] = already
        report.lost_lease[queue] = lost
    return report
