"""What every scenario family shares: the scale, the outcome row, the probe's counts,
the processes of the system under test and the backend each driver runs on.

Nothing here trusts the framework's own bookkeeping: runs are read from the probe's
O_APPEND log, acknowledgements from the publisher's PUBACKs (or `dispatch()` returns).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.faults.probe.jobs import PROBE_DIR_ENV, RUN_LOG

ROOT = Path(__file__).resolve().parents[2]
#: Multiplies every count and duration of the scenarios (FAULTS_SCALE; 0.1 is a CI smoke run).
SCALE_ENV = "FAULTS_SCALE"
#: Where the app and workers find the probe route and job.
PROBE_ROUTES = "benchmarks.faults.probe.routes"
PROBE_JOBS = "benchmarks.faults.probe.jobs"
#: Seconds a started process may take to connect and subscribe.
START_TIMEOUT = 30.0
#: Seconds a stopped process may take to exit before it is killed.
STOP_TIMEOUT = 20.0
#: Seconds without a new run after which the missing jobs count as lost (a reservation of
#: a killed worker comes back within QUEUE_RETRY_AFTER, far less than this).
STALL = 15.0
#: Seconds the run log must stand still before it is counted (a late duplicate would be
#: a stored job run again; scenarios that kill workers wait out the lease instead).
SETTLE_QUIET = 1.0
#: The shared MariaDB server; the harness makes (and drops) its own database there.
MARIADB_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306"
#: Drivers every queue scenario runs on.
DRIVERS = ("redis", "mariadb", "sqlite")


def scale() -> float:
    """FAULTS_SCALE as a positive float (default 1.0); a bad value stops with its name."""
    raw = os.environ.get(SCALE_ENV, "1").strip() or "1"
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{SCALE_ENV} must be a number like 0.1 or 1, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"{SCALE_ENV} must be positive, got {raw!r}")
    return value


def scaled(count: float, minimum: int = 1) -> int:
    """`count` times the scale, at least `minimum`."""
    return max(minimum, round(count * scale()))


@dataclass
class Outcome:
    """One row of the table: what one scenario did on one driver, counted from outside."""

    scenario: str  #: e.g. "1 worker SIGKILL"
    driver: str
    published: int  #: messages published (or jobs dispatched, where no MQTT is involved)
    acknowledged: int  #: PUBACKs received (or dispatch() calls that returned)
    queued: int | None  #: jobs in the queue after the intake (None: workers ran meanwhile)
    run: int  #: lines in the probe's run log (runs, duplicates included)
    lost: int  #: acknowledged but never run
    duplicated: int  #: numbers run more than once
    expectation: str  #: what the scenario promises
    verdict: str = "pass"  #: "pass", "known" (a documented limitation) or "FAIL"
    explanation: str = ""
    seconds: float = 0.0
    variant: str = ""  #: what distinguishes rows of one scenario and driver (protocol, fsync)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON data."""
        return asdict(self)


@dataclass(frozen=True)
class Case:
    """One scenario on one driver, run in a folder of its own."""

    scenario: str
    driver: str
    expectation: str
    run: Callable[[Path], Outcome]


class Probe:
    """The probe's directory: the run log and the fail-once markers of one scenario run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """The variable that points the probe job at this directory."""
        return {PROBE_DIR_ENV: str(self.folder)}

    def runs(self) -> Counter[int]:
        """How many times each number ran, from the run log."""
        log = self.folder / RUN_LOG
        if not log.exists():
            return Counter()
        # A line that is no number (a job that ran with data of the wrong type) is skipped.
        return Counter(int(line) for line in log.read_text().split() if line.isdigit())

    def wait_for(self, numbers: set[int], timeout: float, stall: float = STALL) -> Counter[int]:
        """The run counts once every number in `numbers` ran, after `timeout` seconds, or
        once nothing ran for `stall` seconds (the rest is lost; waiting longer only wastes time)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            runs = self.runs()
            now = time.monotonic()
            if numbers <= set(runs) or now > deadline or now - since > stall:
                return runs
            if len(runs) != last:
                last, since = len(runs), now
            time.sleep(0.2)

    def settle(self, quiet: float = SETTLE_QUIET, timeout: float = 30.0) -> Counter[int]:
        """The run counts once the log stopped growing for `quiet` seconds (late duplicates)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = sum(self.runs().values())
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.2)
        return self.runs()


def judge(
    outcome: Outcome,
    acked: set[int],
    runs: Counter[int],
    extra_ok: bool = True,
    why: str = "",
    explained: set[int] | None = None,
    window: str = "",
) -> Outcome:
    """Fill lost, duplicated, run and the verdict from the numbers acknowledged and run.

    `explained`: numbers whose loss a documented limitation accounts for (published in
    its `window`); when every lost number is among them the verdict is "known", which
    does not fail the run. Any other loss fails it.
    """
    lost = acked - set(runs)
    outcome.lost = len(lost)
    outcome.duplicated = sum(1 for count in runs.values() if count > 1)
    outcome.run = sum(runs.values())
    problems = []
    if lost and explained is not None and lost <= explained and extra_ok:
        outcome.verdict = "known"
        outcome.explanation = f"{len(lost)} lost, all published {window}; " + outcome.explanation
        return outcome
    if lost:
        problems.append(f"lost {len(lost)}: {sorted(lost)[:10]}")
    if not extra_ok:
        problems.append(why)
    if problems:
        outcome.verdict = "FAIL"
        outcome.explanation = "; ".join(p for p in problems if p) + (
            f" ({outcome.explanation})" if outcome.explanation else ""
        )
    return outcome


class SystemProcess:
    """One `main.py` process of the system under test, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> SystemProcess:
        """Start (or restart) the process, appending to its log."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def wait_for_log(
        self, needle: str, occurrences: int = 1, timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until `needle` appeared `occurrences` times in the log; RuntimeError if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.read_text(errors="replace").count(needle) >= occurrences:
                return
            if not self.alive():
                break
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.name}: {needle!r} never appeared in {self.log}:\n{tail}")

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()


@contextmanager
def processes() -> Iterator[list[SystemProcess]]:
    """A list the scenario adds its processes to; each is stopped on exit."""
    started: list[SystemProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def base_env(probe: Probe, **extra: str) -> dict[str, str]:
    """The environment of every process: the probe app, quiet logs, no outside settings."""
    prefixes = ("MQTT_", "REDIS_", "DB_", "QUEUE_", "ENABLE_", "SQLITE_", "ROUTES_", "JOBS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        ROUTES_PACKAGE=PROBE_ROUTES,
        JOBS_PACKAGE=PROBE_JOBS,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **probe.env,
    )
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until true (True) or `timeout` seconds pass (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def unique(name: str) -> str:
    """`name` with a random suffix (client ids, group names, database names)."""
    return f"{name}{uuid.uuid4().hex[:8]}"
