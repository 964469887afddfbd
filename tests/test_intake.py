"""The intake against the real Mosquitto: keepalive under slow handlers, per-topic order,
acknowledgements in arrival order on the wire, dead letters that always go out."""

from __future__ import annotations

import json
import random
import threading
import time

from core.message import Message
from core.router import Router
from tests.mqtt_helpers import (
    collector,
    make_settings,
    publisher,
    running_runtime,
    unique_prefix,
    wait_until,
)
from tests.mqtt_wire import WireTap


def test_slow_handlers_do_not_stop_keepalive(mqtt_broker: tuple[str, int]) -> None:
    # Six handlers of 6 s each with a 2 s keepalive: the broker drops a client that
    # sends nothing for 3 s, so pings must go out while every handler is busy.
    host, port = mqtt_broker
    prefix = unique_prefix("slow")
    router = Router()
    done: list[str] = []

    def slow(message: Message) -> None:
        time.sleep(6)
        done.append(message.topic)

    router.on(f"{prefix}/{{device}}/work", slow, qos=1)
    settings = make_settings(host, port, mqtt_keepalive=2, mqtt_handler_concurrency=8)
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        for i in range(6):
            pub.publish(f"{prefix}/d{i}/work", b"x", qos=1)
        assert wait_until(lambda: runtime.handled == 6, timeout=20)
        assert wait_until(lambda: runtime.acked == 6)
        assert runtime.connections == 1, "the broker dropped the client: keepalive stopped"
    assert len(done) == 6


