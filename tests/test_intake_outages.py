"""The intake through outages of its backends: nothing acknowledged is lost, nothing
good is dead-lettered. Each test runs private servers on free ports."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from backends.redis_client import build_redis
from config.settings import Settings
from core.message import Message
from core.router import Router
from queues import dispatch
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from queues.outbox import DispatchOutbox
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry
from tests.mqtt_helpers import (
    PrivateMosquitto,
    make_settings,
    private_mosquitto,
    running_runtime,
    unique_prefix,
    wait_until,
)
from tests.private_servers import PrivateRedis

pytestmark = pytest.mark.slow


class CountingPublisher:
    """Publishes numbered QoS 1 messages at a steady rate and tells which the broker acked.

    It reconnects by itself after a broker restart (paho re-sends what was not
    acknowledged); a message counts as published only once its PUBACK arrived.
    """

    def __init__(self, host: str, port: int) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self._sent: list[tuple[int, int]] = []  #: (number, packet id)
        self._acked_mids: set[int] = set()
        self.client.on_publish = lambda _c, _u, mid, *_rest: self._acked_mids.add(mid)
        self.client.connect(host, port)
        self.client.loop_start()

    @property
    def acked(self) -> set[int]:
        """Numbers of the messages the broker acknowledged."""
        return {n for n, mid in list(self._sent) if mid in self._acked_mids}

    def stream(self, topic: str, count: int, rate: float) -> threading.Thread:
        """Publish `count` messages numbered 0.. to `topic`/{n} at `rate` per second."""

        def run() -> None:
            start = time.monotonic()
            for n in range(count):
                info = self.client.publish(f"{topic}/{n}", str(n), qos=1)
                self._sent.append((n, info.mid))
                time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _queued_values(driver: RedisDriver, queue: str) -> list[int]:
    raw = driver.client.lrange(f"routemq:queue:{queue}", 0, -1)
    return [Envelope.from_json(item).data["value"] for item in raw]


@pytest.mark.parametrize("through", ["outbox", "immediate dispatch"])
def test_a_redis_outage_holds_messages_unacked_and_dead_letters_none(
    tmp_path: Path, through: str
) -> None:
    (tmp_path / "redis").mkdir()
    redis_server = PrivateRedis(tmp_path / "redis", appendfsync="always")
    client = build_redis(Settings(redis_host="127.0.0.1", redis_port=redis_server.port))
    driver = RedisDriver(client, RedisFailedStore(client))
    reg = registry()
    prefix = unique_prefix("outage")
    router = Router()

    def enqueue(message: Message) -> None:
        dispatch(jobs.RecordJob(path="-", value=int(message.params["n"])), connection=driver,
                 registry=reg)  # fmt: skip

    router.on(f"{prefix}/r/{{n}}", enqueue, qos=1)
    count = 1000
    try:
        with private_mosquitto(tmp_path / "mqtt") as broker:
            settings = make_settings(
                broker.host, broker.port, mqtt_dead_letter_topic=f"{prefix}/dead"
            )
            outbox = DispatchOutbox() if through == "outbox" else None
            with running_runtime(
                settings, router, router.subscriptions("g"), outbox=outbox
            ) as runtime:
                pub = CountingPublisher(broker.host, broker.port)
                try:
                    streaming = pub.stream(f"{prefix}/r", count, rate=200)
                    time.sleep(1.0)
                    redis_server.kill()
                    time.sleep(10.0)
                    assert runtime.intake.in_outage
                    redis_server.start()
                    streaming.join(30)
                    assert wait_until(lambda: len(pub.acked) == count, timeout=20)
                    assert wait_until(
                        lambda: len(set(_queued_values(driver, "default"))) >= count, timeout=30
                    )
                finally:
                    pub.close()
                assert runtime.dead_lettered == 0
                assert runtime.handler_failures == 0
                assert runtime.stats.outage_retries > 0
                assert not runtime.intake.in_outage
        assert sorted(set(_queued_values(driver, "default"))) == list(range(count))
    finally:
        redis_server.stop()


def test_a_broker_killed_mid_stream_loses_nothing_with_the_defaults(tmp_path: Path) -> None:
    prefix = unique_prefix("brokerkill")
    router = Router()
    seen: set[int] = set()
    lock = threading.Lock()

    def record(message: Message) -> None:
        with lock:
            seen.add(int(message.params["n"]))

    router.on(f"{prefix}/r/{{n}}", record, qos=1)
    count = 2000
    broker = PrivateMosquitto(tmp_path / "mqtt")
    try:
        # The defaults: a persistent session under the derived client id.
        settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port,
                            app_name=f"kill-{uuid.uuid4().hex[:6]}")  # fmt: skip
        assert settings.mqtt_persistent_session
        with running_runtime(settings, router, router.subscriptions("g")) as runtime:
            pub = CountingPublisher(broker.host, broker.port)
            try:
                streaming = pub.stream(f"{prefix}/r", count, rate=200)
                time.sleep(3.0)
                broker.kill()
                time.sleep(2.0)
                broker.start()
                streaming.join(30)
                assert wait_until(lambda: len(pub.acked) == count, timeout=30)
                assert wait_until(lambda: pub.acked <= seen, timeout=30)
            finally:
                pub.close()
            assert runtime.connections >= 2
    finally:
        broker.stop()
    assert pub.acked - seen == set(), "acknowledged to the publisher but never handled"
