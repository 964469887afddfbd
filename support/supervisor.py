"""Keep N `python main.py ...` child processes running: the one supervisor of `--workers N`.

`--run --workers N` and `--queue-work --workers N` both use it. Each child is a
fresh interpreter running main.py (no fork, so no socket, lock or thread is
shared), in its own session, so a terminal's Ctrl-C reaches it once, through
the supervisor. What it guarantees:

* Restarts: a child that exits is started again. A planned exit (code 0: the
  worker's `--max-jobs`, `--max-time` or `--memory`) is logged at INFO and
  restarted at once. Any other exit is logged at WARNING and restarted after a
  full-jitter backoff (support/backoff.py) that grows while the child keeps
  dying young, up to `RESTART_DELAY_CAP`, and starts over once a child has lived
  `HEALTHY_UPTIME` seconds.
* Stop: SIGTERM/SIGINT end the restarts and are forwarded to every child (a
  second signal too, which makes children exit at once); a child still running
  `stop_timeout` seconds later is killed.
* Parent death: a child calls `join_supervisor()` at start and then exits
  (SIGTERM to itself, its normal graceful stop) within seconds of the
  supervisor's death, SIGKILL included: PR_SET_PDEATHSIG on Linux, a getppid
  watch elsewhere.
* Ending: with `restart_planned=False` a child that exits with code 0 is not
  started again (its work is done: `--stop-when-empty`, `--once`), and `run()`
  returns once no child runs any more.
* Watching: `on_exit(pid)` is called for every child that exits (the metrics
  run drops its gauges); `check_alive()` says whether the supervisor's own loop
  still turns (its `/health`).
* Names: each child has a name (`run-worker-0`, `queue-worker-1`) that appears
  in every log line it writes (support/logging_setup.py) and in the
  supervisor's lines about it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from support.backoff import Backoff

logger = logging.getLogger(__name__)

#: The entry point every child runs.
MAIN_SCRIPT = Path(__file__).resolve().parent.parent / "main.py"
#: Environment variable telling a child its supervisor's pid.
SUPERVISOR_PID_ENV = "ROUTEMQ_SUPERVISOR_PID"
#: Environment variable telling a child its name.
CHILD_NAME_ENV = "ROUTEMQ_CHILD_NAME"
#: Seconds between two checks of the children.
POLL_INTERVAL = 0.2
#: Seconds: ceiling of the jittered pause before restarting a child that crashed once;
#: doubles per consecutive early crash.
RESTART_DELAY = 1.0
#: Seconds: the longest pause before restarting a child that keeps crashing.
RESTART_DELAY_CAP = 30.0
#: Seconds a child must live for its next crash to count as a first one again.
HEALTHY_UPTIME = 10.0
#: Seconds between two looks at the parent pid where PR_SET_PDEATHSIG is missing.
PARENT_WATCH_INTERVAL = 1.0
#: `prctl` option that has the kernel signal a process when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Signal a child gets when its supervisor dies: the graceful stop of both kinds of child.
PARENT_DEATH_SIGNAL = signal.SIGTERM
#: Seconds without a turn of the supervisor's loop after which `check_alive` fails.
LOOP_STALL_AFTER = 10.0


@dataclass(frozen=True)
class Child:
    """One supervised position: its name in logs and its `main.py` arguments."""

    name: str
    argv: tuple[str, ...]


class _Slot:
    """One child position: the running process and its restart bookkeeping."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.done = False  #: exited with code 0 under `restart_planned=False`: not restarted
        self.backoff = Backoff(RESTART_DELAY, RESTART_DELAY_CAP)


