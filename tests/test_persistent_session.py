"""Persistent sessions and acks-after-handler against the shared Mosquitto, MQTT 3.1.1 and 5.

A persistent session must keep our subscriptions and queue QoS 1 messages while
the app is down, and a message whose handler never finished (process crash)
must be redelivered, because its ack only leaves after the handler returned.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.settings import Settings
from core.message import Message
from core.router import Router
from tests.mqtt_helpers import (
    WAIT_TIMEOUT,
    make_settings,
    publisher,
    running_runtime,
    unique_prefix,
    wait_until,
)

#: Session expiry of the MQTT 5 test sessions, in seconds: long enough for the test only.
TEST_SESSION_EXPIRY = 120
#: Exit code of the child that crashed in the middle of its handler.
CRASH_EXIT_CODE = 37


def _wipe_session(host: str, port: int, client_id: str, protocol: str) -> None:
    """Connect once with a clean session so the shared broker forgets the test's session."""
    if protocol == "5":
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0
        client.connect(host, port, clean_start=True, properties=properties)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.connect(host, port)
    client.loop(1.0)
    client.disconnect()


@pytest.fixture
def session_id(mqtt_broker: tuple[str, int], request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh client id whose broker session is wiped after the test."""
    client_id = f"test-session-{uuid.uuid4().hex[:10]}"
    yield client_id
    protocol = request.node.callspec.params.get("protocol", "3.1.1")
    _wipe_session(*mqtt_broker, client_id, protocol)


def _persistent_settings(host: str, port: int, client_id: str, protocol: str) -> Settings:
    return make_settings(
        host,
        port,
        mqtt_protocol=protocol,
        mqtt_client_id=client_id,
        mqtt_persistent_session=True,
        mqtt_session_expiry=TEST_SESSION_EXPIRY,
    )


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_persistent_session_receives_qos1_messages_published_while_down(
    mqtt_broker: tuple[str, int], session_id: str, protocol: str
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("persist")
    seen: list[bytes] = []
    router = Router()
    router.on(f"{prefix}/cmd", lambda m: seen.append(m.payload), qos=1)
    settings = _persistent_settings(host, port, session_id, protocol)
    with running_runtime(settings, router, router.subscriptions("g")):
        pass  # subscribed, then stopped
    with publisher(host, port) as pub:
        pub.publish(f"{prefix}/cmd", b"while-down", qos=1)
    with running_runtime(settings, router, router.subscriptions("g")):
        assert wait_until(lambda: seen == [b"while-down"])


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_clean_session_does_not_receive_messages_published_while_down(
    mqtt_broker: tuple[str, int], session_id: str, protocol: str
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("clean")
    seen: list[bytes] = []
    router = Router()
    router.on(f"{prefix}/cmd", lambda m: seen.append(m.payload), qos=1)
    router.on(f"{prefix}/marker", lambda m: seen.append(m.payload), qos=1)
    settings = make_settings(host, port, mqtt_protocol=protocol, mqtt_client_id=session_id)
    with running_runtime(settings, router, router.subscriptions("g")):
        pass
    with publisher(host, port) as pub:
        pub.publish(f"{prefix}/cmd", b"while-down", qos=1)
        with running_runtime(settings, router, router.subscriptions("g")):
            pub.publish(f"{prefix}/marker", b"marker", qos=1)
            assert wait_until(lambda: b"marker" in seen)
    assert seen == [b"marker"]


def _crashing_app(
    host: str, port: int, client_id: str, protocol: str, topic: str, record: str
) -> None:
    """Child process: route `topic` to a handler that records the payload, then kills
    the process mid-handler."""
    settings = _persistent_settings(host, port, client_id, protocol)

    def crash(message: Message) -> None:
        Path(record).write_bytes(message.payload)
        os._exit(CRASH_EXIT_CODE)  # no ack, no DISCONNECT: like a power cut

    router = Router()
    router.on(topic, crash, qos=1)
    with running_runtime(settings, router, router.subscriptions("g")):
        print("ready", flush=True)
        time.sleep(WAIT_TIMEOUT * 3)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_message_whose_handler_crashed_the_process_is_redelivered_after_restart(
    mqtt_broker: tuple[str, int], session_id: str, protocol: str, tmp_path: Path
) -> None:
    host, port = mqtt_broker
    topic = f"{unique_prefix('crash')}/job"
    record = tmp_path / "crashed-on"
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_crashing_app, args=(host, port, session_id, protocol, topic, str(record))
    )
    child.start()
    seen: list[tuple[bytes, int]] = []
    router = Router()
    router.on(topic, lambda m: seen.append((m.payload, m.qos)), qos=1)
    try:
        # The child's session exists once its subscription is in place; retry the
        # publish until the child has crashed on it.
        with publisher(host, port) as pub:
            deadline = time.monotonic() + WAIT_TIMEOUT * 2
            sent = 0
            while child.is_alive() and time.monotonic() < deadline:
                sent += 1
                pub.publish(topic, f"job-{sent}".encode(), qos=1)
                child.join(0.5)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == CRASH_EXIT_CODE, "the handler never ran in the child"
    crashed_on = record.read_bytes()
    settings = _persistent_settings(host, port, session_id, protocol)
    with running_runtime(settings, router, router.subscriptions("g")):
        assert wait_until(lambda: (crashed_on, 1) in seen)
    # Redelivered first: acks and deliveries keep arrival order.
    assert seen[0] == (crashed_on, 1)
