"""MQTT 5 request/response against the real Mosquitto, and replies that cannot loop.

A second client (paho, and MQTT.js through node) asks the app's runtime; the
handler answers with `message.reply()`, which must reach the requester's
ResponseTopic with its CorrelationData. Without a ResponseTopic there is no
implicit reply topic, and on MQTT 5 the app's own publications never come back
through its non-shared routes (NoLocal).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backends.mqtt_message import publish_properties
from core.message import Message, MessageProperties, NoResponseTopic, PropertiesNotSupported
from core.router import Router
from tests.conftest import MQTT_HOST, MQTT_PORT, need_binaries, services_required
from tests.mqtt_helpers import (
    WAIT_TIMEOUT,
    collector,
    make_settings,
    publisher,
    running_runtime,
    unique_prefix,
    wait_until,
)

#: Folder of the MQTT.js requester (package.json, package-lock.json, requester.mjs).
MQTTJS_DIR = Path(__file__).resolve().parent / "mqttjs"
#: Seconds `npm ci` may take to install MQTT.js when .ci/run has not done it.
NPM_TIMEOUT = 300
#: Seconds a test keeps listening after the expected messages, to catch extra ones.
SETTLE_SECONDS = 0.5


class Requester:
    """A paho MQTT 5 client that records every message it receives with its properties."""

    def __init__(self, host: str, port: int) -> None:
        self.received: list[tuple[str, bytes, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-req-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload), msg.properties))

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        self._subscribed.clear()
        self.client.subscribe(topic_filter, 1)
        assert self._subscribed.wait(WAIT_TIMEOUT), f"could not subscribe {topic_filter}"

    def request(self, topic: str, payload: bytes, **properties: Any) -> None:
        """Publish at QoS 1 with the given paho PUBLISH properties; wait for the PUBACK."""
        packed = Properties(PacketTypes.PUBLISH)
        for name, value in properties.items():
            setattr(packed, name, value)
        info = self.client.publish(topic, payload, 1, properties=packed)
        info.wait_for_publish(WAIT_TIMEOUT)
        assert info.is_published()

    def messages(self) -> list[tuple[str, bytes, Any]]:
        """Everything received so far."""
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def requester(mqtt_broker: tuple[str, int]) -> Iterator[Requester]:
    client = Requester(*mqtt_broker)
    yield client
    client.close()


def replying_router(pattern: str, seen: list[MessageProperties | None]) -> Router:
    """A router whose route `pattern` records the request's properties and replies to it."""
    router = Router()

    def answer(message: Message) -> None:
        seen.append(message.properties)
        message.reply(
            {"pong": message.topic},
            qos=1,
            properties=MessageProperties(
                content_type="application/json", user_properties={"served-by": "mqtt-jobs"}
            ),
        )

    router.on(pattern, answer, qos=1)
    return router


def test_a_paho_requester_gets_the_reply_with_its_correlation_data(
    mqtt_broker: tuple[str, int], requester: Requester
) -> None:
    prefix = unique_prefix("rpc")
    seen: list[MessageProperties | None] = []
    router = replying_router(f"{prefix}/rpc/{{name}}", seen)
    settings = make_settings(*mqtt_broker, mqtt_protocol="5")
    requester.subscribe(f"{prefix}/responses/+")
    with running_runtime(settings, router, router.subscriptions("g")) as runtime:
        requester.request(
            f"{prefix}/rpc/ping",
            b"{}",
            ResponseTopic=f"{prefix}/responses/r1",
            CorrelationData=b"\x00req-1",
            ContentType="application/json",
            UserProperty=[("tag", "first"), ("tag", "second")],
            MessageExpiryInterval=60,
        )
        assert wait_until(lambda: len(requester.messages()) == 1)
        assert runtime.dead_lettered == 0
    [request] = seen
    assert request is not None
    assert request.response_topic == f"{prefix}/responses/r1"
    assert request.correlation_data == b"\x00req-1"
    assert request.content_type == "application/json"
    assert request.user_properties == (("tag", "first"), ("tag", "second"))
    assert request.message_expiry is not None and 0 < request.message_expiry <= 60
    [(topic, payload, properties)] = requester.messages()
    assert (topic, json.loads(payload)) == (
        f"{prefix}/responses/r1",
        {"pong": f"{prefix}/rpc/ping"},
    )
    assert properties.CorrelationData == b"\x00req-1"
    assert properties.ContentType == "application/json"
    assert properties.UserProperty == [("served-by", "mqtt-jobs")]


