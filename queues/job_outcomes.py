"""The worker's one hook point for job outcomes (agreements: item 3).

`before_settle(driver, reserved, action)` is called by `Worker._settle` right
before a job is acked (`ack`), released for a retry (`release`) or failed for
good (`fail`). Each hook of `HOOKS` is a function of those three arguments
that returns quickly for jobs it does not care about (per-job hot path: no
round trip, no decode unless the job is its own). A hook that raises stops the
settle: the job stays reserved and runs again after its lease, so hooks must be
idempotent (queues/workflows.py queues next steps with `dispatch_once`).
"""

from __future__ import annotations

from collections.abc import Callable

from queues.drivers.base import QueueDriver, ReservedJob
from queues.workflows import before_settle as workflow_step

#: A hook: (the worker's driver, the job, "ack" | "release" | "fail") -> None.
OutcomeHook = Callable[[QueueDriver, ReservedJob, str], None]

#: Every hook, called in order before each settle.
HOOKS: tuple[OutcomeHook, ...] = (workflow_step,)


def before_settle(driver: QueueDriver, reserved: ReservedJob, action: str) -> None:
    """Run every hook for a job about to be settled; an exception stops the settle."""
    for hook in HOOKS:
        hook(driver, reserved, action)
