"""Scenarios 4 and 5: the app away while messages are published.

4. The app stopped (SIGTERM) while 200 QoS 1 messages are published, then started
   again, on MQTT 3.1.1 and 5, with and without `--run --workers 2`: 200/200 run.
5. The app killed with SIGKILL three times while 2,000 messages stream (restarted at
   once each time): 0 lost; duplicates counted (a kill after the jobs were stored,
   before the PUBACK left, makes the broker redeliver).

The queue is counted once the intake is done and before the workers start, so the
table shows what the MQTT -> queue path and the queue -> job path each did.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import (
    Case,
    Outcome,
    Probe,
    base_env,
    judge,
    processes,
    scale,
    scaled,
)
from benchmarks.faults.probe.routes import DIRECT_TOPIC, SHARED_TOPIC
from benchmarks.faults.publisher import CountingPublisher
from benchmarks.faults.system import App, mqtt_env, queued_when_still, start_workers
from tests.mqtt_helpers import PrivateMosquitto

FAMILY = "app_restart"
STOPPED = "4 app stopped while publishing"
KILLED = "5 app SIGKILL x3"
SCENARIOS = {
    STOPPED: "every message published while the app was stopped runs (persistent session)",
    KILLED: "0 lost; duplicates only from kills between storing a job and its PUBACK",
}
#: Seconds allowed for the publisher's PUBACKs, the queue to fill, and the jobs to run.
ACK_TIMEOUT = 60.0
QUEUE_TIMEOUT = 90.0
RUN_TIMEOUT = 120.0
#: Messages per second of scenario 5's stream, and its kills.
STREAM_RATE = 200.0
KILLS = 3

#: (driver, MQTT protocol, app processes) of scenario 4: every variant on Redis (the
#: variants differ on the MQTT side only), and one crossing both on each other driver.
STOPPED_VARIANTS = (
    ("redis", "3.1.1", 1),
    ("redis", "3.1.1", 2),
    ("redis", "5", 1),
    ("redis", "5", 2),
    ("mariadb", "5", 2),
    ("sqlite", "3.1.1", 1),
)


def _drain(outcome: Outcome, found_queued: int, probe: Probe, numbers: set[int]) -> None:
    outcome.queued = found_queued
    probe.wait_for(numbers, RUN_TIMEOUT)


def stopped(driver: str, protocol: str, app_workers: int, folder: Path) -> Outcome:
    """Scenario 4: publish while the app is stopped, start it, count."""
    count = scaled(200, 20)
    label = f"mqtt {protocol}, --workers {app_workers}"
    outcome = Outcome(STOPPED, driver, 0, 0, 0, 0, 0, 0, SCENARIOS[STOPPED])
    outcome.variant = f"mqtt{protocol} x{app_workers}"
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")
    try:
        with backend(driver, folder / "backend", base_env(probe)) as found, processes() as running:
            app = App(mqtt_env(found.env, broker, protocol), folder, app_workers)
            running.append(app.start().process)  # the session and subscriptions exist
            app.stop()
            topic = SHARED_TOPIC if app_workers > 1 else DIRECT_TOPIC
            publisher = CountingPublisher(broker.host, broker.port, protocol, topic)
            try:
                for number in range(count):
                    publisher.publish(number)
                acked = publisher.wait_acked(count, ACK_TIMEOUT)
            finally:
                publisher.close()
            outcome.published, outcome.acknowledged = publisher.published, len(acked)
            app.start()
            queued = queued_when_still(found, len(acked), QUEUE_TIMEOUT)
            running.extend(start_workers(found, folder))
            _drain(outcome, queued, probe, acked)
            runs = probe.settle()
    finally:
        broker.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    complete = len(acked) == count and set(runs) == set(range(count))
    outcome.explanation = f"{len(set(runs))}/{count} ran"
    return judge(outcome, acked, runs, complete, f"{label}: not {count}/{count}")


def killed(driver: str, folder: Path) -> Outcome:
    """Scenario 5: SIGKILL the app three times mid-stream, restart it each time."""
    count = scaled(2000, 100)
    outcome = Outcome(KILLED, driver, 0, 0, 0, 0, 0, 0, SCENARIOS[KILLED])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")
    try:
        with backend(driver, folder / "backend", base_env(probe)) as found, processes() as running:
            app = App(mqtt_env(found.env, broker), folder)
            running.append(app.start().process)
            publisher = CountingPublisher(broker.host, broker.port)
            try:
                streaming = publisher.stream(count, STREAM_RATE * min(1.0, scale() * 2))
                span = count / (STREAM_RATE * min(1.0, scale() * 2))
                for _ in range(KILLS):
                    time.sleep(span / (KILLS + 1))
                    app.kill()
                    app.start(wait=False)
                streaming.join(span * 3 + 30)
                acked = publisher.wait_acked(count, ACK_TIMEOUT)
            finally:
                publisher.close()
            outcome.published, outcome.acknowledged = publisher.published, len(acked)
            queued = queued_when_still(found, len(acked), QUEUE_TIMEOUT)
            running.extend(start_workers(found, folder))
            _drain(outcome, queued, probe, acked)
            runs = probe.settle()
    finally:
        broker.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    extra = (outcome.queued or 0) - len(set(runs))
    outcome.extra = {"kills": KILLS, "jobs_queued_twice": max(0, extra)}
    outcome.explanation = (
        f"{KILLS} kills; {max(0, extra)} jobs queued twice (stored, then the kill came "
        "before the PUBACK: the broker redelivered)"
    )
    return judge(outcome, acked, runs)


def cases() -> list[Case]:
    """Scenario 4's variants and scenario 5 on every driver."""
    found = [
        Case(STOPPED, d, SCENARIOS[STOPPED], partial(stopped, d, protocol, workers))
        for d, protocol, workers in STOPPED_VARIANTS
    ]
    return found + [
        Case(KILLED, d, SCENARIOS[KILLED], partial(killed, d))
        for d in ("redis", "mariadb", "sqlite")
    ]