@pytest.fixture(scope="module")
def mqttjs() -> Path:
    """The MQTT.js requester script, with `mqtt` installed by npm (from the lock file)."""
    need_binaries("node", "npm")
    if not (MQTTJS_DIR / "node_modules" / "mqtt" / "package.json").exists():
        try:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=MQTTJS_DIR,
                check=True,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            output = getattr(exc, "stderr", "") or ""
            reason = f"cannot install MQTT.js with npm: {exc} {output[-500:]}"
            if services_required():
                pytest.fail(reason)
            pytest.skip(reason)
    return MQTTJS_DIR / "requester.mjs"


def test_an_mqttjs_requester_gets_the_reply_with_its_correlation_data(
    mqtt_broker: tuple[str, int], mqttjs: Path
) -> None:
    prefix = unique_prefix("rpcjs")
    seen: list[MessageProperties | None] = []
    router = replying_router(f"{prefix}/rpc/{{name}}", seen)
    correlation = uuid.uuid4().bytes
    node = shutil.which("node")
    assert node is not None
    with running_runtime(
        make_settings(*mqtt_broker, mqtt_protocol="5"), router, router.subscriptions("g")
    ):
        result = subprocess.run(
            [
                node,
                str(mqttjs),
                f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
                f"{prefix}/rpc/js",
                f"{prefix}/responses/js",
                correlation.hex(),
            ],
            capture_output=True,
            text=True,
            timeout=WAIT_TIMEOUT + 10,
        )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply == {
        "topic": f"{prefix}/responses/js",
        "payload": json.dumps({"pong": f"{prefix}/rpc/js"}, separators=(",", ":")),
        "correlationData": correlation.hex(),
        "contentType": "application/json",
        "userProperties": {"served-by": "mqtt-jobs"},
    }
    [request] = seen
    assert request is not None
    assert request.correlation_data == correlation
    assert request.content_type == "application/json"
    assert [v for k, v in request.user_properties if k == "tag"] == ["first", "second"]
    assert request.user_property("client") == "mqttjs"


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_replying_hash_route_handles_the_message_exactly_once(
    mqtt_broker: tuple[str, int], requester: Requester, protocol: str
) -> None:
    """The issue's loop: a `#` route that replies used to answer its own replies, without end.

    On MQTT 5 the requester asks for the answer under the route's own filter;
    NoLocal keeps it from coming back. Without a ResponseTopic (every 3.1.1
    message) `reply()` refuses, the message is dead-lettered once, and nothing
    is published under the route.
    """
    prefix = unique_prefix("loop")
    calls: list[str] = []
    router = Router()

    def echo(message: Message) -> None:
        calls.append(message.topic)
        message.reply({"echo": message.params["site"]}, qos=1)

    router.on(f"{prefix}/fleet/{{site}}/{{device}}/cmd/#", echo, qos=1)
    request_topic = f"{prefix}/fleet/s1/d1/cmd/echo/a/b"
    reply_topic = f"{request_topic}/reply"
    requester.subscribe(f"{prefix}/#")
    settings = make_settings(*mqtt_broker, mqtt_protocol=protocol)
    with (
        collector(*mqtt_broker, f"deadletter/{prefix}/#") as dead_letters,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
    ):
        if protocol == "5":
            requester.request(request_topic, b"{}", ResponseTopic=reply_topic, CorrelationData=b"1")
            expected = [request_topic, reply_topic]
        else:
            requester.request(request_topic, b"{}")
            expected = [request_topic]
            assert [t for t, _ in dead_letters.wait_for(1)] == [f"deadletter/{request_topic}"]
        assert wait_until(lambda: len(requester.messages()) >= len(expected))
        assert not wait_until(lambda: len(calls) > 1, SETTLE_SECONDS), calls
        assert (runtime.handled, runtime.handler_failures) == (
            (1, 0) if protocol == "5" else (0, 0)
        )
    assert calls == [request_topic]
    assert [topic for topic, _, _ in requester.messages()] == expected
    assert len(dead_letters.messages) == (0 if protocol == "5" else 1)


