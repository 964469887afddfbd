"""Scenario 8: the poison matrix, through the running system.

Into the app (MQTT): non-JSON on a JSON route, a payload over `MQTT_MAX_PAYLOAD`, wrong
field types, a topic level with `$`, an empty level, a 60,000-byte level. Into the
queue (pushed straight into the driver's storage): garbage, 100,000-deep JSON, wrong
field types, an unknown job, `os.system` as the job name, a duplicate id. Through
`dispatch()`: a job that always fails, one that hangs past its timeout, one stuck in
C code (a catastrophic `re` match) past its timeout. Good jobs are queued behind all
of them. Expect: each MQTT poison becomes a dead letter, each queue poison a failed
job with its reason; the app and the (supervised) workers keep running; every good
job behind them runs.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import (
    DRIVERS,
    Case,
    Outcome,
    Probe,
    SystemProcess,
    base_env,
    judge,
    processes,
)
from benchmarks.faults.probe.jobs import AlwaysFails, Hangs, ProbeJob, StuckInC
from benchmarks.faults.probe.routes import DIRECT_TOPIC, JSON_TOPIC
from benchmarks.faults.publisher import CountingPublisher, DeadLetterWatch
from benchmarks.faults.system import WORKER_STARTED, App, mqtt_env
from queues.dispatcher import build_envelope
from queues.drivers.base import QueueDriver
from queues.drivers.redis import RedisDriver
from queues.registry import DEFAULT_QUEUE
from tests.mqtt_helpers import PrivateMosquitto

FAMILY = "poison"
NAME = "8 poison matrix"
SCENARIOS = {
    NAME: "each poison lands in the dead-letter topic or the failed store; app and workers "
    "keep running; every good job behind them runs"
}
#: The app's MQTT_MAX_PAYLOAD in this scenario, and the oversize payload sent to it.
MAX_PAYLOAD = 4096
#: Good jobs behind the poison: through MQTT and through dispatch().
GOOD = 50
#: Levels of the deep JSON pushed into the queue.
DEEP = 100_000
#: Seconds allowed for every poison to settle (the stuck job costs its timeout plus the
#: watchdog's grace and a worker restart) and every good job to run.
SETTLE_TIMEOUT = 90.0

#: (topic, payload) of each MQTT poison: each must become one dead letter.
MQTT_POISON = (
    (f"{JSON_TOPIC}/1", b"this is not json {"),
    (f"{DIRECT_TOPIC}/2", b"x" * (MAX_PAYLOAD + 1)),
    (f"{JSON_TOPIC}/3", json.dumps({"ms": "not a number"}).encode()),
    (f"{DIRECT_TOPIC}/$4", b""),
    (f"{DIRECT_TOPIC}/", b""),
    (f"{DIRECT_TOPIC}/" + "x" * 60000, b""),
)


def _queue_poison() -> list[str]:
    """Entries pushed straight into the queue's storage (each a failed job)."""
    good = json.loads(build_envelope(ProbeJob(n=0)).to_json())
    return [
        "hello from redis-cli",
        "[" * DEEP + "]" * DEEP,
        json.dumps(dict(good, max_tries="not a number")),
        json.dumps(dict(good, job="NoSuchJob")),
        json.dumps(dict(good, job="os.system", data={"command": "touch /tmp/pwned"})),
    ]


def raw_push(driver: QueueDriver, entry: str) -> None:
    """Write `entry` into the default queue's storage as an operator's client would: a raw
    RPUSH on the driver's own key for Redis (its push checks the envelope), `push` for SQL
    (a plain INSERT of the text)."""
    if isinstance(driver, RedisDriver):
        driver.client.rpush(driver.keys(DEFAULT_QUEUE).pending, entry)
    else:
        driver.push(DEFAULT_QUEUE, entry)


def run(driver: str, folder: Path) -> Outcome:
    """Scenario 8 on `driver`."""
    outcome = Outcome(NAME, driver, 0, 0, None, 0, 0, 0, SCENARIOS[NAME])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")
    env = base_env(probe, MQTT_MAX_PAYLOAD=str(MAX_PAYLOAD))
    good_mqtt = set(range(1000, 1000 + GOOD))
    good_jobs = set(range(2000, 2000 + GOOD))
    duplicate = 3000
    try:
        with backend(driver, folder / "backend", env) as found, processes() as running:
            app = App(mqtt_env(found.env, broker), folder)
            running.append(app.start().process)
            args = ["--queue-work", "--connection", found.connection, "--workers", "2"]
            args += ["--sleep", "0.2"]
            workers = SystemProcess("workers", args, dict(found.env, LOG_LEVEL="INFO"), folder)
            running.append(workers.start())
            workers.wait_for_log(WORKER_STARTED, 2)
            watch = DeadLetterWatch(broker.host, broker.port)
            publisher = CountingPublisher(broker.host, broker.port)
            try:
                for topic, payload in MQTT_POISON:
                    publisher.client.publish(topic, payload, qos=1).wait_for_publish(10)
                driver_ = found.queue_driver()
                poison = _queue_poison()
                for entry in poison:
                    raw_push(driver_, entry)
                twice = build_envelope(ProbeJob(n=duplicate)).to_json()
                raw_push(driver_, twice)
                raw_push(driver_, twice)
                found.dispatch([AlwaysFails(n=1), Hangs(n=2), StuckInC(n=3)])
                for number in sorted(good_mqtt):
                    publisher.publish(number)
                acked = publisher.wait_acked(GOOD, 30)
                found.dispatch([ProbeJob(n=n) for n in sorted(good_jobs)])
                expected_failed = len(poison) + 3
                runs = probe.wait_for(acked | good_jobs | {duplicate}, SETTLE_TIMEOUT)
                deadline = time.monotonic() + SETTLE_TIMEOUT
                while time.monotonic() < deadline and (
                    driver_.sizes(DEFAULT_QUEUE).failed < expected_failed
                    or len(watch.topics) < len(MQTT_POISON)
                ):
                    time.sleep(0.5)
                runs = probe.settle()
                failed = driver_.sizes(DEFAULT_QUEUE).failed
                alive = app.process.alive() and workers.alive()
            finally:
                publisher.close()
                watch.close()
    finally:
        broker.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    outcome.published = len(MQTT_POISON) + GOOD
    outcome.acknowledged = len(acked) + len(good_jobs)
    dead = len(watch.topics)
    restarts = workers.log.read_text(errors="replace").count("restart")
    outcome.extra = {"dead_letters": dead, "failed": failed, "worker_log_restarts": restarts}
    twice_runs = runs.get(duplicate, 0)
    outcome.explanation = (
        f"{dead} dead letters of {len(MQTT_POISON)} MQTT poisons; {failed} failed jobs of "
        f"{expected_failed} queue poisons (+1 if the duplicate id is refused); duplicate id "
        f"ran {twice_runs}x; app and workers alive: {alive}"
    )
    ok = dead >= len(MQTT_POISON) and failed >= expected_failed and alive and twice_runs >= 1
    return judge(outcome, acked | good_jobs, runs, ok, "a poison did not land where expected")


def cases() -> list[Case]:
    """Scenario 8 on every driver."""
    return [Case(NAME, d, SCENARIOS[NAME], partial(run, d)) for d in DRIVERS]
