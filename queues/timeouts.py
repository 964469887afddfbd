"""Hard time limits for job attempts: SIGALRM first, then a watchdog that ends the process.

`Deadline` arms `signal.setitimer(ITIMER_REAL)` around a job attempt; when it
fires, the signal handler raises an exception (by default `JobTimeout`) inside
whatever Python code the main thread is running, so a busy loop or a
`time.sleep` is stopped. The exception derives from `BaseException` so a job's
`except Exception:` does not swallow it, and the timer re-fires every
`REFIRE_INTERVAL` seconds until the attempt ends, in case a bare `except:` does.

Signals are handled only in the main thread and only when the interpreter
checks for them, so C code that runs without checking (a long `sum()` over a
C iterator, big-integer arithmetic, a C extension) is not interrupted until it
returns, and while it holds the GIL no other Python thread runs either (not
even the heartbeat). (CPython 3.11's `re` engine does check for signals every
few thousand steps, so SIGALRM ends a catastrophic regex.) `watchdog` is the
backstop: `faulthandler.dump_traceback_later(exit=True)` runs a C thread that
needs no GIL; if the attempt is still running HARD_LIMIT_GRACE seconds past
its timeout it writes every thread's traceback to stderr ("Timeout (...)!")
and ends the process with exit code WATCHDOG_EXIT_CODE, with or without a
supervisor. The job's lease then runs out and the next worker to reserve it
learns from the driver that the attempt overran its timeout
(`ReservedJob.abandoned_after`).
"""

from __future__ import annotations

import faulthandler
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

#: Seconds between repeated alarms if an attempt swallows the first one.
REFIRE_INTERVAL = 1.0
#: Seconds an attempt may run past its timeout (unwinding after the alarm)
#: before the watchdog ends the process and heartbeats stop renewing its lease.
HARD_LIMIT_GRACE = 2.0
#: Exit code of a process ended by the watchdog (faulthandler's `_exit(1)`).
WATCHDOG_EXIT_CODE = 1
#: File descriptor the watchdog writes the tracebacks to (stderr).
WATCHDOG_FD = 2


class JobTimeout(BaseException):
    """A job attempt ran past its timeout."""


ExceptionFactory = Callable[[], BaseException]


class Deadline:
    """Raise an exception in the main thread when `seconds` have passed inside `with`.

    `seconds=None` arms nothing until `shorten()` is called. Outside the main
    thread no alarm can be armed: `enabled` is then False and the body runs
    without a limit.
    """

    def __init__(self, seconds: float | None, factory: ExceptionFactory) -> None:
        self._seconds = seconds
        self._factory = factory
        self._due: float | None = None
        self._active = False
        self._installed = False
        self._previous: Any = None
        self.enabled = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> Deadline:
        if not self.enabled:
            return self
        self._active = True
        if self._seconds is not None:
            self._arm(self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.enabled:
            return
        # Ignore an alarm that lands while we tear down: the body already ended.
        self._active = False
        if self._installed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self._installed = False

    def shorten(self, seconds: float, factory: ExceptionFactory) -> bool:
        """Fire `factory()` after `seconds` unless the current deadline is sooner.

        Returns True when the new deadline took effect. Call from the main thread
        (a signal handler qualifies).
        """
        if not (self.enabled and self._active):
            return False
        due = time.monotonic() + seconds
        if self._due is not None and self._due <= due:
            return False
        self._factory = factory
        self._arm(seconds)
        return True

    def _arm(self, seconds: float) -> None:
        if not self._installed:  # installed lazily: a job without a timeout costs nothing
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._installed = True
        self._due = time.monotonic() + seconds
        # setitimer(0) would disarm: fire "now" instead for a spent deadline.
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3), REFIRE_INTERVAL)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._active:
            raise self._factory()


@contextmanager
def watchdog(seconds: float | None) -> Iterator[None]:
    """End the whole process if the body of `with` runs longer than `seconds`.

    A C thread (faulthandler) that needs no GIL: it fires even while C code
    holds the GIL and ignores signals. It dumps every thread's traceback to
    stderr and calls `_exit(WATCHDOG_EXIT_CODE)`. `seconds=None` arms nothing.
    One watchdog per process at a time (faulthandler keeps a single timer).
    """
    if seconds is None:
        yield
        return
    faulthandler.dump_traceback_later(seconds, exit=True, file=WATCHDOG_FD)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


