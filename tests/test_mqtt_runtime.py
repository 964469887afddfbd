"""The MQTT runtime against the real Mosquitto: routing, retries, dead letters, reconnects."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.middleware.json_validation import JsonValidation
from core.message import Message
from core.mqtt import MqttRuntime
from core.router import Router, Subscription
from tests.conftest import services_required
from tests.mqtt_helpers import (
    WAIT_TIMEOUT,
    SecureMosquitto,
    collector,
    make_settings,
    private_mosquitto,
    publisher,
    running_runtime,
    unique_prefix,
    wait_until,
)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_handler_receives_topic_params_and_payload(
    mqtt_broker: tuple[str, int], protocol: str
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("route")
    seen: list[tuple[str, dict[str, str], bytes, int]] = []
    router = Router()
    router.on(
        f"{prefix}/devices/{{device_id}}/telemetry",
        lambda m: seen.append((m.topic, m.params, m.payload, m.qos)),
        qos=1,
    )
    settings = make_settings(host, port, mqtt_protocol=protocol)
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/devices/dev-7/telemetry", b'{"temp": 21.5}', qos=1)
        assert wait_until(lambda: runtime.handled == 1)
    assert seen == [
        (f"{prefix}/devices/dev-7/telemetry", {"device_id": "dev-7"}, b'{"temp": 21.5}', 1)
    ]


def test_qos1_messages_are_all_handled_once_in_arrival_order(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("order")
    seen: list[bytes] = []
    router = Router()
    router.on(f"{prefix}/n", lambda m: seen.append(m.payload), qos=1)
    count = 300
    with (
        running_runtime(make_settings(host, port), router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        for i in range(count):
            pub.client.publish(f"{prefix}/n", str(i).encode(), qos=1)
        assert wait_until(lambda: runtime.handled >= count)
    assert seen == [str(i).encode() for i in range(count)]


def test_failing_handler_is_retried_then_dead_lettered_and_the_loop_goes_on(
    mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("dlq")
    calls: list[str] = []
    router = Router()

    def explode(message: Message) -> None:
        calls.append(message.topic)
        raise RuntimeError("sensor table is locked")

    router.on(f"{prefix}/bad/{{device}}", explode, qos=1)
    router.on(f"{prefix}/good", lambda m: calls.append(m.topic), qos=1)
    settings = make_settings(
        host, port, mqtt_handler_retries=3, mqtt_dead_letter_topic=f"{prefix}/dead"
    )
    with (
        collector(host, port, f"{prefix}/dead/#") as dead,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/bad/d1", b"reading 42", qos=1)
        pub.publish(f"{prefix}/good", b"ok", qos=1)
        letters = dead.wait_for(1)
        assert wait_until(lambda: runtime.handled == 1)
    # Different topics are handled in parallel: the good one does not wait for the retries.
    assert sorted(calls) == sorted([f"{prefix}/bad/d1"] * 3 + [f"{prefix}/good"])
    assert len(letters) == 1
    topic, raw = letters[0]
    assert topic == f"{prefix}/dead/{prefix}/bad/d1"
    body = json.loads(raw)
    assert body["topic"] == f"{prefix}/bad/d1"
    assert body["route"] == f"{prefix}/bad/{{device}}"
    assert body["error"] == "RuntimeError: sensor table is locked"
    assert body["attempts"] == 3
    assert (body["payload"], body["payload_encoding"]) == ("reading 42", "utf-8")
    failure_logs = [r for r in caplog.records if r.name == "core.mqtt" and "failed" in r.message]
    assert any(
        f"{prefix}/bad/d1" in r.message and "bad/{device}" in r.message for r in failure_logs
    )


def test_invalid_json_on_validated_route_is_dead_lettered_at_once_with_a_clear_log(
    mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("json")
    handled: list[Any] = []
    router = Router()
    router.on(
        f"{prefix}/readings",
        lambda m: handled.append(m.json()),
        qos=1,
        middleware=[JsonValidation(required=["temp"])],
    )
    settings = make_settings(host, port, mqtt_dead_letter_topic=f"{prefix}/dead")
    caplog.set_level(logging.WARNING)
    with (
        collector(host, port, f"{prefix}/dead/#") as dead,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/readings", b"\xfe not json", qos=1)
        pub.publish(f"{prefix}/readings", b'{"temp": 3}', qos=1)
        letters = dead.wait_for(1)
        assert wait_until(lambda: runtime.handled == 1)
    assert handled == [{"temp": 3}]
    assert runtime.handler_failures == 0  # permanent: never retried
    body = json.loads(letters[0][1])
    assert body["attempts"] == 1
    assert body["payload_encoding"] == "base64"
    assert base64.b64decode(body["payload"]) == b"\xfe not json"
    assert "PayloadError" in body["error"]
    rejected = [r.getMessage() for r in caplog.records if r.name == "core.mqtt"]
    assert any(
        "rejected payload" in line and f"{prefix}/readings" in line and "not valid JSON" in line
        for line in rejected
    )


def test_unmatched_topic_is_acknowledged_and_counted(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("unmatched")
    router = Router()
    router.on(f"{prefix}/known", lambda m: None, qos=1)
    extra = Subscription(filter=f"{prefix}/#", qos=1, shared=False, topic=f"{prefix}/#")
    with (
        running_runtime(make_settings(host, port), router, [extra]) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/unknown", b"x", qos=1)
        pub.publish(f"{prefix}/known", b"y", qos=1)
        assert wait_until(lambda: runtime.handled == 1)
    assert runtime.unmatched == 1
    assert router.unmatched == 1


def test_handlers_publish_through_the_runtime_and_wildcard_topics_are_refused(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("pub")
    router = Router()
    router.on(
        f"{prefix}/ping/{{id}}",
        lambda m: m.publish(f"{prefix}/pong/{m.params['id']}", {"pong": m.params["id"]}),
        qos=1,
    )
    with (
        collector(host, port, f"{prefix}/pong/+") as replies,
        running_runtime(make_settings(host, port), router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/ping/7", b"", qos=1)
        got = replies.wait_for(1)
        for bad in (f"{prefix}/+/x", f"{prefix}/#", f"{prefix}/nul\x00", ""):
            with pytest.raises(ValueError):
                runtime.publish(bad, b"x")
    assert got == [(f"{prefix}/pong/7", b'{"pong":"7"}')]


def test_every_route_is_resubscribed_after_the_broker_restarts(tmp_path: Path) -> None:
    seen: list[str] = []
    router = Router()
    router.on("plant/{line}/temp", lambda m: seen.append(m.topic), qos=1)
    router.on("plant/alarms", lambda m: seen.append(m.topic), qos=0)
    with private_mosquitto(tmp_path) as broker:
        settings = make_settings(broker.host, broker.port)
        with running_runtime(settings, router, router.subscriptions("g")) as runtime:
            broker.stop()
            assert wait_until(lambda: not runtime.ready.is_set())
            broker.start()  # a fresh broker process: no subscriptions survive
            assert runtime.wait_ready(WAIT_TIMEOUT)
            with publisher(broker.host, broker.port) as pub:
                pub.publish("plant/l1/temp", b"1", qos=1)
                pub.publish("plant/alarms", b"2", qos=1)
                assert wait_until(lambda: len(seen) == 2)
            assert runtime.connections == 2
    assert sorted(seen) == ["plant/alarms", "plant/l1/temp"]


def test_runtime_reconnects_and_resubscribes_after_its_client_id_is_taken_over(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("takeover")
    client_id = f"test-takeover-{uuid.uuid4().hex[:8]}"
    seen: list[bytes] = []
    router = Router()
    router.on(f"{prefix}/x", lambda m: seen.append(m.payload), qos=1)
    settings = make_settings(host, port)
    with running_runtime(settings, router, router.subscriptions("g"), client_id) as runtime:
        intruder = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        intruder.connect(host, port)  # the broker drops the runtime's connection
        intruder.loop(1.0)
        intruder.disconnect()
        assert wait_until(lambda: runtime.connections == 2 and runtime.ready.is_set())
        with publisher(host, port) as pub:
            pub.publish(f"{prefix}/x", b"after", qos=1)
            assert wait_until(lambda: seen == [b"after"])


def test_persistent_session_without_client_id_uses_a_stable_id_of_app_and_host() -> None:
    settings = make_settings("127.0.0.1", 1883, mqtt_persistent_session=True, app_name="fleet app")
    first = MqttRuntime(settings, Router(), []).client_id
    again = MqttRuntime(settings, Router(), []).client_id
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-")
    assert first == again == f"fleet-app-{host}"
    clean = make_settings("127.0.0.1", 1883, mqtt_persistent_session=False)
    assert MqttRuntime(clean, Router(), []).client_id != MqttRuntime(clean, Router(), []).client_id


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureMosquitto]:
    """A private mosquitto demanding TLS and a password."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        reason = "needs the openssl and mosquitto_passwd binaries"
        if services_required():
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    broker = SecureMosquitto(tmp_path)
    yield broker
    broker.stop()


