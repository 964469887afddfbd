"""The points of the worker loop that the rest of a worker process may watch.

`Worker` (queues/worker.py) calls these hooks on its own thread; the base class
does nothing, so a worker without observers pays one method call per hook.
`queues.worker_monitor.WorkerMonitor` implements them for metrics, health, the
dashboard's list of workers and `--queue-restart`. A hook must be quick (no
round trip: per-job paths are hot) and must not raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from queues.drivers.base import ReservedJob
    from queues.envelope import Envelope
    from queues.worker import Worker

#: What `job_settled` reports: the job was acked, released for a retry, or failed.
SETTLE_ACTIONS = ("ack", "release", "fail")


class WorkerEvents:
    """Hooks of the worker loop; every one does nothing here."""

    def worker_started(self, worker: Worker) -> None:
        """The loop starts."""

    def between_jobs(self) -> str | None:
        """Called at each turn of the loop: a reason to exit after this turn, or None."""
        return None

    def job_reserved(self, reserved: ReservedJob) -> None:
        """A job was reserved; the worker processes it now."""

    def job_started(self, reserved: ReservedJob, envelope: Envelope) -> None:
        """The job's `handle()` is about to run (it passed every check)."""

    def job_settled(self, reserved: ReservedJob, action: str) -> None:
        """The job was acked, released or failed (`action`, one of SETTLE_ACTIONS)."""

    def job_done(self, reserved: ReservedJob) -> None:
        """The worker is done with the job (settled or not)."""

    def worker_stopped(self) -> None:
        """The loop ended."""
