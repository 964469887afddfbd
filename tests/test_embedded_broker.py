"""The embedded broker: mosquitto subprocess or in-process amqtt, and `--run` without MQTT_HOST."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT, ConfigError, Settings
from core.broker import choose_port, port_is_free, start_embedded_broker
from core.router import Router
from tests.conftest import need_binaries
from tests.mqtt_helpers import (
    WAIT_TIMEOUT,
    make_settings,
    publisher,
    running_runtime,
    wait_until,
)

#: Seconds `main.py --run` may take to start and to stop in the CLI test.
CLI_TIMEOUT = 20.0


def _route_one_message(host: str, port: int) -> list[tuple[str, dict[str, str], bytes]]:
    seen: list[tuple[str, dict[str, str], bytes]] = []
    router = Router()
    router.on(
        "sensors/{sensor}/value", lambda m: seen.append((m.topic, m.params, m.payload)), qos=1
    )
    with (
        running_runtime(make_settings(host, port), router, router.subscriptions("g")),
        publisher(host, port) as pub,
    ):
        pub.publish("sensors/s1/value", b"42", qos=1)
        wait_until(lambda: len(seen) == 1)
    return seen


def test_embedded_mosquitto_routes_a_message_and_stops(tmp_path: Path) -> None:
    need_binaries("mosquitto")
    broker = start_embedded_broker(Settings(), "mosquitto", storage_dir=tmp_path)
    try:
        assert broker.kind == "mosquitto"
        assert broker.supports_shared_subscriptions
        seen = _route_one_message(broker.host, broker.port)
    finally:
        broker.stop()
    assert seen == [("sensors/s1/value", {"sensor": "s1"}, b"42")]
    assert port_is_free(broker.port)


def test_embedded_amqtt_routes_a_message_and_stops() -> None:
    broker = start_embedded_broker(Settings(), "amqtt")
    try:
        assert broker.kind == "amqtt"
        assert not broker.supports_shared_subscriptions
        seen = _route_one_message(broker.host, broker.port)
    finally:
        broker.stop()
    assert seen == [("sensors/s1/value", {"sensor": "s1"}, b"42")]
    assert wait_until(lambda: port_is_free(broker.port), 5.0)


def test_amqtt_refuses_mqtt5_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="MQTT_PROTOCOL=5"):
        start_embedded_broker(Settings(mqtt_protocol="5"), "amqtt")


def test_a_taken_preferred_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        port, moved = choose_port(taken)
    assert moved
    assert port != taken


def test_run_without_mqtt_host_logs_the_embedded_broker_first_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    need_binaries("mosquitto")
    log_path = tmp_path / "run.log"
    env = {
        **os.environ,
        "MQTT_HOST": "",
        "MQTT_PROTOCOL": "3.1.1",
        "MQTT_PERSISTENT_SESSION": "false",
        "LOG_LEVEL": "INFO",
        "SQLITE_PATH": str(tmp_path / "queue.db"),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "main.py", "--run"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: "connected to MQTT broker" in log_path.read_text(), CLI_TIMEOUT)
        lines = log_path.read_text().splitlines()
        assert "embedded MQTT broker (mosquitto) listening on 127.0.0.1:" in lines[0]
        port = int(lines[0].split("127.0.0.1:")[1].split()[0])
        assert not port_is_free(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(CLI_TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "embedded MQTT broker stopped" in log_path.read_text()
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_is_free(port)
