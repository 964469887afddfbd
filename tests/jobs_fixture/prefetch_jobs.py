"""Jobs of the prefetch and concurrency tests (tests/test_worker_prefetch.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from queues import Job

#: Seconds HoldFirstTime sleeps on its first attempt: far longer than any test waits.
HOLD_SECONDS = 300.0


class HoldFirstTime(Job):
    """First attempt: writes `<path>.held` and sleeps (the test kills its worker).
    Later attempts append `done <attempt>` to `path`."""

    def handle(self) -> None:
        marker = Path(self.path + ".held")
        if not marker.exists():
            marker.write_text("held", encoding="utf-8")
            time.sleep(HOLD_SECONDS)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(f"done {self.attempts}\n")


class OverlapJob(Job):
    """Sleeps `seconds`, recording `<value> <start> <end> <thread>` to `path` (concurrency)."""

    def handle(self) -> None:
        start = time.monotonic()
        time.sleep(self.seconds)
        end = time.monotonic()
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(f"{self.value} {start!r} {end!r} {threading.get_ident()}\n")
