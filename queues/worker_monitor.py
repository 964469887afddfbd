"""What a worker process shows of itself: metrics, health, its entry on the board, restarts.

`WorkerMonitor` implements the worker loop's hooks (queues/worker_events.py):

* Metrics (when the process records them, support/metrics.py), labelled by job
  class and queue (a job that never started because it was malformed or not
  registered counts as `job="(unknown)"`, so a garbage entry cannot add series):
  `queue_jobs_started_total`, `queue_jobs_finished_total{outcome}` (succeeded,
  retried, failed), `queue_job_seconds` (handle() start to settle),
  `queue_job_pickup_seconds` (dispatch to the start of the first attempt; a
  delayed job's delay is included), and the gauges `queue_worker_up` and
  `queue_worker_busy` (sums over the live processes of a `--workers N` run).
* Health: the loop turns (`between_jobs`) at least every `--sleep` plus a
  margin, or is running a job (jobs bound their own time).
* The worker board (queues/worker_board.py): a background thread reports the
  worker's state every REPORT_INTERVAL seconds and reads the restart marker;
  when `--queue-restart` moved it since the worker started, the worker exits
  after its current job (code 0, so its supervisor starts a fresh one).

The per-job hooks only update memory and metric values: no round trip.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from queues.worker_board import REPORT_INTERVAL, WorkerBoard
from queues.worker_events import WorkerEvents
from support.health import LoopMonitor

if TYPE_CHECKING:
    from queues.drivers.base import ReservedJob
    from queues.envelope import Envelope
    from queues.worker import Worker

log = logging.getLogger("queues.worker")

#: Job label of an entry that never started (malformed, unknown job name).
UNKNOWN_JOB = "(unknown)"
#: Seconds the loop may take beyond `--sleep` between two turns before /health fails.
LOOP_STALL_MARGIN = 30.0
#: Upper bounds of the job duration buckets, seconds.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: Upper bounds of the pickup latency buckets, seconds.
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: What `job_settled` actions count as.
OUTCOMES = {"ack": "succeeded", "release": "retried", "fail": "failed"}
#: Jobs that ran and whose settle was never reported, kept before the oldest is forgotten.
MAX_UNSETTLED = 1024


class WorkerMetrics:
    """The metric objects of a worker process (one set per process: `worker_metrics`)."""

    def __init__(self) -> None:
        self.started = Counter("queue_jobs_started", "Job attempts started", ["job", "queue"])
        self.finished = Counter(
            "queue_jobs_finished",
            "Job attempts settled: succeeded, retried or failed",
            ["job", "queue", "outcome"],
        )
        self.seconds = Histogram(
            "queue_job_seconds",
            "Time from a job's start to its settlement",
            ["job", "queue"],
            buckets=JOB_BUCKETS,
        )
        self.pickup = Histogram(
            "queue_job_pickup_seconds",
            "Time from dispatch to the start of a job's first attempt",
            ["queue"],
            buckets=PICKUP_BUCKETS,
        )
        self.up = Gauge("queue_worker_up", "Worker processes running", multiprocess_mode="livesum")
        self.busy = Gauge(
            "queue_worker_busy", "Worker processes running a job now", multiprocess_mode="livesum"
        )


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """The process's worker metrics, registered on first use."""
    return WorkerMetrics()


