"""Test jobs: each leaves evidence in files named by its data, so tests in
another process can see what ran, when, and how often."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from queues import Job


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


class RecordJob(Job):
    """Appends its `value` to the file `path`."""

    def handle(self) -> None:
        _append(self.path, str(self.value))


class FailingJob(Job):
    """Always raises; logs the time of each attempt to `path`."""

    max_tries = 3
    backoff = [0.2, 0.5]

    def handle(self) -> None:
        _append(self.path, repr(time.time()))
        raise ValueError(f"boom {self.value}")

    def failed(self, exc: BaseException) -> None:
        _append(self.path + ".failed", f"{type(exc).__name__}: {exc}")


class FlakyJob(Job):
    """Fails until its attempt number `succeed_on`, then records success."""

    max_tries = 3

    def handle(self) -> None:
        attempts = len(Path(self.path).read_text().splitlines()) if Path(self.path).exists() else 0
        _append(self.path, "attempt")
        if attempts + 1 < self.succeed_on:
            raise RuntimeError(f"not yet (attempt {attempts + 1})")
        _append(self.path + ".done", "ok")


class BadHookJob(Job):
    """Fails, and its failed() hook fails too: the worker must survive both."""

    def handle(self) -> None:
        raise KeyError("first")

    def failed(self, exc: BaseException) -> None:
        raise RuntimeError("hook exploded")


class BusyJob(Job):
    """A pure-Python busy loop: only a signal can stop it."""

    timeout = 0.3
    max_tries = 2

    def handle(self) -> None:
        _append(self.path, "start")
        while True:
            pass


class SleepJob(Job):
    """Sleeps `seconds` in `time.sleep`, then records it finished."""

    timeout = 0.3

    def handle(self) -> None:
        _append(self.path, "start")
        time.sleep(self.seconds)
        _append(self.path, "finished")


class SlowJob(Job):
    """Like SleepJob without a timeout: for shutdown tests."""

    def handle(self) -> None:
        _append(self.path, "start")
        time.sleep(self.seconds)
        _append(self.path, "finished")


class AsyncJob(Job):
    """An `async def handle`."""

    timeout = 0.5

    async def handle(self) -> None:
        await asyncio.sleep(self.seconds)
        _append(self.path, f"async {self.value}")


class ShortDeadlineJob(Job):
    """retry_until 0.3 s after dispatch."""

    retry_until = 0.3
    max_tries = 5

    def handle(self) -> None:
        _append(self.path, "ran")


class Renamed(Job):
    """Registered under an explicit name."""

    name = "custom-name"

    def handle(self) -> None:
        _append(self.path, "renamed")


class AbstractBase(Job):
    """Not registered: abstract."""

    abstract = True


class KillServerJob(Job):
    """SIGKILLs a (private) server process, so the worker's ack meets a dead backend."""

    def handle(self) -> None:
        os.kill(int(self.pid), signal.SIGKILL)


class FleetJob(Job):
    """On its own queue: a worker started without --queue must still work it."""

    queue = "fleet"

    def handle(self) -> None:
        _append(self.path, f"fleet {self.value}")


#: Items a stuck job sums: hours of C code that never checks for signals.
STUCK_ITEMS = 10**13
#: Timeout of the stuck jobs, seconds (below the 1 s lease some worker tests use).
STUCK_TIMEOUT = 0.8


def _stuck_in_c() -> None:
    """Hold the GIL in C code that never checks for signals (SIGALRM cannot end it)."""
    sum(itertools.repeat(1, STUCK_ITEMS))


class StuckOnceJob(Job):
    """Attempt 1 is stuck in GIL-holding C code; later attempts finish."""

    timeout = STUCK_TIMEOUT
    max_tries = 2

    def handle(self) -> None:
        _append(self.path, f"attempt {self.attempts}")
        if self.attempts == 1:
            _stuck_in_c()
        _append(self.path, "done")

    def failed(self, exc: BaseException) -> None:
        _append(self.path + ".failed", f"{type(exc).__name__}: {exc}")


class StuckJob(Job):
    """Always stuck in GIL-holding C code; its failed() hook records the reason."""

    timeout = STUCK_TIMEOUT

    def handle(self) -> None:
        _append(self.path, f"attempt {self.attempts}")
        _stuck_in_c()

    def failed(self, exc: BaseException) -> None:
        _append(self.path + ".failed", f"{type(exc).__name__}: {exc}")


class CatastrophicRegexJob(Job):
    """A catastrophic backtracking regex (2**64 steps)."""

    timeout = 0.5

    def handle(self) -> None:
        _append(self.path, "start")
        re.match(r"(a+)+$", "a" * 64 + "b")


class SwallowingJob(Job):
    """Swallows every timeout alarm for `seconds`, so it overruns its timeout in Python."""

    timeout = 0.2

    def handle(self) -> None:
        _append(self.path, "start")
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            with contextlib.suppress(BaseException):  # the point: it swallows the alarm
                time.sleep(0.02)
        _append(self.path, "returned")


class Point(BaseModel):
    """A model argument: travels as JSON, comes back as a Point."""

    x: float
    y: float = 0.0


class PlotJob(Job):
    """Appends its point (a model) and its optional label point to the file `path`."""

    point: Point
    label: Point | None

    def handle(self) -> None:
        _append(self.path, f"{type(self.point).__name__} {self.point.x} {self.point.y}")


class PublishJob(Job):
    """Publishes `{"n": n}` to `topic` at QoS 1 through the worker's MQTT connection."""

    def handle(self) -> None:
        self.publish(self.topic, {"n": self.n}, qos=1)


class GateJob(Job):
    """Appends `start <pid>` to `path`, waits until the file `gate` exists (at most
    `seconds`), then appends `finished <pid>`: a job that runs exactly as long as a
    test wants. Appends are O_APPEND writes, so every run of every worker counts."""

    max_tries = 5  # no timeout: `seconds` bounds it (and a timeout would warn about leases)

    def handle(self) -> None:
        _append(self.path, f"start {os.getpid()}")
        deadline = time.monotonic() + self.seconds
        while not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        _append(self.path, f"finished {os.getpid()}")
