"""Shared MQTT test utilities: real clients, a collector, private mosquitto instances.

Everything here talks to a real broker; nothing is mocked. Each test should use
its own `unique_prefix()` so tests sharing the Mosquitto on 127.0.0.1:1883 never
see each other's messages.
"""

from __future__ import annotations

import getpass
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.settings import Settings
from core.broker import MosquittoBroker, free_port, port_is_free
from core.mqtt import MqttRuntime, SubscriptionSpec
from tests.tls_helpers import make_certificates

#: Seconds a test waits for a connection, subscription or message before failing.
WAIT_TIMEOUT = 10.0


def unique_prefix(name: str = "t") -> str:
    """A topic prefix no other test uses: `test/{name}/{random hex}`."""
    return f"test/{name}/{uuid.uuid4().hex[:12]}"


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_TIMEOUT) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def make_settings(host: str, port: int, **overrides: Any) -> Settings:
    """Settings pointing at host:port, with fast test-friendly defaults, plus `overrides`.

    Clean sessions unless overridden: a test's persistent session would stay on the
    shared broker (queueing messages) after the test, and the derived client id
    would be the same for every test on this host.
    """
    values: dict[str, Any] = {
        "mqtt_host": host,
        "mqtt_port": port,
        "mqtt_keepalive": 10,
        "mqtt_persistent_session": False,
    }
    values.update(overrides)
    return Settings(**values)


def _protocol(version: str) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if version == "5" else MQTTProtocolVersion.MQTTv311


class Publisher:
    """A plain paho client that publishes and waits until the broker has each QoS>0 message."""

    def __init__(self, host: str, port: int, protocol: str = "3.1.1") -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=_protocol(protocol),
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish and, for QoS>0, wait until the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos)
        if qos:
            info.wait_for_publish(WAIT_TIMEOUT)
            assert info.is_published(), f"broker did not acknowledge publish to {topic}"

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def publisher(host: str, port: int, protocol: str = "3.1.1") -> Iterator[Publisher]:
    """A connected `Publisher`, closed on exit."""
    pub = Publisher(host, port, protocol)
    try:
        yield pub
    finally:
        pub.close()


class Collector:
    """A plain paho client subscribed to one filter, recording (topic, payload) pairs."""

    def __init__(self, host: str, port: int, topic_filter: str, qos: int = 1) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-col-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos)
        assert self._subscribed.wait(WAIT_TIMEOUT), f"collector could not subscribe {topic_filter}"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, count: int, timeout: float = WAIT_TIMEOUT) -> list[tuple[str, bytes]]:
        """The messages once at least `count` arrived (fewer if `timeout` passed)."""
        wait_until(lambda: len(self.messages) >= count, timeout)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def collector(host: str, port: int, topic_filter: str, qos: int = 1) -> Iterator[Collector]:
    """A subscribed `Collector`, closed on exit."""
    col = Collector(host, port, topic_filter, qos)
    try:
        yield col
    finally:
        col.close()


class PrivateMosquitto:
    """A mosquitto of this test alone, on a free port, that can be killed and restarted.

    Restarting reuses the port and the persistence folder, like a broker restart.
    """

    def __init__(self, storage: Path, max_inflight: int = 20) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.storage = storage
        self.max_inflight = max_inflight
        self.broker: MosquittoBroker | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart) mosquitto on the same port and storage."""
        self.broker = MosquittoBroker("mosquitto", self.port, self.storage, self.max_inflight)

    def kill(self) -> None:
        """SIGKILL mosquitto: a crash; it keeps only what it had saved."""
        if self.broker is not None:
            self.broker.kill()
            self.broker.stop()  # reaps nothing more; removes the temp config
            self.broker = None

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM); clients lose their connections."""
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


@contextmanager
def private_mosquitto(storage: Path) -> Iterator[PrivateMosquitto]:
    """A `PrivateMosquitto`, stopped on exit."""
    broker = PrivateMosquitto(storage)
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def running_runtime(
    settings: Settings,
    dispatcher: Any,
    subscriptions: Sequence[SubscriptionSpec],
    client_id: str | None = None,
    outbox: Any = None,
) -> Iterator[MqttRuntime]:
    """An `MqttRuntime` started and subscribed (asserted), stopped on exit."""
    runtime = MqttRuntime(settings, dispatcher, subscriptions, client_id=client_id, outbox=outbox)
    runtime.start()
    try:
        assert runtime.wait_ready(WAIT_TIMEOUT), f"runtime {runtime.describe} never got ready"
        yield runtime
    finally:
        runtime.stop()


class SecureMosquitto:
    """A private mosquitto with a TLS listener (own CA) and a username/password.

    Needs the `openssl` and `mosquitto_passwd` binaries.
    """

    username = "device-gateway"
    password = "s3cret-Pa55word"

    def __init__(self, folder: Path) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.ca = Path(make_certificates(folder).ca)
        passwords = folder / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), self.username, self.password],
            check=True,
            capture_output=True,
        )
        config = folder / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    f"cafile {self.ca}",
                    f"certfile {folder / 'server.crt'}",
                    f"keyfile {folder / 'server.key'}",
                    "allow_anonymous false",
                    f"password_file {passwords}",
                    f"user {getpass.getuser()}",
                    f"log_dest file {folder / 'mosquitto.log'}",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until(lambda: not port_is_free(self.port), WAIT_TIMEOUT):
            self.stop()
            raise RuntimeError(f"TLS mosquitto did not start: {folder / 'mosquitto.log'}")

    def stop(self) -> None:
        """Stop mosquitto."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(WAIT_TIMEOUT)
