"""A broker that crashes may not have saved what it already delivered: the app handles
the messages it holds from a lost connection instead of leaving them to a redelivery
that will not come (found by the fault harness, scenario 3 on MariaDB)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from core.message import Message
from core.router import Router
from tests.conftest import need_binaries
from tests.mqtt_helpers import (
    PrivateMosquitto,
    make_settings,
    publisher,
    running_runtime,
    unique_prefix,
    wait_until,
)

#: Messages held by the app (one topic: one lane, handled one after the other).
HELD = 5


def test_messages_held_when_the_broker_crashed_and_lost_them_are_still_handled(
    tmp_path: Path,
) -> None:
    need_binaries("mosquitto")
    prefix = unique_prefix("crash")
    seen: list[int] = []
    entered = threading.Event()
    release = threading.Event()
    router = Router()

    def slow(message: Message) -> None:
        entered.set()
        release.wait(30)
        seen.append(int(message.text()))

    router.on(f"{prefix}/r", slow, qos=1)
    broker = PrivateMosquitto(tmp_path / "mqtt")
    try:
        settings = make_settings(
            broker.host,
            broker.port,
            mqtt_persistent_session=True,
            mqtt_client_id=f"crash-{uuid.uuid4().hex[:8]}",
        )
        with running_runtime(settings, router, router.subscriptions("g")) as runtime:
            with publisher(broker.host, broker.port) as pub:
                for n in range(HELD):
                    pub.publish(f"{prefix}/r", str(n))  # the broker acknowledged each
            assert entered.wait(10), "the handler never started"
            # A crash before the broker saved anything: its state is gone.
            broker.kill()
            (tmp_path / "mqtt" / "mosquitto.db").unlink(missing_ok=True)
            broker.start()
            assert wait_until(lambda: runtime.connections >= 2, timeout=15)
            release.set()
            assert wait_until(lambda: len(seen) >= HELD, timeout=15)
        assert sorted(seen) == list(range(HELD)), "acknowledged by the broker, never handled"
    finally:
        release.set()
        broker.stop()
