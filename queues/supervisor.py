"""Run N worker processes and keep them running (`--queue-work --workers N`).

Each worker is a fresh `python main.py --queue-work ...` child process (no fork,
so no socket or lock is shared). A child that exits for any reason - a crash,
or a clean exit after `--max-jobs`, `--max-time` or `--memory` - is started
again, with a growing pause when children keep dying right after start. On
SIGTERM/SIGINT the supervisor stops restarting, forwards the signal to every
child (a second signal is forwarded too, which makes children exit at once)
and waits for them.

Children run in their own process group, so a terminal's Ctrl-C reaches them
once, through the supervisor. They know the supervisor's pid and exit cleanly
if it disappears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from queues.worker import GRACE_PERIOD, SUPERVISOR_PID_ENV

logger = logging.getLogger("queues.supervisor")

#: The entry point every worker child runs.
MAIN_SCRIPT = Path(__file__).resolve().parent.parent / "main.py"
#: Seconds between checks of the children.
POLL_INTERVAL = 0.2
#: First pause before restarting a child that died quickly, seconds (doubles up to the cap).
RESTART_DELAY = 0.5
#: Largest pause between restarts of a child that keeps dying, seconds.
RESTART_DELAY_CAP = 30.0
#: A child alive this long (seconds) counts as healthy: its restart pause resets.
HEALTHY_UPTIME = 10.0
#: Seconds to wait for children after a stop signal before killing them.
STOP_TIMEOUT = GRACE_PERIOD + 15.0


class _Slot:
    """One worker position: the current child and its restart bookkeeping."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.pause = RESTART_DELAY
        self.restarts = 0


class Supervisor:
    """Keeps `workers` children of `worker_args` alive until stopped; `run()` returns 0."""

    def __init__(
        self,
        worker_args: Sequence[str],
        workers: int,
        python: str = sys.executable,
        script: Path = MAIN_SCRIPT,
        env: dict[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.command = [python, str(script), *worker_args]
        self.slots = [_Slot(i) for i in range(workers)]
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_PID_ENV] = str(os.getpid())
        self._stopping = False
        self._signals: list[int] = []

    def run(self) -> int:
        """Start the children, restart any that exit, stop them on a signal."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        logger.info("supervisor %d: starting %d workers", os.getpid(), len(self.slots))
        try:
            while not self._stopping:
                now = time.monotonic()
                for slot in self.slots:
                    self._check(slot, now)
                time.sleep(POLL_INTERVAL)
            self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        logger.info("supervisor %d: all workers stopped", os.getpid())
        return 0

    def pids(self) -> list[int]:
        """Pids of the children currently running."""
        return [s.process.pid for s in self.slots if s.process and s.process.poll() is None]

    def _check(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                if now - slot.started_at >= HEALTHY_UPTIME:
                    slot.pause = RESTART_DELAY
                return
            uptime = now - slot.started_at
            slot.process = None
            slot.restarts += 1
            if uptime < HEALTHY_UPTIME and code != 0:
                slot.next_start = now + slot.pause
                slot.pause = min(slot.pause * 2, RESTART_DELAY_CAP)
            else:
                slot.next_start = now
            logger.warning(
                "supervisor: worker %d (pid %d) exited with code %d after %.1f s; restarting",
                slot.index,
                process.pid,
                code,
                uptime,
            )
        if now >= slot.next_start and not self._stopping:
            slot.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
            slot.started_at = now
            logger.info("supervisor: worker %d started as pid %d", slot.index, slot.process.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        self._signals.append(signum)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                logger.error("supervisor: worker pid %d did not stop, killing it", process.pid)
                process.kill()
                process.wait()


def worker_arguments(args: Any) -> list[str]:
    """The `main.py` flags of one worker child: the parent's worker flags minus --workers."""
    argv = ["--queue-work"]
    for flag, attribute in (
        ("--connection", "connection"),
        ("--queue", "queue"),
        ("--sleep", "sleep"),
        ("--max-jobs", "max_jobs"),
        ("--max-time", "max_time"),
        ("--memory", "memory"),
        ("--timeout", "timeout"),
        ("--tries", "tries"),
        ("--backoff", "backoff"),
    ):
        value = getattr(args, attribute, None)
        if value is not None:
            argv += [flag, str(value)]
    return argv
