"""Test jobs: each leaves evidence in files named by its data, so tests in
another process can see what ran, when, and how often."""

from __future__ import annotations

import asyncio
import os
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
