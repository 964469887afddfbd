"""Receive throughput of the MQTT runtime (route + trivial handler) vs a raw paho subscriber.

Both receivers get the same `MESSAGES` messages from a publisher in a separate
process (`mosquitto_pub -l`, so the publisher is not the bottleneck), through the
shared Mosquitto on 127.0.0.1:1883, in the same run. The rate is counted from the
first to the last message received, so connection setup is excluded. The raw
baseline is a paho 2.x client running `loop_forever` in its own thread with
automatic acks: our runtime adds routing, a Message object, the handler call and
a manual ack after it.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from benchmarks.common import BenchResult
from config.settings import Settings
from core.message import Message
from core.mqtt import MqttRuntime
from core.router import Router

HOST, PORT = "127.0.0.1", 1883
#: Messages per measured run.
MESSAGES = 20_000
#: Seconds without a new message after which a run ends (QoS 0 may drop some).
IDLE_TIMEOUT = 3.0
#: Seconds to wait for a receiver to connect and subscribe.
READY_TIMEOUT = 10.0
#: Rounds of (baseline, ours) per case; the best of each is reported.
ROUNDS = 2
#: Publisher in-flight window for QoS 1 (the broker still caps what it sends us).
PUBLISH_INFLIGHT = 1000


def _protocol(version: str) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if version == "5" else MQTTProtocolVersion.MQTTv311


def _publish_all(topic_prefix: str, count: int, qos: int) -> None:
    """Child process: publish `count` small messages as fast as the client allows."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(PUBLISH_INFLIGHT)
    client.max_queued_messages_set(0)
    client.connect(HOST, PORT)
    client.loop_start()
    last = None
    for i in range(count):
        last = client.publish(f"{topic_prefix}/dev{i % 100}/telemetry", b'{"v":1}', qos)
    if last is not None:
        last.wait_for_publish(60)
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


class _Clock:
    """Counts messages and remembers when the first and the latest arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.first = self.last = 0.0
        self.first_cpu = self.last_cpu = 0.0

    def tick(self) -> None:
        """Called on the receiving network thread for each message."""
        now = time.perf_counter()
        if self.count == 0:
            self.first, self.first_cpu = now, time.thread_time()
        self.count += 1
        self.last = now
        self.last_cpu = time.thread_time()

    @property
    def per_cpu_second(self) -> float:
        """Messages per CPU second of the receiving thread: robust to other load."""
        spent = self.last_cpu - self.first_cpu
        return (self.count - 1) / spent if spent > 0 else 0.0

    def wait(self, target: int) -> float:
        """Messages per wall-clock second once `target` arrived or the stream went idle."""
        seen, since = -1, time.monotonic()
        while self.count < target:
            if self.count != seen:
                seen, since = self.count, time.monotonic()
            elif time.monotonic() - since > IDLE_TIMEOUT:
                break
            time.sleep(0.01)
        elapsed = self.last - self.first
        return (self.count - 1) / elapsed if elapsed > 0 else 0.0


class _Publisher:
    """Publishes MESSAGES messages from another process: `mosquitto_pub -l` (C, fast)
    when on PATH, else a paho client in a spawned process."""

    def __init__(self, topic_prefix: str, qos: int) -> None:
        binary = shutil.which("mosquitto_pub")
        self._process: Any
        if binary is not None:
            command = [binary, "-h", HOST, "-p", str(PORT), "-q", str(qos), "-l"]
            command += ["-M", str(PUBLISH_INFLIGHT), "-t", f"{topic_prefix}/dev1/telemetry"]
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE)
            self._process.stdin.write(b'{"v":1}\n' * MESSAGES)
            self._process.stdin.close()
        else:
            context = multiprocessing.get_context("spawn")
            self._process = context.Process(target=_publish_all, args=(topic_prefix, MESSAGES, qos))
            self._process.start()

    def join(self) -> None:
        """Wait for the publisher to finish."""
        if isinstance(self._process, subprocess.Popen):
            self._process.wait(60)
        else:
            self._process.join(60)


def _raw_baseline(qos: int, protocol: str) -> tuple[float, float]:
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    clock = _Clock()
    subscribed = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        protocol=_protocol(protocol),
    )
    client.on_message = lambda c, u, m: clock.tick()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/+/telemetry", qos)
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(HOST, PORT)
    thread = threading.Thread(target=client.loop_forever, daemon=True)
    thread.start()
    try:
        if not subscribed.wait(READY_TIMEOUT):
            raise ConnectionError("raw paho subscriber could not subscribe")
        publisher = _Publisher(prefix, qos)
        rate = clock.wait(MESSAGES)
        publisher.join()
    finally:
        client.disconnect()
        thread.join(5)
    return rate, clock.per_cpu_second


def _our_runtime(qos: int, protocol: str) -> tuple[float, float]:
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    clock = _Clock()
    router = Router()

    def handler(message: Message) -> None:
        clock.tick()

    router.on(f"{prefix}/{{device_id}}/telemetry", handler, qos=qos)
    settings = Settings(mqtt_host=HOST, mqtt_port=PORT, mqtt_protocol=protocol)
    runtime = MqttRuntime(settings, router, router.subscriptions("bench"))
    runtime.start()
    try:
        if not runtime.wait_ready(READY_TIMEOUT):
            raise ConnectionError("MQTT runtime could not subscribe")
        publisher = _Publisher(prefix, qos)
        rate = clock.wait(MESSAGES)
        publisher.join()
    finally:
        runtime.stop()
    return rate, clock.per_cpu_second


def run() -> list[BenchResult]:
    """QoS 0 and 1 (MQTT 3.1.1) and QoS 1 (MQTT 5): runtime vs raw paho, best of ROUNDS.

    Two figures per case: wall-clock receive rate (noisy on a shared machine) and
    messages per CPU second of the receiving network thread (stable under load).
    """
    try:
        socket.create_connection((HOST, PORT), timeout=1).close()
    except OSError as exc:
        raise ConnectionError(f"Mosquitto is not reachable on {HOST}:{PORT}: {exc}") from None
    results = []
    for qos, protocol in ((0, "3.1.1"), (1, "3.1.1"), (1, "5")):
        base_wall = base_cpu = our_wall = our_cpu = 0.0
        for _ in range(ROUNDS):
            wall, cpu = _raw_baseline(qos, protocol)
            base_wall, base_cpu = max(base_wall, wall), max(base_cpu, cpu)
            wall, cpu = _our_runtime(qos, protocol)
            our_wall, our_cpu = max(our_wall, wall), max(our_cpu, cpu)
        case = f"QoS{qos} MQTT {protocol}"
        results.append(
            BenchResult(f"runtime receive {case}", our_wall, f"raw paho {case}", base_wall)
        )
        results.append(
            BenchResult(
                f"runtime per thread-CPU-s {case}", our_cpu, f"raw paho per CPU-s {case}", base_cpu
            )
        )
    return results
