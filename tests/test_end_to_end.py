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
    REDIS_HOST,
    REDIS_PORT,
    REDIS_TEST_DB,
    need_service,
)

ROOT = Path(__file__).resolve().parent.parent
#: Messages published per driver.
MESSAGE_COUNT = 1000
#: Seconds allowed for all readings to be stored.
DEADLINE = 120.0

pytestmark = pytest.mark.slow


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "REDIS_", "DB_"))}
    env.update(
        MQTT_HOST=MQTT_HOST,
        MQTT_PORT=str(MQTT_PORT),
        MQTT_CLIENT_ID=f"e2e-{uuid.uuid4().hex[:8]}",
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
    else:
        env.update(QUEUE_CONNECTION="database", ENABLE_MYSQL="false")
    return env


def _engine_url(driver: str, tmp_path: Path) -> str:
    return MARIADB_URL if driver == "mariadb" else f"sqlite:///{tmp_path / 'app.db'}"


def _reset_state(driver: str, tmp_path: Path) -> None:
    import redis

    from app.models import AppBase
    from core.database import create_tables, drop_tables

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


def _publish_all(run_id: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{run_id}")
    client.max_inflight_messages_set(100)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        infos = []
        for i in range(MESSAGE_COUNT):
            body = {"value": i, "id": f"{run_id}-{i}", "ts": time.time()}
            topic = f"devices/{run_id}-{i % 10}/telemetry"
            infos.append(client.publish(topic, json.dumps(body), qos=1))
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize("driver", ["redis", "mariadb", "sqlite"])
def test_every_published_reading_is_stored_exactly_once(driver: str, tmp_path: Path) -> None:
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    env = _driver_env(driver, tmp_path)
    _reset_state(driver, tmp_path)
    run_id = uuid.uuid4().hex[:10]
    app_env = {**env, "LOG_LEVEL": "INFO"}
    worker_args = ["--queue-work", "--queue", "readings,default", "--sleep", "1"]

    with (
        _process(["--run"], app_env, tmp_path / "app.log") as app,
        _process(worker_args, env, tmp_path / "worker1.log"),
        _process(worker_args, env, tmp_path / "worker2.log"),
    ):
        _wait_for_log(tmp_path / "app.log", "subscribed to", app)
        _publish_all(run_id)

        engine = create_engine(_engine_url(driver, tmp_path))
        deadline = time.monotonic() + DEADLINE
        rows: list[tuple[str, int, float, float]] = []
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                rows = [
                    (r[0], r[1], r[2], r[3])
                    for r in connection.execute(
                        text(
                            "SELECT reading_id, repeats, published_at, handled_at "
                            "FROM device_readings WHERE reading_id LIKE :prefix"
                        ),
                        {"prefix": f"{run_id}-%"},
                    )
                ]
            if len(rows) >= MESSAGE_COUNT:
                break
            time.sleep(0.25)
        engine.dispose()

        logs = "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(tmp_path.glob("*.log"))
        )
        stored = {row[0] for row in rows}
        assert stored == {f"{run_id}-{i}" for i in range(MESSAGE_COUNT)}, logs
        assert len(rows) == MESSAGE_COUNT
        assert [row for row in rows if row[1] != 0] == [], "a job ran more than once"

        reset()
        queue_driver = get_driver(None, load_settings(env, dotenv_path=None))
        try:
            sizes = queue_driver.sizes("readings")
            assert (sizes.pending, sizes.delayed, sizes.failed) == (0, 0, 0)
        finally:
            reset()

    latencies = sorted((handled - published) * 1000 for _, _, published, handled in rows)
    print(
        f"\n[{driver}] pickup latency publish -> handle() start over {len(latencies)} jobs: "
        f"p50 {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
