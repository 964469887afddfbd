"""The one hook point of a job's final outcome: succeeded or failed for good.

The worker calls `job_finished(driver, envelope, outcome)` once it has acked a
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

from queues.envelope import Envelope
from queues.unique import release_finished

logger = logging.getLogger("queues.lifecycle")

#: What `job_finished` reports.
OUTCOMES = ("succeeded", "failed")

#: A listener: `(driver, envelope, outcome)`.
Listener = Callable[[Any, Envelope, str], None]

_listeners: list[Listener] = [release_finished]


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