@pytest.mark.parametrize(
    ("protocol", "shared", "own_messages_seen"),
    [("5", False, 0), ("5", True, 1), ("3.1.1", False, 1)],
)
def test_mqtt5_non_shared_routes_never_receive_the_apps_own_publications(
    mqtt_broker: tuple[str, int], protocol: str, shared: bool, own_messages_seen: int
) -> None:
    """NoLocal on non-shared MQTT 5 routes; MQTT 5 forbids it on shared ones, 3.1.1 lacks it."""
    prefix = unique_prefix("nolocal")
    watched: list[str] = []
    router = Router()
    router.on(f"{prefix}/in", lambda m: m.publish(f"{prefix}/watch/app", b"own", qos=1), qos=1)
    router.on(f"{prefix}/watch/#", lambda m: watched.append(m.topic), qos=1, shared=shared)
    settings = make_settings(*mqtt_broker, mqtt_protocol=protocol)
    group = f"g{uuid.uuid4().hex[:8]}"
    with (
        running_runtime(settings, router, router.subscriptions(group)),
        publisher(*mqtt_broker) as device,
    ):
        device.publish(f"{prefix}/in", b"go")
        device.publish(f"{prefix}/watch/device", b"theirs")
        assert wait_until(lambda: f"{prefix}/watch/device" in watched)
        wait_until(lambda: len(watched) > 1, SETTLE_SECONDS)
    assert watched.count(f"{prefix}/watch/app") == own_messages_seen
    assert watched.count(f"{prefix}/watch/device") == 1


def test_properties_over_mqtt_311_are_refused_with_one_line(mqtt_broker: tuple[str, int]) -> None:
    topic = f"{unique_prefix('v311')}/x"
    router = Router()
    with running_runtime(make_settings(*mqtt_broker), router, []) as runtime:
        with pytest.raises(PropertiesNotSupported) as refused:
            runtime.publish(topic, b"x", properties=MessageProperties(content_type="text/plain"))
        runtime.publish(topic, b"x", properties=MessageProperties())  # nothing to send: fine
    assert str(refused.value) == (
        f"cannot publish to {topic!r} with MQTT 5 properties (content_type): the connection "
        f"speaks MQTT 3.1.1; set MQTT_PROTOCOL=5"
    )


def test_reply_without_a_response_topic_is_refused_as_a_payload_error() -> None:
    published: list[Any] = []
    message = Message("a/b", b"{}", publish=lambda *args: published.append(args))
    with pytest.raises(NoResponseTopic, match="it names no MQTT 5 ResponseTopic"):
        message.reply({"x": 1})
    with pytest.raises(NoResponseTopic):
        Message("a/b", b"", properties=MessageProperties(content_type="t")).reply(b"")
    assert published == []


def test_reply_copies_the_request_correlation_data_over_the_given_properties() -> None:
    published: list[Any] = []
    request = MessageProperties(response_topic="r/1", correlation_data=b"c")
    message = Message("a/b", b"", properties=request, publish=lambda *args: published.append(args))
    message.reply(b"ok", properties=MessageProperties(correlation_data=b"mine", message_expiry=5))
    assert published == [
        ("r/1", b"ok", 0, False, MessageProperties(message_expiry=5, correlation_data=b"c"))
    ]


def test_message_properties_check_their_values_and_name_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message_expiry": -1}, "message_expiry must be whole seconds"),
        ({"message_expiry": 2**32}, "message_expiry must be whole seconds"),
        ({"correlation_data": "text"}, "correlation_data must be bytes"),
        ({"user_properties": [("a", 1)]}, "user_properties must be (name, value) string pairs"),
        ({"content_type": 3}, "content_type must be a string"),
        ({"response_topic": ""}, "response_topic must not be empty"),
    ]
    for values, message in cases:
        with pytest.raises(
            (TypeError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")
        ):
            MessageProperties(**values)
    assert MessageProperties(user_properties={"a": "1"}).user_properties == (("a", "1"),)
    assert publish_properties(MessageProperties(), mqtt5=False, topic="t") is None
    with pytest.raises(ValueError, match="wildcard"):
        publish_properties(MessageProperties(response_topic="r/#"), mqtt5=True, topic="t")