def test_one_topic_is_handled_in_arrival_order_while_topics_run_in_parallel(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("lanes")
    router = Router()
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()
    running = 0
    most_running = 0

    def handler(message: Message) -> None:
        nonlocal running, most_running
        with lock:
            running += 1
            most_running = max(most_running, running)
        time.sleep(random.uniform(0, 0.004))
        with lock:
            running -= 1
            seen.setdefault(message.params["device"], []).append(int(message.payload))

    router.on(f"{prefix}/{{device}}", handler, qos=1)
    devices, per_device = 8, 40
    settings = make_settings(host, port, mqtt_handler_concurrency=8, mqtt_max_inflight=100)
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        infos = [
            pub.client.publish(f"{prefix}/d{device}", str(n).encode(), qos=1)
            for n in range(per_device)
            for device in range(devices)
        ]
        for info in infos:
            info.wait_for_publish(10)
        assert wait_until(lambda: runtime.handled == devices * per_device, timeout=30)
    assert seen == {f"d{device}": list(range(per_device)) for device in range(devices)}
    assert most_running > 1, "topics never ran in parallel"


def test_acks_leave_in_arrival_order_on_the_wire_though_handlers_finish_out_of_order(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    tap = WireTap(host, port)
    prefix = unique_prefix("ackorder")
    router = Router()
    finished: list[str] = []

    def handler(message: Message) -> None:
        if message.params["kind"] == "slow":
            time.sleep(0.05)
        finished.append(message.params["kind"])

    router.on(f"{prefix}/{{kind}}/{{n}}", handler, qos=1)
    settings = make_settings("127.0.0.1", tap.port, mqtt_handler_concurrency=8)
    count = 60
    try:
        with (
            running_runtime(settings, router, router.subscriptions("g")) as runtime,
            publisher(host, port) as pub,
        ):
            infos = [
                pub.client.publish(
                    f"{prefix}/{'slow' if n % 3 == 0 else 'fast'}/{n}", str(n).encode(), qos=1
                )
                for n in range(count)
            ]
            for info in infos:
                info.wait_for_publish(10)
            assert wait_until(lambda: runtime.acked == count, timeout=20)
            assert wait_until(lambda: len(tap.connections[0].pubacks) == count)
    finally:
        tap.close()
    wire = tap.connections[0]
    assert len(wire.publishes) == count
    assert wire.pubacks == wire.publishes
    # The order really was at stake: some fast messages finished before slow ones.
    assert finished != sorted(finished, key=lambda kind: kind != "slow")
    assert finished.index("fast") < len(finished) - finished[::-1].index("slow") - 1


def test_a_dead_letter_too_long_to_publish_as_is_is_shortened_and_the_loop_goes_on(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("longdl")
    dead_prefix = f"{prefix}/dead"
    router = Router()
    router.on(f"{prefix}/in/#", lambda m: 1 / 0, qos=1)
    handled: list[bytes] = []
    router.on(f"{prefix}/ok", lambda m: handled.append(m.payload), qos=1)
    # A topic the broker accepts, whose dead-letter topic would pass MQTT's 65,535 bytes.
    long_topic = f"{prefix}/in/" + "x" * (65_535 - len(prefix) - 4 - 5)
    settings = make_settings(host, port, mqtt_dead_letter_topic=dead_prefix, mqtt_handler_retries=1)
    with (
        collector(host, port, f"{dead_prefix}/#") as dead,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(long_topic, b"reading", qos=1)
        letters = dead.wait_for(1)
        pub.publish(f"{prefix}/ok", b"next", qos=1)
        assert wait_until(lambda: handled == [b"next"])
        assert runtime.alive and runtime.callback_errors == 0
    topic, raw = letters[0]
    assert topic.startswith(f"{dead_prefix}/_long/")
    assert len(topic.encode()) + len(raw) <= settings.mqtt_dead_letter_max_bytes
    body = json.loads(raw)
    assert long_topic.startswith(body["topic"]) and body["topic_size"] == len(long_topic)
    assert body["error"] == "ZeroDivisionError: division by zero"


def test_an_oversize_payload_is_dead_lettered_with_its_size_not_decoded(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("oversize")
    dead_prefix = f"{prefix}/dead"
    router = Router()
    decoded: list[object] = []
    router.on(f"{prefix}/in", lambda m: decoded.append(m.json()), qos=1)
    settings = make_settings(host, port, mqtt_dead_letter_topic=dead_prefix, mqtt_max_payload=1024)
    router.default_max_payload = settings.mqtt_max_payload  # as core.app wires it
    payload = b"\x01" * (2 * 1024 * 1024)  # JSON-escaped, six times its size
    with (
        collector(host, port, f"{dead_prefix}/#") as dead,
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/in", payload, qos=1)
        letters = dead.wait_for(1)
        pub.publish(f"{prefix}/in", b'{"ok": 1}', qos=1)
        assert wait_until(lambda: decoded == [{"ok": 1}])
        assert runtime.handler_failures == 0  # a payload error is never retried
    topic, raw = letters[0]
    assert len(topic.encode()) + len(raw) <= settings.mqtt_dead_letter_max_bytes
    body = json.loads(raw)
    assert "2097152 bytes, over the MQTT_MAX_PAYLOAD of 1024 bytes" in body["error"]
    assert body["payload_size"] == len(payload)
    assert body["payload_truncated"] is True
    assert body["payload"] and set(body["payload"]) == {"\x01"}


def test_a_dead_letter_that_cannot_be_published_is_counted_and_the_message_acked(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("dlfail")
    router = Router()
    router.on(f"{prefix}/bad", lambda m: 1 / 0, qos=1)
    handled: list[bytes] = []
    router.on(f"{prefix}/ok", lambda m: handled.append(m.payload), qos=1)
    # A wildcard in the dead-letter prefix makes every dead letter unpublishable.
    settings = make_settings(
        host, port, mqtt_dead_letter_topic=f"{prefix}/dead+", mqtt_handler_retries=1
    )
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/bad", b"x", qos=1)
        pub.publish(f"{prefix}/ok", b"y", qos=1)
        assert wait_until(lambda: handled == [b"y"] and runtime.acked == 2)
        assert runtime.stats.dead_letter_failures == 1
        assert runtime.alive
