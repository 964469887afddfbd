"""Periodic dispatch: entries declared in Python, run by `python main.py --schedule`.

The app declares a module-level `schedule` in its schedule module
(SCHEDULE_MODULE, default `app.schedule`):

    from queues.schedule import Schedule
    schedule = Schedule()
    schedule.every(5).minutes(PruneReadings(days=30))
    schedule.every(1).days(DailyReport()).at("03:00")
    schedule.cron("*/15 8-18 * * 1-5", PollDevices(), catch_up="once")

Ticks are instants in UTC: an interval entry ticks at the multiples of its
interval since the unix epoch (plus its `.at()` offset), a cron entry at the
times of its expression (cronsim). Each tick is dispatched exactly once however
many schedulers run: a scheduler dispatches a tick only after claiming
`schedule:{entry name}:{tick}` (queues/coordination.py, atomic on the queue
connection's backend), and the claim outlives the next tick, so a late or
restarted scheduler cannot claim it again.

Missed ticks: a running scheduler that wakes late (a pause, a loaded machine)
dispatches the latest due tick once, never a burst; a tick whose claim or
dispatch fails (an outage) is given back and tried again a second later. On start, `catch_up`
decides about the latest tick before the start: `"skip"` (default) leaves it
(only ticks from now on run), `"once"` dispatches it unless a scheduler already
did, so a job missed during downtime runs once (note: also on the very first
start).

Entry names key the claims, so they must be the same in every scheduler
process and unique in the schedule: the default is the job's name and its
timing (`PruneReadings every 300s`); pass `name=` for two entries of one job
with the same timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError

from queues.coordination import MAX_NAME_LENGTH, Coordinator
from queues.job import Job

logger = logging.getLogger("queues.schedule")

#: What an entry's `catch_up` may be.
CATCH_UP_CHOICES = ("skip", "once")
#: Seconds a tick claim outlives the gap to the next tick (a restarted scheduler
#: must still see the latest tick's claim).
CLAIM_MARGIN = 60.0
#: Longest sleep of the scheduler loop, seconds (a stop is seen within it).
MAX_SLEEP = 1.0
#: Seconds of each unit of `every(n)`.
UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}


class ScheduleError(ValueError):
    """A schedule declaration is wrong; the message names the entry and the fix."""


@dataclass
class Entry:
    """One periodic dispatch: a job, its timing, what to do about missed ticks."""

    job: Job
    interval: float | None = None  #: seconds between ticks (interval entries)
    cron: str | None = None  #: a cron expression (cron entries), in UTC
    offset: float = 0.0  #: seconds after each interval boundary (`.at()`)
    catch_up: str = "skip"
    queue: str | None = None
    connection: str | None = None
    name: str = ""
    _cron: CronSim | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.catch_up not in CATCH_UP_CHOICES:
            raise ScheduleError(
                f"schedule entry {self.job.job_name()}: catch_up must be 'skip' or 'once', "
                f"got {self.catch_up!r}"
            )
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime(2000, 1, 1, tzinfo=UTC))
            except CronSimError as exc:
                raise ScheduleError(
                    f"schedule entry {self.job.job_name()}: bad cron expression "
                    f"{self.cron!r}: {exc}"
                ) from None
        if not self.name:
            self.name = self.default_name()

    def default_name(self) -> str:
        """The job's name and the entry's timing."""
        if self.cron is not None:
            return f"{self.job.job_name()} cron {self.cron}"
        at = f"+{self.offset:g}" if self.offset else ""
        return f"{self.job.job_name()} every {self.interval:g}s{at}"

    def at(self, clock: str) -> Entry:
        """Tick at `HH:MM` (UTC) past each interval boundary (daily: that time of day)."""
        try:
            hours, minutes = (int(part) for part in clock.split(":"))
        except ValueError:
            hours, minutes = -1, -1
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ScheduleError(
                f"schedule entry {self.name}: .at() takes 'HH:MM' (UTC), got {clock!r}"
            )
        offset = hours * 3600.0 + minutes * 60.0
        if self.interval is None or offset >= self.interval:
            raise ScheduleError(
                f"schedule entry {self.name}: .at({clock!r}) must fall inside its interval "
                "(use it with every(n).days or .hours)"
            )
        renamed = self.name == self.default_name()
        self.offset = offset
        if renamed:
            self.name = self.default_name()
        return self

    def previous_tick(self, now: float) -> float:
        """The latest tick at or before unix time `now`."""
        if self.interval is not None:
            return math.floor((now - self.offset) / self.interval) * self.interval + self.offset
        assert self.cron is not None
        moment = datetime.fromtimestamp(now, UTC).replace(microsecond=0)
        previous = CronSim(self.cron, moment, reverse=True)
        tick = next(previous).timestamp()
        # cronsim's reverse iteration starts before `moment`; `moment` itself may tick.
        after = next(CronSim(self.cron, datetime.fromtimestamp(tick, UTC))).timestamp()
        return after if after <= now else tick

    def next_tick(self, after: float) -> float:
        """The first tick strictly after unix time `after`."""
        if self.interval is not None:
            return self.previous_tick(after) + self.interval
        assert self.cron is not None
        moment = datetime.fromtimestamp(math.floor(after), UTC)
        return next(CronSim(self.cron, moment)).timestamp()


class Every:
    """`schedule.every(n)`: pick the unit by calling it with the job."""

    def __init__(self, schedule: Schedule, count: float) -> None:
        if isinstance(count, bool) or not isinstance(count, int | float) or not count > 0:
            raise ScheduleError(f"schedule.every() takes a number > 0, got {count!r}")
        self._schedule = schedule
        self._count = float(count)

    def _entry(self, unit: str) -> Callable[..., Entry]:
        def add(job: Job, **options: Any) -> Entry:
            return self._schedule.add(Entry(job, interval=self._count * UNITS[unit], **options))

        return add

    @property
    def seconds(self) -> Callable[..., Entry]:
        """`every(n).seconds(job, catch_up=..., queue=..., connection=..., name=...)`."""
        return self._entry("seconds")

    @property
    def minutes(self) -> Callable[..., Entry]:
        """`every(n).minutes(job, ...)`."""
        return self._entry("minutes")

    @property
    def hours(self) -> Callable[..., Entry]:
        """`every(n).hours(job, ...)`."""
        return self._entry("hours")

    @property
    def days(self) -> Callable[..., Entry]:
        """`every(n).days(job, ...)`; add `.at("HH:MM")` for a time of day (UTC)."""
        return self._entry("days")


class Schedule:
    """The entries of one app (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def every(self, count: float = 1) -> Every:
        """Start an interval entry: `every(5).minutes(job)`."""
        return Every(self, count)

    def cron(self, expression: str, job: Job, **options: Any) -> Entry:
        """Add a cron entry (five fields, UTC), e.g. `cron("0 3 * * *", job)`."""
        return self.add(Entry(job, cron=expression, **options))

    def add(self, entry: Entry) -> Entry:
        """Add an entry; `ScheduleError` if its job is not a Job."""
        if not isinstance(entry.job, Job):
            raise ScheduleError(f"a schedule entry takes a Job instance, got {entry.job!r}")
        self.entries.append(entry)
        return entry

    def check_names(self) -> None:
        """`ScheduleError` naming the first entry name used twice."""
        seen: set[str] = set()
        for entry in self.entries:
            if entry.name in seen:
                raise ScheduleError(
                    f"two schedule entries are named {entry.name!r}: pass name=... to tell "
                    "them apart (names key the per-tick claims)"
                )
            seen.add(entry.name)


def load_schedule(module: str) -> Schedule:
    """The `schedule` of `module`; `ScheduleError` naming the module if it has none."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise ScheduleError(
                f"schedule module {module} not found: create it with a module-level "
                "`schedule = Schedule()` or set SCHEDULE_MODULE"
            ) from None
        raise
    schedule = getattr(loaded, "schedule", None)
    if not isinstance(schedule, Schedule):
        raise ScheduleError(
            f"schedule module {module} has no module-level `schedule` (a queues.schedule.Schedule)"
        )
    schedule.check_names()
    return schedule


def claim_ttl(entry: Entry, tick: float) -> float:
    """How long the claim of `tick` lives: past the next tick, plus CLAIM_MARGIN."""
    return max(entry.next_tick(tick) - tick, 1.0) * 2 + CLAIM_MARGIN


class Scheduler:
    """Dispatches the ticks of a schedule's entries, each once across every scheduler.

    `coordinator(entry)` gives the store of an entry's claims (the queue
    connection's), `dispatch(entry)` queues its job. `run()` loops until
    `stop()`; `run_due(now)` is one turn of the loop (tests call it).
    """

    def __init__(
        self,
        schedule: Schedule,
        coordinator: Callable[[Entry], Coordinator],
        dispatch: Callable[[Entry], str],
        token: str,
        now: float | None = None,
    ) -> None:
        self.schedule = schedule
        self._coordinator = coordinator
        self._dispatch = dispatch
        self.token = token
        self._stop = threading.Event()
        started = time.time() if now is None else now
        #: per entry: the latest tick already decided (dispatched here, by another, or skipped)
        self._done: dict[str, float] = {
            entry.name: entry.previous_tick(started) if entry.catch_up == "skip" else -math.inf
            for entry in schedule.entries
        }

    def run_due(self, now: float) -> list[tuple[str, float]]:
        """Dispatch every entry's latest due tick not decided yet, if this scheduler wins
        its claim; return the `(entry name, tick)` pairs it dispatched.

        A tick whose claim or dispatch fails (a backend outage) is given back and
        tried again at the next turn, by this scheduler or another."""
        dispatched = []
        for entry in self.schedule.entries:
            tick = entry.previous_tick(now)
            if tick <= self._done[entry.name]:
                continue
            name = self._claim_name(entry, tick)
            coordinator = self._coordinator(entry)
            try:
                if coordinator.claim(name, self.token, claim_ttl(entry, tick)) != self.token:
                    self._done[entry.name] = tick  # another scheduler has it
                    continue
            except Exception as exc:
                logger.error("schedule %s: cannot claim tick %s: %s", entry.name, _iso(tick), exc)
                continue
            try:
                job_id = self._dispatch(entry)
            except Exception as exc:
                logger.error(
                    "schedule %s: tick %s not dispatched (tried again): %s",
                    entry.name,
                    _iso(tick),
                    exc,
                )
                with contextlib.suppress(Exception):
                    coordinator.release(name, self.token)
                continue
            self._done[entry.name] = tick
            dispatched.append((entry.name, tick))
            logger.info("schedule %s: tick %s dispatched as job %s", entry.name, _iso(tick), job_id)
        return dispatched

    @staticmethod
    def _claim_name(entry: Entry, tick: float) -> str:
        name = f"schedule:{entry.name}:{tick:.3f}"
        if len(name) > MAX_NAME_LENGTH:
            digest = hashlib.sha256(entry.name.encode("utf-8", "surrogatepass")).hexdigest()
            name = f"schedule:#{digest}:{tick:.3f}"
        return name

    def sleep_time(self, now: float) -> float:
        """Seconds until the next tick of any entry (at most MAX_SLEEP)."""
        soonest = min((entry.next_tick(now) for entry in self.schedule.entries), default=math.inf)
        return max(min(soonest - now, MAX_SLEEP), 0.0)

    def run(self) -> int:
        """Loop until `stop()`; return 0."""
        logger.info("scheduler started: %d entries", len(self.schedule.entries))
        for entry in self.schedule.entries:
            logger.info("schedule %s: next tick %s", entry.name, _iso(entry.next_tick(time.time())))
        while not self._stop.is_set():
            self.run_due(time.time())
            self._stop.wait(self.sleep_time(time.time()))
        logger.info("scheduler stopped")
        return 0

    def stop(self) -> None:
        """End `run()` after its current turn (from any thread or a signal handler)."""
        self._stop.set()


def _iso(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")