class _ThreadAlarm(BaseException):
    """Injected into a job's thread at its deadline; `ThreadDeadline` turns it into the
    deadline's own exception (an asynchronous exception can carry no message)."""


class ThreadDeadline:
    """`Deadline` for a job run by a worker thread (`--concurrency N`): no SIGALRM there.

    At the deadline the exception is raised in the job's thread by
    `PyThreadState_SetAsyncExc`, from one shared alarm thread. Like SIGALRM it
    reaches Python code only: a thread blocked in C (a `time.sleep`, a socket
    read) sees it when that call returns; the process watchdog
    (`SharedWatchdog`) is the backstop. Leaving the `with` block cancels an
    alarm still pending, so it never lands after the job ended.
    """

    def __init__(self, seconds: float | None, factory: ExceptionFactory) -> None:
        self._seconds = seconds
        self._factory = factory
        self._thread_id = threading.get_ident()
        self.enabled = True

    def __enter__(self) -> ThreadDeadline:
        if self._seconds is not None:
            _ALARMS.arm(self, time.monotonic() + self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _ALARMS.cancel(self)
        if exc_type is _ThreadAlarm:
            raise self._factory() from None

    def shorten(self, seconds: float, factory: ExceptionFactory) -> bool:
        """Fire `factory()` after `seconds` unless the current deadline is sooner."""
        due = time.monotonic() + seconds
        current = _ALARMS.due(self)
        if current is not None and current <= due:
            return False
        self._factory = factory
        _ALARMS.arm(self, due)
        return True

    def fire(self) -> None:
        """Raise the alarm in the job's thread (called by the alarm thread, lock held)."""
        _set_async_exc(self._thread_id, _ThreadAlarm)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _AlarmClock:
    """One daemon thread firing every armed ThreadDeadline at its due time."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._due: dict[ThreadDeadline, float] = {}
        self._fired: set[ThreadDeadline] = set()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: ThreadDeadline, due: float) -> None:
        with self._lock:
            self._due[deadline] = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-alarms", daemon=True)
                self._thread.start()
            self._lock.notify()

    def due(self, deadline: ThreadDeadline) -> float | None:
        with self._lock:
            return self._due.get(deadline)

    def cancel(self, deadline: ThreadDeadline) -> None:
        with self._lock:
            if self._due.pop(deadline, None) is not None or deadline in self._fired:
                self._fired.discard(deadline)
                _set_async_exc(deadline._thread_id, None)  # clear one still pending

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for deadline, due in list(self._due.items()):
                    if due <= now:
                        deadline.fire()
                        # Re-fire later in case a bare `except:` swallowed it.
                        self._due[deadline] = now + REFIRE_INTERVAL
                        self._fired.add(deadline)
                wake = min(self._due.values(), default=now + 60.0)
                self._lock.wait(max(wake - time.monotonic(), 0.001))


_ALARMS = _AlarmClock()


class SharedWatchdog:
    """The process watchdog when several jobs run at once (threads): one faulthandler
    timer per process, armed for the earliest hard limit of the running jobs.

    Same backstop as `watchdog`: when a job is still running past its hard
    limit, every thread's traceback goes to stderr and the process ends
    (exit code WATCHDOG_EXIT_CODE); the other jobs of the process come back
    by their leases.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[int, float] = {}
        self._next = 0

    @contextmanager
    def limit(self, seconds: float | None) -> Iterator[None]:
        """Hold the hard limit `seconds` from now while the body runs (None: no limit)."""
        if seconds is None:
            yield
            return
        with self._lock:
            self._next += 1
            key = self._next
            self._limits[key] = time.monotonic() + seconds
            self._rearm()
        try:
            yield
        finally:
            with self._lock:
                del self._limits[key]
                self._rearm()

    def _rearm(self) -> None:
        if not self._limits:
            faulthandler.cancel_dump_traceback_later()
            return
        left = max(min(self._limits.values()) - time.monotonic(), 0.001)
        faulthandler.dump_traceback_later(left, exit=True, file=WATCHDOG_FD)
