"""The one hook point of a job's final outcome: succeeded or failed for good.

Two moments, for two kinds of work:

* `before_settle(driver, reserved, action)` runs right BEFORE the worker acks
  (`"ack"`), releases (`"release"`) or finally fails (`"fail"`) a job, for work
  that must happen at least once per outcome and be redone after a crash:
  chains queue their next link, batches count the job and queue due callbacks
  (queues/workflows.py, idempotent by deterministic ids). Its hooks must return
  at once for jobs that are not theirs (a prefix match, no round trip). A hook
  that raises stops the settle: the job stays reserved and runs again after its
  lease.
* `job_finished(driver, envelope, outcome)` runs AFTER the worker has acked a
  job (`"succeeded"`) or moved it to the failed store for good (`"failed"`),
  never for a release (the job comes back). Features that act on a job's end
register a listener here instead of editing the worker: the unique-job lock is
released by `queues.unique.release_finished`. A listener must be quick for jobs
that are not its own (a field check) and never raise; its errors are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from queues.drivers.base import QueueDriver, ReservedJob
from queues.envelope import Envelope
from queues.unique import release_finished
from queues.workflows import before_settle as workflow_step

logger = logging.getLogger("queues.lifecycle")

#: What `job_finished` reports.
OUTCOMES = ("succeeded", "failed")

#: A listener: `(driver, envelope, outcome)`.
Listener = Callable[[Any, Envelope, str], None]

_listeners: list[Listener] = [release_finished]

#: A before-settle hook: `(driver, reserved job, "ack" | "release" | "fail")`.
SettleHook = Callable[[QueueDriver, ReservedJob, str], None]

#: Every before-settle hook, called in order.
SETTLE_HOOKS: tuple[SettleHook, ...] = (workflow_step,)


def before_settle(driver: QueueDriver, reserved: ReservedJob, action: str) -> None:
    """Run every before-settle hook for a job about to be settled; an exception stops the
    settle (the worker logs it and the job comes back after its lease)."""
    for hook in SETTLE_HOOKS:
        hook(driver, reserved, action)


def add_listener(listener: Listener) -> None:
    """Call `listener(driver, envelope, outcome)` at every job's final outcome."""
    if listener not in _listeners:
        _listeners.append(listener)


def job_finished(driver: Any, envelope: Envelope, outcome: str) -> None:
    """Tell every listener that the job of `envelope` ended with `outcome`; never raises."""
    for listener in _listeners:
        try:
            listener(driver, envelope, outcome)
        except Exception as exc:
            logger.error(
                "job %s %s: %s listener failed: %s", envelope.job, envelope.id, outcome, exc
            )
