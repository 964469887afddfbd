"""Scenarios 2 and 7: the queue's backend goes away under load, and comes back.

2. Redis killed with SIGKILL and restarted after 2 s and after 10 s while the app
   receives a stream and the workers run: app and workers reconnect by themselves;
   0 lost with `appendfsync always`; with `everysec` the loss measured for a process
   kill is reported (the AOF is written before each reply, so only a power loss or
   a kernel crash can take the last second).
7. A backend outage during intake (workers stopped): Redis killed for 10 s, MariaDB
   unreachable for 10 s (a proxy between the app and the shared server is cut),
   SQLite locked for 10 s (another connection holds an exclusive transaction):
   0 dead letters, 0 lost, everything acknowledged is queued afterwards.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import Case, Outcome, Probe, base_env, judge, scale, scaled
from benchmarks.faults.proxy import CuttableProxy
from benchmarks.faults.system import StreamResult, stream_through_app
from tests.mqtt_helpers import PrivateMosquitto

FAMILY = "backend_outage"
REDIS_KILL = "2 Redis kill -9 under load"
INTAKE = "7 backend outage during intake"
SCENARIOS = {
    REDIS_KILL: "app and workers reconnect by themselves; 0 lost with appendfsync always "
    "(everysec: the loss of a process kill is measured)",
    INTAKE: "an outage is backpressure: 0 dead letters, 0 lost, all acknowledged is queued",
}
#: Messages per second of the stream, and seconds of stream around the outage.
RATE = 100.0
AROUND = 6.0
#: Seconds into the stream when the outage starts.
OUTAGE_AT = 2.0
#: (appendfsync, outage seconds) of scenario 2.
REDIS_KILL_VARIANTS = (("always", 2.0), ("always", 10.0), ("everysec", 10.0))


def _outage(seconds: float) -> float:
    """An outage's length at this scale (at least 2 s: shorter is no outage)."""
    return max(2.0, seconds * min(1.0, scale()))


def _fill(outcome: Outcome, result: StreamResult, started: float) -> None:
    outcome.seconds = round(time.monotonic() - started, 1)
    outcome.published, outcome.acknowledged = result.published, len(result.acked)
    outcome.queued = result.queued


def redis_kill(appendfsync: str, down: float, folder: Path) -> Outcome:
    """Scenario 2: kill -9 the private Redis under load, restart it after `down` s."""
    down = _outage(down)
    count = scaled(RATE * (down + AROUND), 100)
    outcome = Outcome(REDIS_KILL, "redis", 0, 0, 0, 0, 0, 0, SCENARIOS[REDIS_KILL])
    outcome.variant = f"{appendfsync}, down {down:.0f} s"
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")
    try:
        with backend("redis", folder / "backend", base_env(probe), appendfsync) as found:
            redis = found.redis
            assert redis is not None

            def fault(span: float) -> None:
                time.sleep(min(OUTAGE_AT, span / 4))
                redis.kill()
                time.sleep(down)
                redis.start()

            result = stream_through_app(
                found, broker, probe, folder, count, RATE, fault, workers_during=True
            )
    finally:
        broker.stop()
    _fill(outcome, result, started)
    outcome.explanation = (
        f"{result.dead_letters} dead letters; workers survived: {result.workers_alive}"
    )
    ok = result.dead_letters == 0 and result.workers_alive
    return judge(outcome, result.acked, result.runs, ok, "dead letters or a worker died")


def intake_outage(driver: str, folder: Path) -> Outcome:
    """Scenario 7: the backend unreachable (or locked) for 10 s while only the app runs."""
    down = _outage(10.0)
    count = scaled(RATE * (down + AROUND), 100)
    outcome = Outcome(INTAKE, driver, 0, 0, 0, 0, 0, 0, SCENARIOS[INTAKE])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")
    proxy: CuttableProxy | None = None
    try:
        with backend(driver, folder / "backend", base_env(probe), "always") as found:
            app_env: dict[str, str] = {}
            if driver == "mariadb":
                proxy = CuttableProxy("127.0.0.1", 3306)
                app_env["DB_URL"] = found.env["DB_URL"].replace(":3306/", f":{proxy.port}/")
            sqlite_path = found.env["SQLITE_PATH"]

            def fault(span: float) -> None:
                time.sleep(min(OUTAGE_AT, span / 4))
                if driver == "redis":
                    assert found.redis is not None
                    found.redis.kill()
                    time.sleep(down)
                    found.redis.start()
                elif proxy is not None:
                    proxy.cut()
                    time.sleep(down)
                    proxy.resume()
                else:
                    lock = sqlite3.connect(sqlite_path, timeout=30, isolation_level=None)
                    lock.execute("BEGIN EXCLUSIVE")
                    time.sleep(down)
                    lock.execute("ROLLBACK")
                    lock.close()

            result = stream_through_app(
                found, broker, probe, folder, count, RATE, fault, app_env=app_env
            )
    finally:
        broker.stop()
        if proxy is not None:
            proxy.close()
    _fill(outcome, result, started)
    outcome.variant = f"down {down:.0f} s" + (" (locked)" if driver == "sqlite" else "")
    outcome.explanation = f"{result.dead_letters} dead letters"
    queued_all = (result.queued or 0) >= len(result.acked)
    ok = result.dead_letters == 0 and queued_all
    return judge(outcome, result.acked, result.runs, ok, "dead letters or not all queued")


def cases() -> list[Case]:
    """Scenario 2's variants on Redis, then scenario 7 on every driver."""
    kills = [
        Case(REDIS_KILL, "redis", SCENARIOS[REDIS_KILL], partial(redis_kill, fsync, down))
        for fsync, down in REDIS_KILL_VARIANTS
    ]
    return kills + [
        Case(INTAKE, d, SCENARIOS[INTAKE], partial(intake_outage, d))
        for d in ("redis", "mariadb", "sqlite")
    ]
