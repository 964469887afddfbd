"""Baseline receivers of `bench_intake`, each a separate process like the app.

`python -m benchmarks.intake_baselines raw HOST PORT COUNT` subscribes to
`bench/+/telemetry` with paho (QoS 1, automatic acks, no work) and prints the
unix time at which COUNT messages had arrived. `... sql URL HOST PORT COUNT`
does one INSERT + COMMIT per message into `bench_raw` (the naive durable intake
a queue's group commit is measured against) and prints the same.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

#: Topic filter every receiver subscribes to.
FILTER = "bench/+/telemetry"
#: Seconds a baseline waits for its messages before giving up.
DEADLINE = 300.0


def _receive(host: str, port: int, count: int, work: Any) -> None:
    done = threading.Event()
    received = 0

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal received
        work(message)
        received += 1
        if received == count:
            print(f"done {time.time():.6f}", flush=True)
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(FILTER, 1)
    client.on_subscribe = lambda *_a: print("ready", flush=True)
    client.connect(host, port)
    client.loop_start()
    done.wait(DEADLINE)
    client.disconnect()
    client.loop_stop()


def _sql_work(url: str) -> Any:
    if url.startswith("sqlite:///"):
        import sqlite3

        connection: Any = sqlite3.connect(
            url[len("sqlite:///") :], isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # the queue's own SQLite setting
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, topic TEXT, "
            "payload TEXT)"
        )

        def insert(message: paho.MQTTMessage) -> None:
            connection.execute("BEGIN")
            connection.execute(
                "INSERT INTO bench_raw (topic, payload) VALUES (?, ?)",
                (message.topic, message.payload.decode()),
            )
            connection.execute("COMMIT")

        return insert
    import pymysql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    connection = pymysql.connect(
        host=parsed.host, port=parsed.port or 3306, user=parsed.username or "root",
        password=parsed.password or "", database=parsed.database, autocommit=False,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "topic VARCHAR(255), payload LONGTEXT)"
        )

    def insert_mysql(message: paho.MQTTMessage) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO bench_raw (topic, payload) VALUES (%s, %s)",
                (message.topic, message.payload.decode()),
            )
        connection.commit()

    return insert_mysql


def main(argv: list[str]) -> int:
    """Run one baseline receiver; see the module docstring."""
    kind = argv[0]
    if kind == "raw":
        host, port, count = argv[1], int(argv[2]), int(argv[3])
        _receive(host, port, count, lambda message: None)
    else:
        url, host, port, count = argv[1], argv[2], int(argv[3]), int(argv[4])
        _receive(host, port, count, _sql_work(url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
