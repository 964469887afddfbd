"""The dispatch outbox through the real intake: jobs are stored per batch before the acks,
a failed handler attempt leaves nothing, one topic's jobs keep their order."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.message import Message
from core.router import Router
from queues import dispatch
from queues.drivers.base import QueueDriver
from queues.envelope import Envelope
from queues.outbox import DispatchOutbox, PendingJob, recorded
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry
from tests.mqtt_helpers import make_settings, publisher, running_runtime, unique_prefix, wait_until


def _drain(driver: QueueDriver, queue: str = "default") -> list[int]:
    values = []
    while (job := driver.pop([queue])) is not None:
        values.append(Envelope.from_json(job.payload).data["value"])
        driver.ack(job)
    return values


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path):
    made = make_driver(request.param, tmp_path)
    yield made
    made.close()


def test_a_handler_attempt_that_raises_queues_nothing_and_its_retry_queues_once(
    driver: QueueDriver, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    reg = registry()
    prefix = unique_prefix("outbox-retry")
    attempts: dict[str, int] = {}
    router = Router()

    def flaky(message: Message) -> None:
        n = int(message.payload)
        dispatch(jobs.RecordJob(path="-", value=n), connection=driver, registry=reg)
        attempts[message.topic] = attempts.get(message.topic, 0) + 1
        if message.params["kind"] == "never" or attempts[message.topic] == 1:
            raise RuntimeError("the device table is locked")

    router.on(f"{prefix}/{{kind}}", flaky, qos=1)
    settings = make_settings(
        host, port, mqtt_handler_retries=3, mqtt_dead_letter_topic=f"{prefix}/dead"
    )
    with (
        running_runtime(
            settings, router, router.subscriptions("g"), outbox=DispatchOutbox()
        ) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/second", b"1", qos=1)
        pub.publish(f"{prefix}/never", b"2", qos=1)
        assert wait_until(lambda: runtime.acked == 2)
        assert runtime.dead_lettered == 1
    assert attempts == {f"{prefix}/second": 2, f"{prefix}/never": 3}
    assert _drain(driver) == [1]  # one job from the retry, none from the failed attempts


def test_the_jobs_of_one_topic_are_queued_in_arrival_order(
    driver: QueueDriver, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    reg = registry()
    prefix = unique_prefix("outbox-order")
    router = Router()
    router.on(
        f"{prefix}/{{device}}",
        lambda m: dispatch(
            jobs.RecordJob(path=m.params["device"], value=int(m.payload)),
            connection=driver,
            registry=reg,
        ),
        qos=1,
    )
    count = 300
    settings = make_settings(host, port, mqtt_max_inflight=100, mqtt_handler_concurrency=4)
    with (
        running_runtime(
            settings, router, router.subscriptions("g"), outbox=DispatchOutbox()
        ) as runtime,
        publisher(host, port) as pub,
    ):
        infos = [pub.client.publish(f"{prefix}/d1", str(n), qos=1) for n in range(count)]
        for info in infos:
            info.wait_for_publish(10)
        assert wait_until(lambda: runtime.acked == count, timeout=30)
    assert _drain(driver) == list(range(count))


def test_records_the_backend_refuses_dead_letter_only_their_own_message(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_broker
    driver = make_driver("redis", tmp_path)
    reg = registry()
    prefix = unique_prefix("outbox-poison")
    gate = threading.Event()
    router = Router()

    def handler(message: Message) -> None:
        gate.wait(5)  # let the three messages gather into one batch
        if message.params["kind"] == "bad":
            pending = recorded()
            assert pending is not None
            pending.append(PendingJob(driver, "default", "not an envelope", 0.0))
        else:
            dispatch(jobs.RecordJob(path="-", value=int(message.payload)), connection=driver,
                     registry=reg)  # fmt: skip

    router.on(f"{prefix}/{{kind}}", handler, qos=1)
    settings = make_settings(
        host, port, mqtt_handler_concurrency=1, mqtt_dead_letter_topic=f"{prefix}/dead"
    )
    try:
        with (
            running_runtime(
                settings, router, router.subscriptions("g"), outbox=DispatchOutbox()
            ) as runtime,
            publisher(host, port) as pub,
        ):
            pub.publish(f"{prefix}/good", b"1", qos=1)
            pub.publish(f"{prefix}/bad", b"2", qos=1)
            pub.publish(f"{prefix}/good", b"3", qos=1)
            gate.set()
            assert wait_until(lambda: runtime.acked == 3)
            assert runtime.dead_lettered == 1
        assert sorted(_drain(driver)) == [1, 3]
    finally:
        driver.close()
