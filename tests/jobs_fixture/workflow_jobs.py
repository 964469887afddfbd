"""Test jobs of the workflow features (unique jobs, rate limits, overlap locks): each
appends evidence to the file `path`, so a test can read what ran, when, in which process."""

from __future__ import annotations

import os
import time
from typing import Any

from queues import Job
from queues.job_middleware import RateLimited, WithoutOverlapping


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


class UniqueRecord(Job):
    """Unique per `device_id` for a minute; appends its `value`."""

    unique_for = 60

    def unique_id(self) -> str:
        return str(self.device_id)

    def handle(self) -> None:
        _append(self.path, str(self.value))


class UniqueFailing(Job):
    """Unique per class; fails on every attempt (two of them)."""

    unique_for = 60
    max_tries = 2

    def handle(self) -> None:
        _append(self.path, "attempt")
        raise RuntimeError("always")


class Overlapping(Job):
    """Holds `key` for `hold` seconds; appends `start end pid` (unix times)."""

    timeout = 0.9  # below 1 s like every fixture job (tests/test_worker.py lowers the lease)

    def middleware(self) -> list[Any]:
        return [WithoutOverlapping(lambda job: job.key, release_after=0.05)]

    def handle(self) -> None:
        start = time.time()
        time.sleep(self.hold)
        _append(self.path, f"{start!r} {time.time()!r} {os.getpid()}")


class Limited(Job):
    """At most `limit` per `per` seconds under key `key`; appends its start time."""

    def middleware(self) -> list[Any]:
        return [RateLimited(self.key, self.limit, self.per)]

    def handle(self) -> None:
        _append(self.path, repr(time.time()))