class WorkerMonitor(WorkerEvents):
    """Metrics, health, board entry and restart of one worker (see the module docstring).

    `board` None: no board (no dashboard entry, no `--queue-restart`);
    `record_metrics` False: no metrics.
    """

    def __init__(
        self,
        name: str,
        board: WorkerBoard | None,
        record_metrics: bool,
        report_interval: float = REPORT_INTERVAL,
    ) -> None:
        self.name = name
        self.board = board
        self.metrics = worker_metrics() if record_metrics else None
        self.report_interval = report_interval
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.loop = LoopMonitor("the worker loop", LOOP_STALL_MARGIN)
        self._worker: Worker | None = None
        self._started_at = time.time()
        self._current: dict[str, Any] | None = None
        #: job name and start (monotonic) of each job that ran, by reservation token, until
        #: its settle is reported: acks come in batches after the job is done
        self._ran: dict[str, tuple[str, float, float | None]] = {}
        self._processed: dict[str, int] = {}
        self._restart_baseline: float | None = None
        self._restart_requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._board_failing = False

    # -- loop hooks -----------------------------------------------------------

    def worker_started(self, worker: Worker) -> None:
        """Note the worker, set the gauges, read the restart baseline, start reporting."""
        self._worker = worker
        self.loop.stall_after = worker.sleep + LOOP_STALL_MARGIN
        self.loop.beat()
        if self.metrics is not None:
            self.metrics.up.set(1)
        if self.board is not None:
            try:
                self._restart_baseline = self.board.restart_marker()
            except Exception as exc:
                log.warning("worker %s: cannot read the restart marker: %s", self.name, exc)
            self._thread = threading.Thread(target=self._report_loop, name="board", daemon=True)
            self._thread.start()

    def between_jobs(self) -> str | None:
        """A turn of the loop: exit when a restart was requested."""
        self.loop.beat()
        if self._restart_requested:
            return "a restart was requested (--queue-restart)"
        return None

    def job_reserved(self, reserved: ReservedJob) -> None:
        """Running a job: busy, and on the board."""
        self.loop.busy(True)
        self._current = {"id": reserved.id, "queue": reserved.queue, "job": None, "since": None}
        if self.metrics is not None:
            self.metrics.busy.set(1)

    def job_started(self, reserved: ReservedJob, envelope: Envelope) -> None:
        """Count the start and its pickup latency; name the job on the board."""
        self._ran[reserved.token] = (envelope.job, time.monotonic(), None)
        now = time.time()
        self._current = {
            "id": reserved.id,
            "queue": reserved.queue,
            "job": envelope.job,
            "attempt": reserved.attempts,
            "since": now,
        }
        if self.metrics is not None:
            self.metrics.started.labels(envelope.job, reserved.queue).inc()
            if reserved.attempts == 1 and envelope.created_at > 0:
                pickup = max(now - envelope.created_at, 0.0)
                self.metrics.pickup.labels(reserved.queue).observe(pickup)

    def job_settled(self, reserved: ReservedJob, action: str) -> None:
        """Count the outcome and, for a job that ran, its duration."""
        if self.metrics is None:
            return
        ran = self._ran.pop(reserved.token, None)
        if ran is None:
            job = UNKNOWN_JOB
        else:
            job, start, end = ran
            took = (time.monotonic() if end is None else end) - start
            self.metrics.seconds.labels(job, reserved.queue).observe(took)
        self.metrics.finished.labels(job, reserved.queue, OUTCOMES.get(action, action)).inc()

    def job_done(self, reserved: ReservedJob) -> None:
        """Idle again."""
        self._current = None
        ran = self._ran.get(reserved.token)
        if ran is not None:
            self._ran[reserved.token] = (ran[0], ran[1], time.monotonic())
        if len(self._ran) > MAX_UNSETTLED:  # settles refused or lost: forget the oldest
            self._ran.pop(next(iter(self._ran)))
        self._processed[reserved.queue] = self._processed.get(reserved.queue, 0) + 1
        self.loop.busy(False)
        if self.metrics is not None:
            self.metrics.busy.set(0)

    def worker_stopped(self) -> None:
        """Stop reporting, leave the board, drop the gauges."""
        if self.metrics is not None:
            self.metrics.up.set(0)
            self.metrics.busy.set(0)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.board is not None:
            try:
                self.board.remove(self.id)
            except Exception as exc:
                log.warning("worker %s: cannot leave the worker board: %s", self.name, exc)

    # -- board ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the board shows of this worker now."""
        worker = self._worker
        return {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "connection": worker.driver.name if worker is not None else None,
            "queues": list(worker.queues) if worker is not None else [],
            "started_at": self._started_at,
            "current": self._current,
            "processed": dict(self._processed),
        }

    def report(self) -> None:
        """Write the state to the board; note a restart request. Logs, never raises."""
        assert self.board is not None
        try:
            marker = self.board.report(self.id, self.state())
        except Exception as exc:
            if not self._board_failing:
                log.warning("worker %s: cannot report to the worker board: %s", self.name, exc)
            self._board_failing = True
            return
        if self._board_failing:
            log.info("worker %s: reporting to the worker board again", self.name)
            self._board_failing = False
        if marker is not None and marker != self._restart_baseline and not self._restart_requested:
            log.info("worker %s: restart requested; exiting after the current job", self.name)
            self._restart_requested = True

    def _report_loop(self) -> None:
        while True:
            self.report()
            if self._stop.wait(self.report_interval):
                return
