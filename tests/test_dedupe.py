"""Message dedupe: a message whose key was seen within the window is acknowledged without
running its handler again (QoS 1 redelivery, a device publishing twice), per topic."""

from __future__ import annotations

from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.middleware.dedupe import Dedupe
from core.message import Message
from core.router import Router
from queues.coordination import RedisCoordinator, coordinator_for
from testing import TestClient
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.mqtt_helpers import make_settings, publisher, running_runtime, unique_prefix, wait_until
from tests.test_unique_jobs import _clear_locks


def test_repeats_through_the_broker_run_the_handler_once_per_key_and_topic(
    redis_client: object, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("dedupe")
    handled: list[tuple[str, str]] = []
    attempts: dict[str, int] = {}
    router = Router()

    def handler(message: Message) -> None:
        key = message.json().get("id", "-")
        attempts[key] = attempts.get(key, 0) + 1
        if key == "flaky" and attempts[key] == 1:
            raise RuntimeError("the first attempt fails")
        handled.append((message.params["device"], key))

    dedupe = Dedupe("id", window=60, coordinator=RedisCoordinator(redis_client))
    router.on(f"{prefix}/{{device}}", handler, qos=1, middleware=[dedupe])
    settings = make_settings(host, port, mqtt_handler_retries=3, mqtt_handler_concurrency=1)
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        for device, key in [("d1", "a"), ("d1", "a"), ("d1", "b"), ("d2", "a"),
                            ("d1", "flaky"), ("d1", "a")]:  # fmt: skip
            pub.publish(f"{prefix}/{device}", f'{{"id": "{key}"}}', qos=1)
        pub.publish(f"{prefix}/d1", b'{"value": 1}', qos=1)  # no key: handled as is
        assert wait_until(lambda: runtime.acked == 7)
    # The handler that raised gave its claim back, so its retry ran.
    assert sorted(handled) == [("d1", "-"), ("d1", "a"), ("d1", "b"), ("d1", "flaky"), ("d2", "a")]
    assert runtime.dead_lettered == 0


def test_an_mqtt5_user_property_is_the_key(
    redis_client: object, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("dedupe5")
    handled: list[bytes] = []
    router = Router()
    dedupe = Dedupe(user_property="msg-id", coordinator=RedisCoordinator(redis_client))
    router.on(f"{prefix}/x", lambda m: handled.append(m.payload), qos=1, middleware=[dedupe])
    settings = make_settings(host, port, mqtt_protocol="5")
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port, protocol="5") as pub,
    ):
        for n, msg_id in enumerate(["m1", "m1", "m2"]):
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("msg-id", msg_id)]
            info = pub.client.publish(f"{prefix}/x", str(n), qos=1, properties=props)
            info.wait_for_publish(10)
        assert wait_until(lambda: runtime.acked == 3)
    assert handled == [b"0", b"2"]


@pytest.mark.parametrize("kind", DRIVER_NAMES)
def test_the_window_ends_and_a_callable_key_works_on_every_store(kind: str, tmp_path: Path) -> None:
    driver = make_driver(kind, tmp_path)
    _clear_locks(driver)
    handled: list[str] = []
    router = Router()
    dedupe = Dedupe(lambda m: m.text(), window=0.5, coordinator=coordinator_for(driver))
    router.on("dd/{device}", lambda m: handled.append(m.text()), middleware=[dedupe])
    client = TestClient(router)
    for payload in ("k1", "k1", "k2"):
        client.publish("dd/d1", payload)
    assert wait_until(lambda: client.publish("dd/d1", "k1") is not None and len(handled) == 3)
    assert handled == ["k1", "k2", "k1"]
    driver.close()
