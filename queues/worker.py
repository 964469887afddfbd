"""The worker loop: reserve a job, run it under a time limit, settle it.

Guarantees:

* Nothing a queue holds stops the worker. Every entry is decoded and checked
  once (`Envelope.from_json`: size, depth, field types); garbage, deep or huge
  JSON, wrong field types, an unknown job or (Redis) a second copy of a running
  job is moved to the failed store with a one-line reason, and the next job runs.
* A job's exception never stops the worker: the attempt is released for a retry
  (after its backoff) or, on its last attempt, moved to the failed store with
  the exception class, message and full traceback, and `job.failed(exc)` is
  called with that exception (its own exceptions are logged only). The hook is
  also called, with the real reason, for a refused envelope whose job and data
  are valid, and for a job failed for overrunning its timeout.
* Only registered job classes run (see `queues.registry`).
* A job whose attempts already exceed its max_tries (its previous worker died
  and the lease expired) is failed without running.
* `timeout` is hard. SIGALRM stops Python code at the deadline; a watchdog
  (`queues.timeouts.watchdog`, when the worker owns its process) ends the
  process HARD_LIMIT_GRACE seconds later if the attempt is stuck in code that
  signals cannot reach. The heartbeat stops renewing the lease at that moment
  too, so no second worker can run the job while this one still might. The next
  worker that reserves the job learns that the attempt overran (the driver's
  `abandoned_after`) and retries or fails it per its policy, with a JobTimeout
  reason.
* While a job runs, a heartbeat thread renews its lease every `retry_after / 3`
  seconds, so a long job is not handed to a second worker. One heartbeat call
  per queue renews every job the process holds (prefetched, running, or
  finished and waiting for its batch ack).
* Throughput: a reservation takes up to `prefetch` jobs in one round trip
  (`pop_many`), each under its own lease and token, sized adaptively to about
  PREFETCH_WORK_SECONDS of work; finished jobs are acked together
  (`ack_many`, at most ACK_LINGER after they finished). A kill -9 re-runs only
  jobs finished and not yet acked, and counts an attempt for every held job;
  a stop gives unstarted ones back without counting.
* `concurrency` N > 1 runs N runner threads, each with its own prefetch and
  acks. Their timeouts are `ThreadDeadline`s (an asynchronous exception that
  reaches Python code, not C calls) and one `SharedWatchdog` ends the process
  at the earliest hard limit of the jobs running, so a stuck job never keeps
  its lease. `async def handle` jobs run on each runner's own event loop.
* `_settled` is the one place where a job's outcome is known (ack, release,
  fail): lifecycle hooks attach there.
* `max_time`: no wait for a job runs past it. `memory_mb` is checked between
  jobs (the worker exits cleanly once its RSS is above it).
* SIGTERM/SIGINT: no new job is started; the current job may finish within
  `GRACE_PERIOD` seconds (or its own shorter timeout), else it is stopped and
  released at once; the worker then exits 0. A second signal exits immediately
  and the reservation comes back when its lease expires.
* `stop_when_empty`: the worker exits 0 when a wait for a job ends with none.
* `events` (queues/worker_events.py) is told when the loop turns and what happens
  to each job (metrics, health, the dashboard, `--queue-restart`); records logged
  while a job is processed carry its id (support/log_context.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import Any

from queues import lifecycle
from queues.backoff import BackoffPolicy, backoff_delay
from queues.drivers.base import QueueDriver, ReservedJob
from queues.envelope import Envelope, EnvelopeError
from queues.job import Job
from queues.job_middleware import ReleaseJob, run_job
from queues.registry import JobRegistry, UnknownJobError, get_registry
from queues.timeouts import (
    HARD_LIMIT_GRACE,
    Deadline,
    JobTimeout,
    SharedWatchdog,
    ThreadDeadline,
    watchdog,
)
from queues.worker_events import WorkerEvents
from support import log_context
from support.backoff import Backoff

logger = logging.getLogger("queues.worker")

#: Seconds a running job may still take after SIGTERM/SIGINT before it is stopped.
GRACE_PERIOD = 30.0
#: Exit code after a second stop signal (the job was abandoned to its lease).
EXIT_FORCED = 1
#: Seconds: ceiling of the jittered pause after a first failed `pop`; doubles per
#: consecutive failure up to ERROR_PAUSE (or `--sleep`, if shorter).
ERROR_PAUSE_BASE = 0.1
#: Seconds: the longest pause between two failed `pop`s.
ERROR_PAUSE = 1.0
#: Shortest time between two lease renewals of one job, seconds.
MIN_HEARTBEAT_INTERVAL = 0.05
#: Most jobs one reservation takes by default (`--prefetch`), chosen by measurement: a
#: sweep of 1..64 on no-op jobs (bench_worker's drain, two runs on a loaded 2-core box)
#: drained fastest at 64 on Redis and SQLite (1 -> 64: 1.1k -> 7.9-13.8k/s and
#: 1.3-1.6k -> 9.0-10.3k/s). PREFETCH_WORK_SECONDS bounds what is held for slower jobs.
DEFAULT_PREFETCH = 64
#: Seconds of work (at the recent average run time) a worker may hold reserved ahead of
#: the job it runs: slower jobs are prefetched less, down to one at a time.
PREFETCH_WORK_SECONDS = 0.05
#: Seconds a finished job's ack may wait for others to share its round trip (batch
#: settle). It bounds what a crash costs: only jobs finished within it, not yet acked,
#: come back by their leases and run again (at-least-once, as for any crash mid-ack).
ACK_LINGER = 0.01
#: Seconds between two checks of the main thread while runner threads work.
RUNNER_JOIN_SLICE = 0.2
#: Weight of the newest run time in the moving average that sizes the prefetch.
RUN_TIME_WEIGHT = 0.2


class WorkerStopping(BaseException):
    """Raised inside a job when the shutdown grace period is over."""


class MaxAttemptsExceeded(Exception):
    """The job was reserved more times than its max_tries (a worker died mid-job)."""


class RetryUntilExpired(Exception):
    """The job's retry_until deadline passed before this attempt."""


