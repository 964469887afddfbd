"""The system under test around MQTT: a private broker, the app (`main.py --run`) and
queue workers (`main.py --queue-work`), all on the probe app, all started as a user would.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.faults.backends import Backend
from benchmarks.faults.common import Probe, SystemProcess, processes, unique
from benchmarks.faults.probe.routes import DIRECT_TOPIC
from benchmarks.faults.publisher import CountingPublisher, DeadLetterWatch
from tests.mqtt_helpers import PrivateMosquitto

#: The app's log line once a connection has subscribed every route.
SUBSCRIBED = "subscribed to"
#: A worker's log line once it has checked its backend and entered its loop.
WORKER_STARTED = "started: connection="
#: Queue workers of the MQTT scenarios.
WORKERS = 2
#: Seconds the queue must stop growing before the harness counts it.
QUEUE_QUIET = 1.5
#: Seconds a queue short of the acknowledged count may stand still before the rest counts as lost.
STALL = 8.0
#: Seconds the intake may take to queue what was acknowledged.
QUEUE_TIMEOUT = 90.0
#: Seconds after the app subscribed before a stream starts: the private broker saves its
#: state every second (core.broker.AUTOSAVE_INTERVAL), so its session survives a kill -9.
BROKER_SAVE = 3.0
#: Seconds a stream's last PUBACK and last run may take after the stream ended.
STREAM_ACK_TIMEOUT = 60.0
STREAM_RUN_TIMEOUT = 120.0


def mqtt_env(
    env: dict[str, str], broker: PrivateMosquitto, protocol: str = "3.1.1"
) -> dict[str, str]:
    """`env` pointed at `broker`, with the defaults (persistent session under a derived
    client id); the app name and share group are the run's own."""
    return dict(
        env,
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_PROTOCOL=protocol,
        APP_NAME=unique("faults-"),
        MQTT_GROUP_NAME=unique("faults"),
    )


class App:
    """`main.py --run [--workers N]`, which can be stopped, killed and started again."""

    def __init__(self, env: dict[str, str], folder: Path, workers: int = 1) -> None:
        args = ["--run"] + (["--workers", str(workers)] if workers > 1 else [])
        self.workers = workers
        self.process = SystemProcess("app", args, dict(env, LOG_LEVEL="INFO"), folder)
        self._subscriptions = 0

    def start(self, wait: bool = True) -> App:
        """Start the app; with `wait`, until each of its clients has subscribed."""
        self._subscriptions = self.process.log.read_text().count(SUBSCRIBED) if (
            self.process.log.exists()
        ) else 0  # fmt: skip
        self.process.start()
        if wait:
            self.process.wait_for_log(SUBSCRIBED, self._subscriptions + self.workers)
        return self

    def kill(self) -> None:
        """SIGKILL the app (its `--workers` children exit by themselves)."""
        self.process.kill()

    def stop(self) -> None:
        """SIGTERM: a graceful stop."""
        self.process.stop()


def start_workers(found: Backend, folder: Path, count: int = WORKERS) -> list[SystemProcess]:
    """`count` queue workers on the backend's connection, once each is in its loop (a
    worker that starts while its backend is down exits at once, by design)."""
    args = ["--queue-work", "--connection", found.connection, "--sleep", "0.2"]
    env = dict(found.env, LOG_LEVEL="INFO")
    workers = [SystemProcess(f"worker-{i}", args, env, folder).start() for i in range(count)]
    for worker in workers:
        worker.wait_for_log(WORKER_STARTED)
    return workers


def queued_when_still(found: Backend, at_least: int, timeout: float) -> int:
    """Jobs in the probe queue once it holds `at_least` and stopped growing for
    QUEUE_QUIET seconds; or once it stopped growing for STALL seconds, or `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = found.queued(), time.monotonic()
    while time.monotonic() < deadline:
        quiet = QUEUE_QUIET if last >= at_least else STALL
        if time.monotonic() - since >= quiet:
            break
        time.sleep(0.1)
        now = found.queued()
        if now != last:
            last, since = now, time.monotonic()
    return last


@dataclass
class StreamResult:
    """What a stream through the app produced, counted from outside."""

    published: int
    acked: set[int]
    queued: int | None  #: jobs in the queue after the intake (None: workers ran meanwhile)
    runs: Counter[int]
    dead_letters: int
    workers_alive: bool  #: every worker started during the stream still runs at the end
    sent_at: dict[int, float]  #: number -> when it was published (time.monotonic())
    resubscribed_at: float  #: when the app had resubscribed after the fault (or it ended)

    def published_between(self, start: float, end: float) -> set[int]:
        """Numbers published between two `time.monotonic()` instants."""
        return {n for n, at in self.sent_at.items() if start <= at <= end}


def stream_through_app(
    found: Backend,
    broker: PrivateMosquitto,
    probe: Probe,
    folder: Path,
    count: int,
    rate: float,
    fault: Callable[[float], None],
    workers_during: bool = False,
    topic: str = DIRECT_TOPIC,
    app_env: dict[str, str] | None = None,
    resubscribes: bool = False,
) -> StreamResult:
    """Stream `count` probe messages at `rate`/s through a running app while `fault(span)`
    runs in this thread (`span`: the stream's seconds); then count the queue (unless
    workers ran meanwhile), run the jobs and count the runs and dead letters.
    `app_env` overrides the app's environment (a database reached through a proxy);
    `resubscribes`: the fault kills the broker, so the app reconnects (its resubscription
    is timed) and the stream waits until the broker has saved the app's session."""
    with processes() as running:
        app = App(mqtt_env(dict(found.env, **(app_env or {})), broker), folder)
        running.append(app.start().process)
        if resubscribes:  # the broker will be killed: let it save the new session first
            time.sleep(BROKER_SAVE)
        workers = start_workers(found, folder) if workers_during else []
        running.extend(workers)
        watch = DeadLetterWatch(broker.host, broker.port)
        publisher = CountingPublisher(broker.host, broker.port, topic=topic)
        try:
            streaming = publisher.stream(count, rate)
            fault(count / rate)
            resubscribed = time.monotonic()
            if resubscribes:
                app.process.wait_for_log(SUBSCRIBED, 2)
                resubscribed = time.monotonic()
            streaming.join(count / rate * 3 + 60)
            acked = publisher.wait_acked(count, STREAM_ACK_TIMEOUT)
            queued = None if workers_during else queued_when_still(found, len(acked), QUEUE_TIMEOUT)
            alive = all(worker.alive() for worker in workers)
            if not workers_during:
                running.extend(start_workers(found, folder))
            probe.wait_for(acked, STREAM_RUN_TIMEOUT)
            runs = probe.settle()
        finally:
            publisher.close()
            watch.close()
    return StreamResult(
        publisher.published,
        acked,
        queued,
        runs,
        len(watch.topics),
        alive,
        publisher.sent_at,
        resubscribed,
    )
