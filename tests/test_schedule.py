"""The scheduler: tick arithmetic, catch-up after downtime, and several scheduler
processes dispatching each tick exactly once."""

from __future__ import annotations

import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from queues.coordination import LocalCoordinator
from queues.envelope import Envelope
from queues.schedule import Entry, Schedule, ScheduleError, Scheduler, load_schedule
from tests.conftest import MARIADB_URL, need_service
from tests.driver_factories import make_driver
from tests.jobs_fixture.jobs import RecordJob
from tests.jobs_fixture.support import main_env, run_main, start_main
from tests.test_unique_jobs import _clear_locks


def _t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_interval_ticks_are_aligned_to_the_epoch_and_at_shifts_them() -> None:
    schedule = Schedule()
    five = schedule.every(5).minutes(RecordJob(path="-", value=1))
    daily = schedule.every(1).days(RecordJob(path="-", value=1)).at("03:00")
    assert five.previous_tick(_t("2026-12-03 13:27:10")) == _t("2026-12-03 13:25:00")
    assert five.next_tick(_t("2026-12-03 13:25:00")) == _t("2026-12-03 13:30:00")
    assert daily.previous_tick(_t("2026-12-03 02:59:59")) == _t("2026-12-02 03:00:00")
    assert daily.next_tick(_t("2026-12-03 03:00:00")) == _t("2026-12-04 03:00:00")
    assert daily.name == "RecordJob every 86400s+10800"


def test_cron_ticks_include_the_current_instant() -> None:
    entry = Schedule().cron("*/15 * * * *", RecordJob(path="-", value=1))
    assert entry.previous_tick(_t("2026-12-03 13:30:00")) == _t("2026-12-03 13:30:00")
    assert entry.previous_tick(_t("2026-12-03 13:44:59")) == _t("2026-12-03 13:30:00")
    assert entry.next_tick(_t("2026-12-03 13:30:00")) == _t("2026-12-03 13:45:00")


def test_bad_declarations_name_the_entry() -> None:
    schedule = Schedule()
    with pytest.raises(ScheduleError, match="bad cron expression"):
        schedule.cron("61 * * * *", RecordJob(path="-", value=1))
    with pytest.raises(ScheduleError, match="catch_up must be 'skip' or 'once'"):
        schedule.every(1).minutes(RecordJob(path="-", value=1), catch_up="all")
    with pytest.raises(ScheduleError, match="must fall inside its interval"):
        schedule.every(1).hours(RecordJob(path="-", value=1)).at("03:00")
    schedule.every(1).minutes(RecordJob(path="-", value=1))
    schedule.every(1).minutes(RecordJob(path="-", value=2))
    with pytest.raises(ScheduleError, match="pass name="):
        schedule.check_names()
    with pytest.raises(ScheduleError, match="no module-level `schedule`"):
        load_schedule("tests.conftest")


def _scheduler(
    schedule: Schedule, store: LocalCoordinator, now: float, sent: list[str]
) -> Scheduler:
    def send(entry: Entry) -> str:
        sent.append(entry.name)
        return "id"

    return Scheduler(schedule, lambda e: store, send, token=f"s{len(sent)}-{now}", now=now)


def test_catch_up_once_dispatches_the_missed_tick_once_and_skip_leaves_it() -> None:
    schedule = Schedule()
    schedule.every(1).hours(RecordJob(path="-", value=1), catch_up="once", name="once")
    schedule.every(1).hours(RecordJob(path="-", value=1), name="skip")
    store = LocalCoordinator()
    sent: list[str] = []
    start = _t("2026-12-03 13:20:00")  # the 13:00 tick was missed while nothing ran
    first = _scheduler(schedule, store, start, sent)
    assert first.run_due(start) == [("once", _t("2026-12-03 13:00:00"))]
    # A second scheduler starting now does not dispatch that tick again.
    assert _scheduler(schedule, store, start + 1, sent).run_due(start + 1) == []
    assert first.run_due(start + 60) == []
    # A late wake after several ticks dispatches the latest one, once, per entry.
    late = _t("2026-12-03 16:10:00")
    assert first.run_due(late) == [("once", _t("2026-12-03 16:00:00")),
                                   ("skip", _t("2026-12-03 16:00:00"))]  # fmt: skip
    assert sent == ["once", "once", "skip"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", "mariadb", "sqlite"])
def test_three_scheduler_processes_dispatch_each_tick_exactly_once(
    backend: str, tmp_path: Path
) -> None:
    driver = make_driver(backend, tmp_path)
    _clear_locks(driver)
    connection = "redis" if backend == "redis" else "database"
    extra = {"DB_URL": MARIADB_URL} if backend == "mariadb" else {}
    if backend == "mariadb":
        need_service("MariaDB", "127.0.0.1", 3306)
    env = main_env(connection, tmp_path, SCHEDULE_MODULE="tests.schedule_fixture", **extra)
    children = [start_main(["--schedule"], env) for _ in range(3)]
    time.sleep(6.0)
    for child in children:
        child.send_signal(signal.SIGTERM)
    ticks: list[float] = []
    for child in children:
        _, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        ticks += [_t(t[:19]) for t in re.findall(r"every 1s: tick (\S+) dispatched", err)]
    # Each tick once, none skipped between the first and the last.
    assert len(ticks) == len(set(ticks)) >= 3
    assert sorted(ticks) == [min(ticks) + n for n in range(len(ticks))]
    queued = []
    while (job := driver.pop(["default"])) is not None:
        queued.append(Envelope.from_json(job.payload).data["value"])
    assert queued == [1] * len(ticks)
    driver.close()


def test_a_missing_schedule_module_is_one_line(tmp_path: Path) -> None:
    env = main_env("database", tmp_path, SCHEDULE_MODULE="tests.no_such_schedule")
    done = run_main(["--schedule"], env)
    assert done.returncode == 2
    assert "schedule module tests.no_such_schedule not found" in done.stderr


def test_entry_defaults() -> None:
    entry = Entry(RecordJob(path="-", value=1), interval=60.0)
    assert (entry.catch_up, entry.name) == ("skip", "RecordJob every 60s")


def test_a_tick_whose_dispatch_fails_is_tried_again_at_the_next_turn() -> None:
    schedule = Schedule()
    schedule.every(1).minutes(RecordJob(path="-", value=1), name="m")
    store = LocalCoordinator()
    calls: list[str] = []

    def send(entry: Entry) -> str:
        calls.append(entry.name)
        if len(calls) == 1:
            raise ConnectionError("queue backend down")
        return "id"

    start = _t("2026-12-03 13:20:30")
    first = Scheduler(schedule, lambda e: store, send, token="a", now=start)
    second = Scheduler(schedule, lambda e: store, send, token="b", now=start)
    assert first.run_due(start + 40) == []  # 13:21 fails and is given back
    assert second.run_due(start + 41) == [("m", _t("2026-12-03 13:21:00"))]
    assert first.run_due(start + 42) == []  # the other scheduler dispatched it
    assert calls == ["m", "m"]


def test_a_bad_schedule_module_setting_is_one_line() -> None:
    from config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="SCHEDULE_MODULE must be a dotted module path"):
        load_settings(environ={"SCHEDULE_MODULE": "app/schedule.py"}, dotenv_path=None)