@pytest.mark.parametrize("verify", ["ca", "insecure"])
def test_tls_with_password_routes_messages_and_publishes_from_any_thread(
    secure_broker: SecureMosquitto, verify: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core")
    seen: list[bytes] = []
    router = Router()

    def handle(message: Message) -> None:
        seen.append(message.payload)
        message.publish("secure-echo/x", message.payload, qos=1)  # from the network thread

    router.on("secure/{id}", handle, qos=1)
    tls = {"mqtt_tls_ca": str(secure_broker.ca)} if verify == "ca" else {"mqtt_tls_insecure": True}
    settings = make_settings(
        secure_broker.host,
        secure_broker.port,
        mqtt_username=secure_broker.username,
        mqtt_password=secure_broker.password,
        **tls,
    )
    count = 200
    with running_runtime(settings, router, router.subscriptions("g")) as runtime:
        # Published from this (non-network) thread while the network thread reads
        # and publishes on the same TLS connection: must not corrupt it.
        for i in range(count):
            runtime.publish(f"secure/{i}", str(i).encode(), qos=1)
        assert wait_until(lambda: len(seen) == count)
        assert runtime.connections == 1, "the TLS connection was lost and re-made"
    assert sorted(seen, key=int) == [str(i).encode() for i in range(count)]
    assert secure_broker.password not in caplog.text


def test_wrong_password_is_refused_and_logged_without_the_password(
    secure_broker: SecureMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core")
    wrong = "not-the-Pa55word"
    settings = make_settings(
        secure_broker.host,
        secure_broker.port,
        mqtt_username=secure_broker.username,
        mqtt_password=wrong,
        mqtt_tls_ca=str(secure_broker.ca),
    )
    runtime = MqttRuntime(settings, Router(), [])
    runtime.start()
    try:
        assert not runtime.wait_ready(1.5)
    finally:
        runtime.stop()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals, "the refused connection was not logged"
    assert "authori" in refusals[0].lower() or "password" in refusals[0].lower()
    assert wrong not in caplog.text


def test_a_handler_raising_system_exit_is_dead_lettered_and_the_loop_goes_on(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("exit")
    seen: list[str] = []
    router = Router()

    def leave(message: Message) -> None:
        raise SystemExit(3)

    router.on(f"{prefix}/exit", leave, qos=1)
    router.on(f"{prefix}/ok", lambda m: seen.append(m.topic), qos=1)
    settings = make_settings(
        host, port, mqtt_handler_retries=1, mqtt_dead_letter_topic=f"{prefix}/dead"
    )
    with (
        collector(host, port, f"{prefix}/dead/#") as dead,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/exit", b"bye", qos=1)
        pub.publish(f"{prefix}/ok", b"still here", qos=1)
        assert len(dead.wait_for(1)) == 1
        assert wait_until(lambda: seen == [f"{prefix}/ok"])
        assert runtime.alive


def test_qos2_routes_are_subscribed_at_qos1(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()
    router.on("orders/{id}", lambda m: None, qos=2)
    runtime = MqttRuntime(make_settings("127.0.0.1", 1883), router, router.subscriptions("g"))
    assert runtime.subscriptions == [("orders/+", 1)]
    assert "asks for QoS 2; subscribing with QoS 1" in caplog.text


def test_mqtt5_reconnect_does_not_redeliver_retained_messages(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("retained")
    client_id = f"test-retained-{uuid.uuid4().hex[:8]}"
    seen: list[bytes] = []
    router = Router()
    router.on(f"{prefix}/state", lambda m: seen.append(m.payload), qos=1)
    settings = make_settings(
        host, port, mqtt_protocol="5", mqtt_persistent_session=True, mqtt_client_id=client_id
    )
    with publisher(host, port) as pub:
        pub.client.publish(f"{prefix}/state", b"on", qos=1, retain=True).wait_for_publish(5)
        try:
            with running_runtime(settings, router, router.subscriptions("g")) as runtime:
                assert wait_until(lambda: seen == [b"on"])  # a new subscription gets it
                # Its PUBACK leaves after the handler returned; let it reach the broker, or
                # the takeover below rightly redelivers the unacknowledged message.
                assert wait_until(lambda: runtime.acked == 1)
                time.sleep(0.2)
                # Take the session over without wiping it: the runtime is disconnected,
                # reconnects to the same session and resubscribes.
                intruder = paho.Client(
                    CallbackAPIVersion.VERSION2,
                    client_id=client_id,
                    protocol=paho.MQTTv5,
                )
                expiry = Properties(PacketTypes.CONNECT)
                expiry.SessionExpiryInterval = 60
                intruder.connect(host, port, clean_start=False, properties=expiry)
                intruder.loop(1.0)
                intruder.disconnect(properties=None)
                assert wait_until(lambda: runtime.connections == 2 and runtime.ready.is_set())
                pub.publish(f"{prefix}/state", b"marker", qos=1)
                assert wait_until(lambda: b"marker" in seen)
            assert seen == [b"on", b"marker"]
        finally:
            pub.client.publish(f"{prefix}/state", b"", qos=1, retain=True).wait_for_publish(5)