class DuplicateJob(Exception):
    """A second copy of a job was met while the job itself was reserved."""


#: Longest part of a refused payload copied into its failed record's reason, characters.
PAYLOAD_EXCERPT = 2000


def describe_exception(exc: BaseException) -> str:
    """`Class: message` on the first line, then the full traceback."""
    details = "".join(traceback.format_exception(exc))
    return f"{type(exc).__name__}: {exc}\n\n{details}"


def current_rss_mb() -> float:
    """Resident memory of this process in MB (peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak_kb / 1024


class _Heartbeat:
    """Renews the leases of every job this worker process holds, from one background thread.

    A worker holds a job from its reservation to its settle: prefetched jobs
    waiting their turn, the jobs running and the finished ones waiting for
    their batch ack. Every `interval` seconds (a lease is `3 * interval`) the
    thread renews all of them in one `extend_many` call per queue, so
    heartbeats cost one round trip per interval for the whole process, not one
    per job. A running job stops being renewed once its hard limit (`stop_at`)
    has passed, so a job stuck past its timeout can never keep its lease (and
    a second worker out) for ever. `drop()` returns only after any renewal in
    flight has finished, so a renewal never races the jobs' settle. One
    long-lived thread, not one per job: jobs may be very short.
    """

    def __init__(self, driver: QueueDriver, interval: float) -> None:
        self._driver = driver
        self._interval = interval
        #: held jobs by token (unique per reservation) -> hard limit (monotonic) or None
        self._held: dict[str, tuple[ReservedJob, float | None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def hold(self, jobs: Sequence[ReservedJob]) -> None:
        """Keep renewing these jobs' leases until they are dropped."""
        with self._lock:
            for job in jobs:
                self._held[job.token] = (job, None)

    def beat(self, job: ReservedJob, stop_at: float | None = None) -> None:
        """Renew `job`'s lease until it is dropped or the monotonic time `stop_at`
        (its hard limit) passes: first within `interval` seconds, then every
        `interval` (no wake-up per job, so short jobs pay only a lock)."""
        with self._lock:
            self._held[job.token] = (job, stop_at)

    def finished(self, job: ReservedJob) -> None:
        """The job's attempt ended: renew it (until its settle) without a hard limit."""
        with self._lock:
            if job.token in self._held:
                self._held[job.token] = (job, None)

    def drop(self, jobs: Sequence[ReservedJob]) -> None:
        """Stop renewing these jobs; waits for a renewal in flight."""
        with self._lock:
            for job in jobs:
                self._held.pop(job.token, None)

    def close(self) -> None:
        """End the thread."""
        with self._wake:
            self._closed = True
            self._held.clear()
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                self._wake.wait(self._interval)
                if self._closed or not self._held:
                    continue
                now = time.monotonic()
                renew: list[ReservedJob] = []
                for token, (job, stop_at) in list(self._held.items()):
                    if stop_at is not None and now >= stop_at:
                        logger.error(
                            "job %s: still running past its hard time limit; its lease is no "
                            "longer renewed",
                            job.id,
                        )
                        del self._held[token]
                    else:
                        renew.append(job)
                if not renew:
                    continue
                # The lock is held during the call so drop() waits for it to end.
                try:
                    verdicts = self._driver.extend_many(renew)
                except Exception as exc:
                    logger.warning("heartbeat of %d job(s) failed: %s", len(renew), exc)
                    continue
                for job, renewed in zip(renew, verdicts, strict=True):
                    if not renewed:
                        logger.warning(
                            "job %s: lease lost (heartbeat refused); another worker may run it",
                            job.id,
                        )
                        self._held.pop(job.token, None)


