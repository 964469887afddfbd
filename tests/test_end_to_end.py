"""End to end: MQTT publish -> route -> dispatch -> queue -> worker process -> effect.

A separate paho client publishes 1,000 QoS1 telemetry messages to the shared
Mosquitto; `main.py --run` routes them with the example app's
`devices/{device_id}/telemetry` route; two `main.py --queue-work` processes run
the `StoreReading` jobs. Every reading must be stored exactly once (no missing
reading, no repeated run) on each driver, and the queue must end empty.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text

from config.settings import load_settings
from queues.connections import get_driver, reset
from tests.conftest import (
    MARIADB_URL,
    MQTT_HOST,
    MQTT_PORT,
    POSTGRES_HOST,
    POSTGRES_PORT,
    POSTGRES_URL,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_TEST_DB,
    need_service,
)

ROOT = Path(__file__).resolve().parent.parent
#: Messages published per driver.
MESSAGE_COUNT = 1000
#: Messages published one at a time to idle workers, and the gap between them.
TRICKLE_COUNT = 20
TRICKLE_SPACING = 0.1
#: Seconds allowed for all readings to be stored.
DEADLINE = 120.0

pytestmark = pytest.mark.slow


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "REDIS_", "DB_"))}
    env.update(
        MQTT_HOST=MQTT_HOST,
        MQTT_PORT=str(MQTT_PORT),
        MQTT_CLIENT_ID=f"e2e-{uuid.uuid4().hex[:8]}",
        # Its own $share group: another checkout's suite on the same broker must not
        # take a share of these messages.
        MQTT_GROUP_NAME=f"e2e{uuid.uuid4().hex[:8]}",
        MQTT_PERSISTENT_SESSION="false",  # no session left behind on the shared broker
        MQTT_MAX_INFLIGHT="20",
        ENABLE_REDIS="true",
        REDIS_HOST=REDIS_HOST,
        REDIS_PORT=str(REDIS_PORT),
        REDIS_DB=str(REDIS_TEST_DB),
        SQLITE_PATH=str(tmp_path / "app.db"),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def _driver_env(driver: str, tmp_path: Path) -> dict[str, str]:
    env = _base_env(tmp_path)
    if driver == "redis":
        need_service("Redis", REDIS_HOST, REDIS_PORT)
        env.update(QUEUE_CONNECTION="redis", ENABLE_MYSQL="false")
    elif driver == "mariadb":
        need_service("MariaDB", "127.0.0.1", 3306)
        env.update(QUEUE_CONNECTION="database", DB_URL=MARIADB_URL)
    elif driver == "postgres":
        need_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        env.update(QUEUE_CONNECTION="database", DB_URL=POSTGRES_URL)
    else:
        env.update(QUEUE_CONNECTION="database", ENABLE_MYSQL="false")
    return env


def _engine_url(driver: str, tmp_path: Path) -> str:
    urls = {"mariadb": MARIADB_URL, "postgres": POSTGRES_URL}
    return urls.get(driver) or f"sqlite:///{tmp_path / 'app.db'}"


def _reset_state(driver: str, tmp_path: Path) -> None:
    import redis

    from app.models import AppBase
    from backends.sql_tables import create_tables, drop_tables

    if driver == "redis":
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB).flushdb()
    engine = create_engine(_engine_url(driver, tmp_path))
    AppBase.metadata.drop_all(engine)
    AppBase.metadata.create_all(engine)
    if driver != "redis":
        drop_tables(engine)
        create_tables(engine)
    engine.dispose()


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_log(log: Path, needle: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"{needle!r} never appeared in {log.name}:\n{log.read_text(errors='replace')}")


def _publish(ids: list[str], spacing: float = 0.0) -> None:
    """Publish one QoS1 reading per id (devices spread over 10 ids); wait for every PUBACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(100)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        infos = []
        for i, reading_id in enumerate(ids):
            body = {"value": i, "id": reading_id, "ts": time.time()}
            infos.append(client.publish(f"devices/d{i % 10}/telemetry", json.dumps(body), qos=1))
            if spacing:
                time.sleep(spacing)
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _stored_rows(url: str, prefix: str, count: int) -> list[tuple[str, int, float, float]]:
    """(reading_id, repeats, published_at, handled_at) rows under `prefix`, once `count` exist."""
    engine = create_engine(url)
    deadline = time.monotonic() + DEADLINE
    rows: list[tuple[str, int, float, float]] = []
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                rows = [
                    (r[0], r[1], r[2], r[3])
                    for r in connection.execute(
                        text(
                            "SELECT reading_id, repeats, published_at, handled_at "
                            "FROM device_readings WHERE reading_id LIKE :prefix"
                        ),
                        {"prefix": f"{prefix}%"},
                    )
                ]
            if len(rows) >= count:
                break
            time.sleep(0.1)
    finally:
        engine.dispose()
    return rows


def _latency_line(label: str, rows: list[tuple[str, int, float, float]]) -> str:
    latencies = sorted((handled - published) * 1000 for _, _, published, handled in rows)
    return (
        f"{label}: p50 {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[max(int(len(latencies) * 0.95) - 1, 0)]:.1f} ms, "
        f"max {latencies[-1]:.1f} ms over {len(latencies)} jobs"
    )


@pytest.mark.parametrize("driver", ["redis", "mariadb", "postgres", "sqlite"])
def test_every_published_reading_is_stored_exactly_once(
    driver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    env = _driver_env(driver, tmp_path)
    _reset_state(driver, tmp_path)
    run_id = uuid.uuid4().hex[:10]
    app_env = {**env, "LOG_LEVEL": "INFO"}
    worker_args = ["--queue-work", "--queue", "readings,default", "--sleep", "1"]
    burst = [f"{run_id}-burst-{i}" for i in range(MESSAGE_COUNT)]
    trickle = [f"{run_id}-idle-{i}" for i in range(TRICKLE_COUNT)]

    with (
        _process(["--run"], app_env, tmp_path / "app.log") as app,
        _process(worker_args, env, tmp_path / "worker1.log"),
        _process(worker_args, env, tmp_path / "worker2.log"),
    ):
        _wait_for_log(tmp_path / "app.log", "subscribed to", app)
        url = _engine_url(driver, tmp_path)
        _publish(burst)
        burst_rows = _stored_rows(url, f"{run_id}-burst-", MESSAGE_COUNT)
        _publish(trickle, spacing=TRICKLE_SPACING)  # the workers are idle again
        trickle_rows = _stored_rows(url, f"{run_id}-idle-", TRICKLE_COUNT)

        logs = "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(tmp_path.glob("*.log"))
        )
        rows = burst_rows + trickle_rows
        assert sorted(row[0] for row in rows) == sorted(burst + trickle), logs
        assert [row for row in rows if row[1] != 0] == [], "a job ran more than once"

        reset()
        queue_driver = get_driver(None, load_settings(env, dotenv_path=None))
        try:
            sizes = queue_driver.sizes("readings")
            assert (sizes.pending, sizes.delayed, sizes.failed) == (0, 0, 0)
        finally:
            reset()

    with capsys.disabled():
        print(f"\n[{driver}] pickup latency, publish -> handle() start")
        print("  " + _latency_line(f"burst of {MESSAGE_COUNT}", burst_rows))
        print(
            "  " + _latency_line(f"idle, one every {TRICKLE_SPACING * 1000:.0f} ms", trickle_rows)
        )
