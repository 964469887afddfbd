"""`ProbeJob`: appends its number to a file opened with O_APPEND once it has run.

The harness counts runs from that file alone (one line per run), so a job run
twice shows twice and a lost job never shows, whatever the framework believes.
"""

from __future__ import annotations

import os
import re
import time

from queues import Job

#: Directory of the run log and fail-once markers; set by the harness for each process.
PROBE_DIR_ENV = "FAULTS_PROBE_DIR"
#: File (in the probe directory) each run appends its number to.
RUN_LOG = "runs.log"


def append_line(path: str, line: str) -> None:
    """One write(2) of `line` on an O_APPEND file: concurrent writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class ProbeJob(Job):
    """Sleeps `ms` milliseconds, then records `n` in the run log.

    With `fail_once` the first attempt raises (a marker file made with O_EXCL
    tells the first attempt from the next, across processes). Plenty of tries:
    a worker killed mid-job counts an attempt, and a kill must not fail the job.
    """

    max_tries = 20
    timeout = 2

    n: int
    ms: float = 0.0
    fail_once: bool = False

    def handle(self) -> None:
        """Run (sleep), fail once if asked, then append `n` to the run log."""
        folder = os.environ[PROBE_DIR_ENV]
        if self.ms:
            time.sleep(self.ms / 1000.0)
        if self.fail_once:
            try:
                os.close(os.open(os.path.join(folder, f"failed-{self.n}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise RuntimeError(f"probe {self.n} fails its first attempt on purpose")
        append_line(os.path.join(folder, RUN_LOG), str(self.n))


class AlwaysFails(Job):
    """Poison: raises on every attempt; ends in the failed store after `max_tries`."""

    max_tries = 2
    n: int = 0

    def handle(self) -> None:
        """Fail."""
        raise RuntimeError(f"poison job {self.n} always fails")


class Hangs(Job):
    """Poison: sleeps far past its timeout (Python code: the soft timeout stops it)."""

    max_tries = 1
    timeout = 1
    n: int = 0

    def handle(self) -> None:
        """Hang."""
        time.sleep(3600)


class StuckInC(Job):
    """Poison: a catastrophic regular-expression match, stuck in C code past its timeout
    (no signal reaches it: the worker's watchdog ends the process)."""

    max_tries = 1
    timeout = 1
    n: int = 0

    def handle(self) -> None:
        """Backtrack for ever inside `re`."""
        re.match(r"(a+)+$", "a" * 64 + "b")