class _Lane(threading.local):
    """What one runner thread of a worker keeps to itself (all of it, when it has one)."""

    def __init__(self) -> None:
        #: reserved jobs not started yet, in reservation order
        self.prefetched: deque[ReservedJob] = deque()
        #: finished jobs waiting for the next batch ack: (job, log label, run seconds, envelope)
        self.acks: list[tuple[ReservedJob, str, float, Envelope]] = []
        self.acks_since = 0.0
        self.defer_acks = False
        self.average_run: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class Worker:
    """Runs jobs from `queues` (priority order) of one driver until told to stop.

    `default_timeout`, `default_tries` and `default_backoff` apply to job classes
    that do not set their own value. `max_jobs`, `max_time` (seconds) and
    `memory_mb` make the worker exit cleanly (code 0) so a supervisor restarts it;
    `memory_mb` is checked between jobs. `use_watchdog` arms the process-ending hard
    limit (`queues.timeouts.watchdog`); it defaults to `handle_signals`, i.e. to
    a worker that owns its process (never one embedded in a test or an app).
    """

    def __init__(
        self,
        driver: QueueDriver,
        queues: Sequence[str],
        sleep: float = 3.0,
        max_jobs: int = 0,
        max_time: float = 0,
        memory_mb: int = 0,
        default_timeout: float | None = None,
        default_tries: int | None = None,
        default_backoff: BackoffPolicy | None = None,
        registry: JobRegistry | None = None,
        grace: float = GRACE_PERIOD,
        handle_signals: bool = True,
        use_watchdog: bool | None = None,
        stop_when_empty: bool = False,
        events: WorkerEvents | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        concurrency: int = 1,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue name")
        self.driver = driver
        self.queues = list(queues)
        self.sleep = sleep
        self.max_jobs = max_jobs
        self.max_time = max_time
        self.memory_mb = memory_mb
        self.default_timeout = default_timeout
        self.default_tries = default_tries
        self.default_backoff = default_backoff
        self.registry = registry or get_registry()
        self.grace = grace
        self.handle_signals = handle_signals
        self.use_watchdog = handle_signals if use_watchdog is None else use_watchdog
        self.stop_when_empty = stop_when_empty
        self.events = events or WorkerEvents()
        self.jobs_done = 0
        self._stopping = False
        #: a runner met an exit limit: the others finish their job and stop too
        self._exiting = False
        #: jobs reserved so far, against `max_jobs` (runners share that budget)
        self._taken = 0
        self._heartbeat: _Heartbeat | None = None
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.prefetch = prefetch
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        #: each runner thread's own prefetch buffer, pending acks and run-time average
        self._lane = _Lane()
        self._jobs_lock = threading.Lock()
        #: deadlines of the attempts running now (a stop signal shortens them all)
        self._deadlines: set[Deadline | ThreadDeadline] = set()
        self._watchdog = SharedWatchdog()
        pause_cap = min(ERROR_PAUSE, sleep) if sleep > 0 else ERROR_PAUSE
        self._pop_backoff = Backoff(min(ERROR_PAUSE_BASE, pause_cap), pause_cap)

    # -- loop ---------------------------------------------------------------

    def run(self) -> int:
        """Process jobs until a stop signal or an exit limit; return the exit code (0).

        With `concurrency` N > 1, N runner threads each run the loop below
        (their own prefetch and batch acks, one heartbeat for all) while the
        main thread waits for them and handles the signals.
        """
        previous = self._install_signals()
        self._warn_about_leases()
        if threading.current_thread() is not threading.main_thread() and self.concurrency == 1:
            logger.warning("job timeouts are not enforced: the worker runs outside the main thread")
        started = time.monotonic()
        logger.info(
            "worker %d started: connection=%s queues=%s prefetch=%d concurrency=%d",
            os.getpid(),
            self.driver.name,
            ",".join(self.queues),
            self.prefetch,
            self.concurrency,
        )
        self.events.worker_started(self)
        self._exiting = False  # a worker may be run again (after raising max_jobs)
        try:
            if self.concurrency == 1:
                self._run_lane(started)
            else:
                runners = [
                    threading.Thread(
                        target=self._run_lane, args=(started,), name=f"runner-{i}", daemon=True
                    )
                    for i in range(self.concurrency)
                ]
                for runner in runners:
                    runner.start()
                for runner in runners:
                    while runner.is_alive():
                        runner.join(RUNNER_JOIN_SLICE)  # short joins: signals reach the main thread
            if self._stopping:
                logger.info("worker %d stopped after a signal", os.getpid())
        finally:
            self.events.worker_stopped()
            self._restore_signals(previous)
            if self._heartbeat is not None:
                self._heartbeat.close()
                self._heartbeat = None
        return 0

    def _run_lane(self, started: float) -> None:
        """One runner's loop: reserve a batch, run it job by job, settle in batches."""
        lane = self._lane
        lane.defer_acks = True
        try:
            while not self._stopping:
                if self._exiting:
                    break
                reason = self._exit_reason(started)
                if reason:
                    logger.info("worker %d exiting: %s", os.getpid(), reason)
                    self._exiting = True
                    break
                if not lane.prefetched:
                    self._flush_acks()
                    if self._exiting:
                        break
                    outcome = self._reserve(started)
                    if outcome == "empty":
                        if self.stop_when_empty:
                            logger.info("worker %d exiting: no job waiting", os.getpid())
                            break
                        continue
                    if outcome == "error":
                        continue
                    if outcome == "limit":
                        break
                    if self._stopping:
                        break
                reserved = lane.prefetched.popleft()
                self._process_guarded(reserved)
                with self._jobs_lock:
                    self.jobs_done += 1
        except Exception:
            logger.exception("worker %d: a runner thread failed", os.getpid())
            self._exiting = True
        finally:
            lane.defer_acks = False
            self._flush_acks()
            self._give_back_prefetched()
            if lane.loop is not None:
                lane.loop.close()
                lane.loop = None

    def _reserve(self, started: float) -> str:
        """Reserve the next batch into the prefetch buffer: "ok", "empty", "error", or
        "limit" when `max_jobs` jobs are already reserved."""
        wait = self._wait(started)
        with self._jobs_lock:
            size = self._batch_size()
            self._taken += size  # runners share the --max-jobs budget
        if size == 0:
            return "limit"
        try:
            jobs = self.driver.pop_many(self.queues, size, block=wait)
        except Exception as exc:
            with self._jobs_lock:
                self._taken -= size
            logger.error("worker %d: cannot reserve a job: %s", os.getpid(), exc)
            time.sleep(self._pop_backoff.next_delay())
            return "error"
        self._pop_backoff.reset()
        if len(jobs) < size:
            with self._jobs_lock:
                self._taken -= size - len(jobs)
        if not jobs:
            return "empty"
        self._heartbeat_for().hold(jobs)
        self._lane.prefetched.extend(jobs)
        return "ok"

    def _batch_size(self) -> int:
        """How many jobs the next reservation takes (0: --max-jobs reached): adaptive prefetch.

        At most `prefetch`, and at most the jobs left before `max_jobs`; and only
        as many as fit in PREFETCH_WORK_SECONDS of the recent average run time,
        so slow jobs are reserved one at a time (another worker can take the
        next one) while short ones share a round trip.
        """
        size = self.prefetch
        if self.max_jobs:
            size = min(size, self.max_jobs - self._taken)
            if size <= 0:
                return 0
        average = self._lane.average_run
        if average is None:
            size = min(size, 1)  # learn how long jobs take before holding any back
        elif average > 0:
            size = min(size, int(PREFETCH_WORK_SECONDS / average))
        return max(size, 1)

    def _heartbeat_for(self) -> _Heartbeat:
        if self._heartbeat is None:
            interval = max(self.driver.retry_after / 3.0, MIN_HEARTBEAT_INTERVAL)
            self._heartbeat = _Heartbeat(self.driver, interval)
        return self._heartbeat

    def _give_back_prefetched(self) -> None:
        """Release the prefetched jobs that never started, taking back their attempt."""
        while self._lane.prefetched:
            reserved = self._lane.prefetched.popleft()
            self._settle(
                "release", reserved, partial(self.driver.release, reserved, 0, undo_attempt=True)
            )

    def _finished(
        self, reserved: ReservedJob, label: str, elapsed: float, envelope: Envelope
    ) -> None:
        """The attempt succeeded: ack it now, or with the next batch (inside `run`).

        The before-settle hooks (chains, batches) run here, before the job joins
        the ack batch; one that fails leaves the job unacked, back after its lease.
        """
        self._learn(elapsed)
        try:
            lifecycle.before_settle(self.driver, reserved, "ack")
        except Exception as exc:
            logger.error(
                "job %s: cannot ack it (%s); it returns when its lease expires", reserved.id, exc
            )
            if self._heartbeat is not None:
                self._heartbeat.drop([reserved])
            return
        now = time.monotonic()
        if not self._lane.acks:
            self._lane.acks_since = now
        self._lane.acks.append((reserved, label, elapsed, envelope))
        if self._heartbeat is not None:
            self._heartbeat.finished(reserved)
        if (
            not self._lane.defer_acks
            or len(self._lane.acks) >= self.prefetch
            or now - self._lane.acks_since >= ACK_LINGER
        ):
            self._flush_acks()

    def _learn(self, elapsed: float) -> None:
        """Fold one attempt's run time into the average that sizes the prefetch."""
        if self._lane.average_run is None:
            self._lane.average_run = elapsed
        else:
            self._lane.average_run += RUN_TIME_WEIGHT * (elapsed - self._lane.average_run)

    def _flush_acks(self) -> None:
        """Ack every finished job in one `ack_many` call per queue (batch settle).

        Each job is fenced on its own: a refused ack (its lease was lost) is
        logged for that job only. A backend error leaves the whole batch to
        its leases (they come back: at-least-once, never lost).
        """
        if not self._lane.acks:
            return
        batch, self._lane.acks = self._lane.acks, []
        jobs = [entry[0] for entry in batch]
        try:
            verdicts = self.driver.ack_many(jobs)
        except Exception as exc:
            for job in jobs:
                logger.error(
                    "job %s: cannot ack it (%s); it returns when its lease expires", job.id, exc
                )
            verdicts = None
        if self._heartbeat is not None:
            self._heartbeat.drop(jobs)
        if verdicts is None:
            return
        verbose = logger.isEnabledFor(logging.DEBUG)
        for (reserved, label, elapsed, envelope), acked in zip(batch, verdicts, strict=True):
            if acked:
                self._settled(reserved, "ack")
                lifecycle.job_finished(self.driver, envelope, "succeeded")
                if not verbose:
                    continue
            # Acks come after the job's own records: bind its id again for these.
            binding = log_context.bind(job_id=reserved.id)
            try:
                if acked:
                    logger.debug("job %s finished in %.3f s", label, elapsed)
                else:
                    logger.warning(
                        "job %s: ack refused: the lease was lost and another worker may run it",
                        reserved.id,
                    )
                    logger.warning("job %s finished in %.3f s but was not acked", label, elapsed)
            finally:
                log_context.unbind(binding)

    def stop(self) -> None:
        """Ask the loop to stop after the current job (from any thread)."""
        self._stopping = True

    def _wait(self, started: float) -> float:
        """How long the next pop may wait: `sleep`, but never past `max_time`."""
        if not self.max_time:
            return self.sleep
        return max(min(self.sleep, self.max_time - (time.monotonic() - started)), 0.0)

    def _exit_reason(self, started: float) -> str | None:
        if self.max_jobs and self.jobs_done >= self.max_jobs:
            return f"processed {self.jobs_done} jobs (--max-jobs {self.max_jobs})"
        ran = time.monotonic() - started
        if self.max_time and ran >= self.max_time:
            return f"ran {ran:.1f} s (--max-time {self.max_time:g})"
        if self.memory_mb:
            rss = current_rss_mb()
            if rss > self.memory_mb:
                return f"memory {rss:.0f} MB exceeds --memory {self.memory_mb} MB"
        return self.events.between_jobs()

    # -- one job ------------------------------------------------------------

    def _process_guarded(self, reserved: ReservedJob) -> None:
        """`process`, with a last line of defence: a fault in the worker's own code
        while handling one entry fails that entry instead of ending the worker."""
        try:
            self.process(reserved)
        except Exception as exc:
            logger.exception("worker %d: cannot process job %s", os.getpid(), reserved.id)
            self._fail(reserved, f"WorkerError: {describe_exception(exc)}")

    def process(self, reserved: ReservedJob) -> None:
        """Run one reserved job and settle it (ack, release or fail). Never raises for the job."""
        self.events.job_reserved(reserved)
        binding = log_context.bind(job_id=reserved.id)
        try:
            self._process(reserved)
        finally:
            log_context.unbind(binding)
            self.events.job_done(reserved)
            acks = self._lane.acks
            # A job waiting for its batch ack is the last one queued there: keep it held.
            if self._heartbeat is not None and not (acks and acks[-1][0] is reserved):
                self._heartbeat.drop([reserved])

    def _process(self, reserved: ReservedJob) -> None:
        started = time.monotonic()
        try:
            envelope = Envelope.from_json(reserved.payload)
        except EnvelopeError as exc:
            self._refuse(reserved, exc)
            return
        if reserved.duplicate_of is not None:
            duplicate = DuplicateJob(
                f"job {envelope.job} ({reserved.duplicate_of}) is already reserved by another "
                "worker; this second copy of it was not run"
            )
            if self._fail(reserved, describe_exception(duplicate)):
                logger.error("job %s: %s", reserved.duplicate_of, duplicate)
            return
        try:
            cls = self.registry.resolve(envelope.job)
        except UnknownJobError as exc:
            self._fail(reserved, f"UnknownJob: {exc}")
            logger.error("job %s failed: %s", reserved.id, exc)
            return

        max_tries = self._max_tries(cls, envelope)
        label = f"{envelope.job} {reserved.id}"
        timeout = self._timeout(envelope)
        overran = self._overran(reserved, envelope, timeout)
        if overran is not None:
            # The previous attempt is the one that failed; this reservation's
            # attempt is given back if the job is retried.
            previous = reserved.attempts - 1
            self._on_exception(reserved, cls, envelope, None, overran, max_tries, 0.0, previous)
            return
        if reserved.attempts > max_tries:
            exhausted = MaxAttemptsExceeded(
                f"job {envelope.job} ({reserved.id}) was attempted {reserved.attempts} times "
                f"(max_tries {max_tries}); a worker probably died while running it"
            )
            self._fail_for_good(
                reserved, cls, envelope, None, exhausted, describe_exception(exhausted)
            )
            return
        if envelope.retry_until is not None and time.time() > envelope.retry_until:
            expired = RetryUntilExpired(
                f"job {envelope.job} ({reserved.id}) passed its retry_until deadline "
                f"before attempt {reserved.attempts}"
            )
            self._fail_for_good(reserved, cls, envelope, None, expired, describe_exception(expired))
            return

        # DEBUG, not INFO: one record per job costs a third of a no-op job's time (profile
        # in benchmarks/bench_worker.py); failures, retries and refusals stay WARNING/ERROR.
        logger.debug("job %s started (attempt %d/%d)", label, reserved.attempts, max_tries)
        self.events.job_started(reserved, envelope)
        job: Job | None = None
        try:
            job = _build_job(cls, envelope.data, reserved)
            self._run_attempt(reserved, job, envelope, timeout)
        except WorkerStopping:
            # The stop interrupted it: give the attempt back so the job's
            # max_tries budget is not spent by a deploy (Sidekiq does the same).
            released = self._settle(
                "release", reserved, lambda: self.driver.release(reserved, 0, undo_attempt=True)
            )
            logger.warning(
                "job %s stopped after the %g s shutdown grace period; %s",
                label,
                self.grace,
                "released for another worker" if released else "not released (see above)",
            )
            return
        except ReleaseJob as release:
            # Job middleware (a rate limit, an overlap lock) put it off: not an attempt.
            wait = release.delay
            if self._settle(
                "release",
                reserved,
                lambda: self.driver.release(reserved, wait, undo_attempt=True),
            ):
                logger.info("job %s put off %.3f s: %s", label, wait, release)
            return
        except BaseException as exc:
            elapsed = time.monotonic() - started
            self._on_exception(reserved, cls, envelope, job, exc, max_tries, elapsed)
            return
        self._finished(reserved, label, time.monotonic() - started, envelope)

    def _refuse(self, reserved: ReservedJob, exc: EnvelopeError) -> None:
        """Fail an entry that is not a valid envelope; its hook learns why, when it can."""
        excerpt = reserved.payload[:PAYLOAD_EXCERPT]
        if not self._fail(reserved, f"EnvelopeError: {exc}\n\npayload: {excerpt}"):
            return
        logger.error("job %s failed: malformed payload: %s", reserved.id, exc)
        if exc.job is None or exc.data is None or exc.job not in self.registry:
            return
        cls = self.registry.resolve(exc.job)
        self._call_failed_hook(cls, exc.data, reserved, exc, self.default_timeout, exc.job)

    def _overran(
        self, reserved: ReservedJob, envelope: Envelope, timeout: float | None
    ) -> JobTimeout | None:
        """A JobTimeout if the job's previous attempt was abandoned past its timeout."""
        held = reserved.abandoned_after
        if held is None or timeout is None or reserved.attempts < 2 or held < timeout:
            return None
        return JobTimeout(
            f"job {envelope.job} ({reserved.id}) attempt {reserved.attempts - 1} exceeded its "
            f"{timeout:g} s timeout: it was still unfinished {held:.1f} s after it started, and "
            "its worker was ended at the hard time limit (or died)"
        )

    def _run_attempt(
        self, reserved: ReservedJob, job: Job, envelope: Envelope, timeout: float | None
    ) -> None:
        def on_timeout() -> BaseException:
            return JobTimeout(f"job {envelope.job} ({reserved.id}) exceeded {timeout:g} s")

        heartbeat = self._heartbeat_for()
        hard = None if timeout is None else timeout + HARD_LIMIT_GRACE
        heartbeat.beat(reserved, None if hard is None else time.monotonic() + hard)
        hard_limit = hard if self.use_watchdog else None
        deadline: Deadline | ThreadDeadline
        if self.concurrency == 1:
            deadline, limit = Deadline(timeout, on_timeout), watchdog(hard_limit)
        else:
            # Runner threads: no SIGALRM there (see ThreadDeadline), and one process
            # watchdog armed for the earliest hard limit of the jobs running.
            deadline, limit = ThreadDeadline(timeout, on_timeout), self._watchdog.limit(hard_limit)
        try:
            with deadline, limit:
                self._deadlines.add(deadline)
                self._call_handle(job, deadline)
        finally:
            self._deadlines.discard(deadline)

    def _call_handle(self, job: Job, deadline: Deadline | ThreadDeadline) -> None:
        if self._stopping:
            # Reserved just as a stop signal came: it is the current job now.
            deadline.shorten(self.grace, self._grace_over)
        run_job(job, self._handle, self.driver)

    def _handle(self, job: Job) -> None:
        result = job.handle()
        if inspect.isawaitable(result):
            self._await(result)

    def _await(self, awaitable: Any) -> None:
        loop = self._lane.loop
        if loop is None:
            loop = self._lane.loop = asyncio.new_event_loop()
        task = asyncio.ensure_future(awaitable, loop=loop)
        try:
            loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)
            raise

    def _on_exception(
        self,
        reserved: ReservedJob,
        cls: type[Job],
        envelope: Envelope,
        job: Job | None,
        exc: BaseException,
        max_tries: int,
        elapsed: float,
        attempt: int | None = None,
    ) -> None:
        """Retry or fail after the failed `attempt` (default: this reservation's).

        When `attempt` is an earlier one (it overran and was abandoned), a retry
        gives this reservation's attempt back: it never ran.
        """
        label = f"{envelope.job} {reserved.id}"
        text = describe_exception(exc)
        failed = reserved.attempts if attempt is None else attempt
        undo = failed != reserved.attempts
        if failed < max_tries:
            delay = backoff_delay(self._backoff(cls, envelope), failed)
            if envelope.retry_until is None or time.time() + delay < envelope.retry_until:
                released = self._settle(
                    "release",
                    reserved,
                    lambda: self.driver.release(reserved, delay, undo_attempt=undo),
                )
                logger.warning(
                    "job %s attempt %d/%d failed after %.3f s: %s: %s; %s",
                    label,
                    failed,
                    max_tries,
                    elapsed,
                    type(exc).__name__,
                    exc,
                    f"retry in {delay:.3f} s" if released else "not released (see above)",
                )
                return
            text += "\nNot retried: retry_until passes before the next attempt.\n"
        logger.error(
            "job %s failed for good after %d attempt(s), %.3f s: %s: %s",
            label,
            failed,
            elapsed,
            type(exc).__name__,
            exc,
        )
        self._fail_for_good(reserved, cls, envelope, job, exc, text)

    def _fail_for_good(
        self,
        reserved: ReservedJob,
        cls: type[Job],
        envelope: Envelope,
        job: Job | None,
        exc: BaseException,
        text: str,
    ) -> None:
        if not self._fail(reserved, text):
            return  # another worker owns it now; it will fail it and call the hook
        lifecycle.job_finished(self.driver, envelope, "failed")
        if isinstance(exc, MaxAttemptsExceeded | RetryUntilExpired):
            logger.error("job %s %s failed: %s", envelope.job, reserved.id, exc)
        if job is not None:
            self._call_hook(job, exc, self._timeout(envelope), envelope.job, reserved)
        else:
            timeout = self._timeout(envelope)
            self._call_failed_hook(cls, envelope.data, reserved, exc, timeout, envelope.job)

    def _call_failed_hook(
        self,
        cls: type[Job],
        data: dict[str, Any],
        reserved: ReservedJob,
        exc: BaseException,
        timeout: float | None,
        name: str,
    ) -> None:
        """Build the job from `data` and call its `failed(exc)` hook; log, never raise."""
        try:
            instance = _build_job(cls, data, reserved)
        except Exception as build_error:
            logger.error(
                "job %s %s: failed() hook not called, cannot build the job: %s",
                name,
                reserved.id,
                build_error,
            )
            return
        self._call_hook(instance, exc, timeout, name, reserved)

    def _call_hook(
        self,
        instance: Job,
        exc: BaseException,
        timeout: float | None,
        name: str,
        reserved: ReservedJob,
    ) -> None:
        """`instance.failed(exc)` under the job's own hard time limit; errors are logged."""
        hard = None if timeout is None or not self.use_watchdog else timeout + HARD_LIMIT_GRACE
        try:
            with Deadline(timeout, _hook_timeout(name)), watchdog(hard):
                instance.failed(exc)
        except BaseException as hook_error:
            logger.error(
                "job %s %s: failed() hook raised %s: %s",
                name,
                reserved.id,
                type(hook_error).__name__,
                hook_error,
            )

    def _settle(self, action: str, reserved: ReservedJob, call: Callable[[], bool]) -> bool:
        """Run an ack or release; a refusal or a backend error is logged, never raised.

        The worker outlives a backend outage: a job whose ack could not be sent
        comes back when its lease expires (at-least-once, never lost).
        """
        try:
            lifecycle.before_settle(self.driver, reserved, action)  # chains, batches
            done = call()
        except Exception as exc:
            logger.error(
                "job %s: cannot %s it (%s); it returns when its lease expires",
                reserved.id,
                action,
                exc,
            )
            return False
        if done:
            self._settled(reserved, action)
        else:
            logger.warning(
                "job %s: %s refused: the lease was lost and another worker may run it",
                reserved.id,
                action,
            )
        return done

    def _settled(self, reserved: ReservedJob, action: str) -> None:
        """THE place where a job's outcome is known: acked (succeeded), released (for a
        retry, or given back at a stop) or failed (for good). Every settle that the
        backend accepted passes here exactly once; lifecycle hooks attach here."""
        self.events.job_settled(reserved, action)

    def _fail(self, reserved: ReservedJob, text: str) -> bool:
        return self._settle("fail", reserved, lambda: self.driver.fail(reserved, text))

    # -- policy -------------------------------------------------------------

    def _max_tries(self, cls: type[Job], envelope: Envelope) -> int:
        if self.default_tries is not None and not _declares(cls, "max_tries"):
            return self.default_tries
        return envelope.max_tries

    def _timeout(self, envelope: Envelope) -> float | None:
        if envelope.timeout is not None:
            return float(envelope.timeout)
        return self.default_timeout

    def _backoff(self, cls: type[Job], envelope: Envelope) -> BackoffPolicy:
        if self.default_backoff is not None and not _declares(cls, "backoff"):
            return self.default_backoff
        return envelope.backoff

    def _warn_about_leases(self) -> None:
        lease = self.driver.retry_after
        for cls in self.registry.classes():
            timeout = cls.timeout if cls.timeout is not None else self.default_timeout
            if timeout is not None and timeout >= lease:
                logger.warning(
                    "job %s: timeout %g s is not shorter than the %s lease (QUEUE_RETRY_AFTER=%d "
                    "s); heartbeats keep it leased while this worker lives, but set a timeout "
                    "below the lease",
                    cls.job_name(),
                    timeout,
                    self.driver.name,
                    lease,
                )

    def _grace_over(self) -> BaseException:
        return WorkerStopping(f"shutdown grace period of {self.grace:g} s is over")

    # -- signals ------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            logger.warning("worker %d: second %s, exiting now", os.getpid(), name)
            sys.stderr.flush()
            os._exit(EXIT_FORCED)
        self._stopping = True
        if self._deadlines:
            for deadline in list(self._deadlines):
                deadline.shorten(self.grace, self._grace_over)
            logger.info(
                "worker %d: %s, finishing the current job (up to %g s) then exiting",
                os.getpid(),
                name,
                self.grace,
            )
        else:
            logger.info("worker %d: %s, exiting", os.getpid(), name)


def _declares(cls: type[Job], attribute: str) -> bool:
    """True if `cls` or a base below `Job` sets `attribute` itself."""
    return any(attribute in klass.__dict__ for klass in cls.__mro__ if klass is not Job)


def _hook_timeout(name: str) -> Callable[[], BaseException]:
    return lambda: JobTimeout(f"failed() hook of job {name} ran past the job timeout")


def _build_job(cls: type[Job], data: dict[str, Any], reserved: ReservedJob) -> Job:
    """The job instance of one attempt, knowing its id and attempt number."""
    job = cls(**data)
    job.attempts = reserved.attempts
    job.job_id = reserved.id
    return job
