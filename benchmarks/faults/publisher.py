"""The harness's MQTT publisher: numbered QoS 1 messages, counted by their PUBACKs.

A message counts as acknowledged only once the broker's PUBACK for it arrived
(paho's `on_publish`). It reconnects by itself after a broker restart and paho
sends again what was not acknowledged, as any well-behaved device would.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from benchmarks.faults.common import unique
from benchmarks.faults.probe.routes import DIRECT_TOPIC

#: Unacknowledged messages the publisher keeps in flight.
MAX_INFLIGHT = 100


class CountingPublisher:
    """Publishes `{topic}/{n}` QoS 1 messages and records which the broker acked."""

    def __init__(
        self, host: str, port: int, protocol: str = "3.1.1", topic: str = DIRECT_TOPIC
    ) -> None:
        self.topic = topic
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("faults-pub-"), protocol=version
        )
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._sent: dict[int, int] = {}  #: packet id -> number, of messages not yet acked
        self._acked: set[int] = set()
        self._early: set[int] = set()  #: packet ids acked before publish() returned them
        self.published = 0
        self.sent_at: dict[int, float] = {}  #: number -> time.monotonic() of its publish()
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_publish(self, _client: object, _userdata: object, mid: int, *_rest: object) -> None:
        with self._lock:
            number = self._sent.pop(mid, None)
            if number is None:
                self._early.add(mid)
            else:
                self._acked.add(number)

    @property
    def acked(self) -> set[int]:
        """Numbers of the messages the broker acknowledged."""
        with self._lock:
            return set(self._acked)

    def publish(self, number: int, payload: str = "") -> None:
        """Publish message `number` (QoS 1); its PUBACK is counted when it comes."""
        self.sent_at[number] = time.monotonic()
        # Not under the lock: paho holds its own lock while it calls on_publish.
        info = self.client.publish(f"{self.topic}/{number}", payload, qos=1)
        with self._lock:  # the PUBACK may have come before publish() returned the mid
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._acked.add(number)
            else:
                self._sent[info.mid] = number
        self.published += 1

    def stream(self, count: int, rate: float, payload: str = "") -> threading.Thread:
        """Publish numbers 0..count-1 at `rate` per second from a thread (started)."""

        def run() -> None:
            start = time.monotonic()
            for number in range(count):
                self.publish(number, payload)
                time.sleep(max(0.0, start + (number + 1) / rate - time.monotonic()))

        thread = threading.Thread(target=run, name="faults-publisher", daemon=True)
        thread.start()
        return thread

    def wait_acked(self, count: int, timeout: float) -> set[int]:
        """The acked numbers once `count` were acked or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.acked

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


class DeadLetterWatch:
    """A subscriber on `{topic}/#` counting the dead letters the app publishes."""

    def __init__(self, host: str, port: int, topic: str = "deadletter") -> None:
        self.topics: list[str] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("faults-dl-"))
        self.client.on_message = lambda _c, _u, msg: self.topics.append(msg.topic)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        self.client.on_connect = lambda client, *_args: client.subscribe(f"{topic}/#", 1)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"could not subscribe to {topic}/# on {host}:{port}")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