class Supervisor:
    """Keeps one process per `Child` alive until stopped; `run()` returns 0 after the stop."""

    def __init__(
        self,
        children: Sequence[Child],
        stop_timeout: float,
        python: str = sys.executable,
        script: Path = MAIN_SCRIPT,
        env: dict[str, str] | None = None,
        on_exit: Callable[[int], None] | None = None,
        restart_planned: bool = True,
    ) -> None:
        if not children:
            raise ValueError("a supervisor needs at least one child")
        self.python = python
        self.script = script
        self.stop_timeout = stop_timeout
        self.slots = [_Slot(child) for child in children]
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_PID_ENV] = str(os.getpid())
        self.on_exit = on_exit
        self.restart_planned = restart_planned
        self.last_turn = time.monotonic()
        self._stop = threading.Event()

    def run(self) -> int:
        """Start the children, restart those that exit, stop all on SIGTERM/SIGINT or `stop()`."""
        previous = self._install_signals()
        logger.info("supervisor %d: starting %d children", os.getpid(), len(self.slots))
        try:
            while True:
                now = self.last_turn = time.monotonic()
                for slot in self.slots:
                    self._check(slot, now)
                if not self.restart_planned and all(s.done for s in self.slots):
                    break
                if self._stop.wait(POLL_INTERVAL):
                    break
            self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        logger.info("supervisor %d: all children stopped", os.getpid())
        return 0

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """End the restarts and send `signum` to every running child (from any thread)."""
        self._stop.set()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def check_alive(self) -> str | None:
        """None while the supervisor's loop turns, else how long it has not."""
        quiet = time.monotonic() - self.last_turn
        if quiet > LOOP_STALL_AFTER:
            return f"the supervisor's loop has not turned for {quiet:.1f} s"
        return None

    def pids(self) -> list[int]:
        """Pids of the children currently running."""
        return [s.process.pid for s in self.slots if s.process and s.process.poll() is None]

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stop.is_set():
            logger.info("received %s; stopping the children", signal.Signals(signum).name)
        self.stop(signum)

    def _check(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                return
            slot.process = None
            if self.on_exit is not None:
                try:
                    self.on_exit(process.pid)
                except Exception:
                    logger.exception("on_exit of %s failed", slot.child.name)
            uptime = now - slot.started_at
            if uptime >= HEALTHY_UPTIME:
                slot.backoff.reset()
            name = slot.child.name
            if code == 0 and not self.restart_planned:
                slot.done = True
                logger.info("%s (pid %d) finished its work", name, process.pid)
                return
            if code == 0:
                slot.next_start = now
                logger.info(
                    "%s (pid %d) exited after %.1f s (code 0: a planned exit); restarting",
                    name,
                    process.pid,
                    uptime,
                )
            else:
                delay = slot.backoff.next_delay()
                slot.next_start = now + delay
                logger.warning(
                    "%s (pid %d) exited with code %d after %.1f s; restarting in %.2f s",
                    name,
                    process.pid,
                    code,
                    uptime,
                    delay,
                )
        if now >= slot.next_start and not self._stop.is_set():
            self._start(slot, now)

    def _start(self, slot: _Slot, now: float) -> None:
        env = {**self.env, CHILD_NAME_ENV: slot.child.name}
        slot.process = subprocess.Popen(
            [self.python, str(self.script), *slot.child.argv], env=env, start_new_session=True
        )
        slot.started_at = now
        logger.info("%s started (pid %d)", slot.child.name, slot.process.pid)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.stop_timeout
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "%s (pid %d) did not stop in time; killing it", slot.child.name, process.pid
                )
                process.kill()
                process.wait()


def join_supervisor() -> str | None:
    """In a process a `Supervisor` started: exit with it; return the name it gave us.

    Arranges for `PARENT_DEATH_SIGNAL` to arrive within seconds of the
    supervisor's death (SIGKILL included), and takes the supervisor's markers
    out of `os.environ` so our own child processes are not mistaken for its.
    Returns None (and does nothing) in a process no supervisor started.
    """
    supervisor = os.environ.pop(SUPERVISOR_PID_ENV, "")
    name = os.environ.pop(CHILD_NAME_ENV, None)
    if not supervisor.isdigit():
        return name
    parent = int(supervisor)
    if _set_parent_death_signal(PARENT_DEATH_SIGNAL):
        if os.getppid() != parent:  # it died before the kernel was told to watch it
            os.kill(os.getpid(), PARENT_DEATH_SIGNAL)
        return name
    threading.Thread(target=watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    return name


def watch_parent(parent: int, interval: float = PARENT_WATCH_INTERVAL) -> None:
    """Block until `parent` is no longer our parent, then send ourselves `PARENT_DEATH_SIGNAL`.

    The portable fallback of PR_SET_PDEATHSIG (an orphan is re-parented, so its
    parent pid changes).
    """
    while os.getppid() == parent:
        time.sleep(interval)
    logger.warning("supervisor %d is gone; stopping", parent)
    os.kill(os.getpid(), PARENT_DEATH_SIGNAL)


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` when our parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
