"""Regressions found by a concurrency review of the intake: each test failed before its fix."""

from __future__ import annotations

import select as select_module
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.acks import AckSequencer
from core.delivery import Delivery, Inbound, Outcome
from core.lanes import LanePool
from core.message import Message
from core.mqtt import MqttRuntime
from core.router import Router
from queues import dispatch
from queues.drivers.base import QueueUnavailable
from queues.envelope import Envelope
from queues.outbox import DispatchOutbox, PendingJob
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry
from tests.mqtt_helpers import make_settings, publisher, running_runtime, unique_prefix, wait_until


class Unprintable(Exception):
    """An exception whose text cannot be made (a library's broken `__str__`)."""

    def __str__(self) -> str:
        raise AttributeError("detail")


def test_a_handler_exception_that_cannot_be_printed_does_not_hold_back_later_acks(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("unprintable")
    router = Router()

    def poison(message: Message) -> None:
        raise Unprintable()

    router.on(f"{prefix}/poison", poison, qos=1)
    handled: list[str] = []
    router.on(f"{prefix}/ok/{{n}}", lambda m: handled.append(m.params["n"]), qos=1)
    settings = make_settings(
        host, port, mqtt_dead_letter_topic=f"{prefix}/dead", mqtt_handler_retries=1
    )
    with (
        running_runtime(settings, router, router.subscriptions("g")) as runtime,
        publisher(host, port) as pub,
    ):
        pub.publish(f"{prefix}/poison", b"x", qos=1)
        for n in range(5):
            pub.publish(f"{prefix}/ok/{n}", b"x", qos=1)
        assert wait_until(lambda: runtime.acked == 6)
        assert runtime.dead_lettered == 1 and len(handled) == 5


def test_an_async_handler_records_its_dispatches_like_a_plain_one(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_broker
    driver = make_driver("redis", tmp_path)
    reg = registry()
    prefix = unique_prefix("async-outbox")
    attempts: list[int] = []
    router = Router()

    async def flaky(message: Message) -> None:
        dispatch(jobs.RecordJob(path="-", value=len(attempts)), connection=driver, registry=reg)
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails after dispatching")

    router.on(f"{prefix}/x", flaky, qos=1)
    try:
        with (
            running_runtime(
                make_settings(host, port), router, router.subscriptions("g"),
                outbox=DispatchOutbox(),
            ) as runtime,
            publisher(host, port) as pub,
        ):  # fmt: skip
            pub.publish(f"{prefix}/x", b"", qos=1)
            assert wait_until(lambda: runtime.acked == 1)
        stored = []
        while (job := driver.pop(["default"])) is not None:
            stored.append(Envelope.from_json(job.payload).data["value"])
            driver.ack(job)
        assert stored == [1], "the failed attempt's job was stored"
    finally:
        driver.close()


class FlakySink:
    """A `JobSink` of the test: refuses `outages` bulk writes as an outage, then stores."""

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.rows: list[tuple[str, str, float]] = []

    def enqueue(self, queue: str, payload: str, delay: float = 0.0) -> None:
        self.bulk([(queue, payload, delay)])

    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        if self.outages:
            self.outages -= 1
            raise QueueUnavailable("the second backend is down")
        self.rows.extend(jobs)


def test_a_batch_spanning_two_backends_stores_each_job_once_through_an_outage_of_one(
    tmp_path: Path,
) -> None:
    redis_driver = make_driver("redis", tmp_path)
    other = FlakySink(outages=3)
    records = [
        [PendingJob(redis_driver, "default", _payload(1), 0.0), PendingJob(other, "q", "b1", 0.0)],
        [PendingJob(redis_driver, "default", _payload(2), 0.0)],
    ]
    delivery = Delivery(
        Router(), lambda *a, **k: None, 1, "dead/", 60_000,
        retry_pause=lambda *a: True, outage_pause=lambda *a: True, outbox=DispatchOutbox(),
    )  # fmt: skip
    outcomes = [_outcome(r) for r in records]
    try:
        assert delivery.store(outcomes)
        assert redis_driver.sizes("default").pending == 2
        assert other.rows == [("q", "b1", 0.0)]
    finally:
        redis_driver.close()


def _payload(n: int) -> str:
    return Envelope(job="RecordJob", data={"path": "-", "value": n}).to_json()


def _outcome(records: list[PendingJob]) -> Outcome:
    return Outcome(Message("t", b""), records)


def test_a_dead_letter_the_broker_does_not_acknowledge_leaves_its_message_unacked() -> None:
    class Unacknowledged:
        def wait_for_publish(self, timeout: float) -> None:
            pass

        def is_published(self) -> bool:
            return False

    router = Router()
    router.on("t/x", lambda m: 1 / 0, qos=1)
    delivery = Delivery(
        router, lambda *a, **k: Unacknowledged(), 1, "dead/", 60_000,
        retry_pause=lambda *a: True, outage_pause=lambda *a: True,
    )  # fmt: skip
    outcome = delivery.route(Inbound("t/x", b"", 1, False, None))
    assert outcome is not None and outcome.dead_letter is not None
    assert outcome.confirmed is False


def test_a_closing_pool_refuses_new_items() -> None:
    ran: list[int] = []

    def run(batch: Sequence[int]) -> int:
        ran.extend(batch)
        return len(batch)

    pool: LanePool[int] = LanePool(run, 2, 10, 0.005)
    assert pool.submit("k", 1)
    assert pool.close(5)
    assert pool.submit("k", 2) is False
    assert ran == [1]


def test_stop_under_a_stream_returns_without_waiting_out_its_timeout(
    mqtt_broker: tuple[str, int],
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("stopstream")
    router = Router()
    router.on(f"{prefix}/{{n}}", lambda m: time.sleep(0.001), qos=1)
    runtime = MqttRuntime(make_settings(host, port), router, router.subscriptions("g"))
    runtime.start()
    assert runtime.wait_ready(10)
    stop_streaming = threading.Event()

    def stream() -> None:
        with publisher(host, port) as pub:
            n = 0
            while not stop_streaming.is_set():
                pub.client.publish(f"{prefix}/{n % 8}", b"x", qos=1)
                n += 1
                time.sleep(0.0005)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        assert wait_until(lambda: runtime.handled > 50)
        started = time.monotonic()
        runtime.stop(timeout=3.0)
        assert time.monotonic() - started < 2.0
    finally:
        stop_streaming.set()
        streamer.join()


def test_a_connection_lost_without_on_disconnect_never_acks_old_ids_on_the_new_one(
    mqtt_broker: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = mqtt_broker
    prefix = unique_prefix("selectfail")
    gate = threading.Event()
    router = Router()
    router.on(f"{prefix}/{{n}}", lambda m: gate.wait(10), qos=1)
    runtime = MqttRuntime(make_settings(host, port), router, router.subscriptions("g"))
    runtime.start()
    assert runtime.wait_ready(10)
    real_select = select_module.select
    fail_once = [True]

    def failing_select(*args: object) -> object:
        # paho's loop returns without on_disconnect when select() raises.
        if fail_once[0] and threading.current_thread() is runtime.client._thread:
            fail_once[0] = False
            raise ValueError("select() on a bad descriptor")
        return real_select(*args)  # type: ignore[arg-type]

    try:
        with publisher(host, port) as pub:
            pub.publish(f"{prefix}/a", b"1", qos=1)
            assert wait_until(lambda: runtime.stats.received == 1)
            connections = runtime.connections
            monkeypatch.setattr(select_module, "select", failing_select)  # paho uses it
            assert wait_until(lambda: runtime.connections == connections + 1)
        gate.set()
        time.sleep(0.3)
        assert runtime.acked == 0, "an old connection's packet id was acked on the new one"
    finally:
        gate.set()
        runtime.stop(2)


def test_the_sequencer_keeps_acks_once_even_when_a_send_fails() -> None:
    sent: list[int] = []

    def send(mid: int, qos: int) -> None:
        if mid == 2 and not sent.count(-1):
            sent.append(-1)
            raise OSError("socket gone")
        sent.append(mid)

    sequencer = AckSequencer(send)
    tickets = [sequencer.take(mid, 1) for mid in (1, 2, 3)]
    sequencer.done(tickets[0])
    with pytest.raises(OSError):
        sequencer.done(tickets[1])
    sequencer.done(tickets[2])
    assert sent == [1, -1, 3]  # 2 is not sent twice


def test_a_writer_interrupted_while_waiting_does_not_stall_the_group_commit() -> None:
    from queues.group_commit import GroupCommit

    gate = threading.Event()
    written: list[int] = []

    def write_batch(rows: Sequence[int]) -> None:
        gate.wait(5)
        written.extend(rows)

    group: GroupCommit[int] = GroupCommit(write_batch)
    leader = threading.Thread(target=group.write, args=(1,))
    leader.start()
    time.sleep(0.05)
    interrupted: list[BaseException] = []

    class Interrupt(BaseException):
        pass

    class InterruptedEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            raise Interrupt()  # what Ctrl-C does to a script's main thread while it waits

    def interrupted_writer() -> None:
        from queues import group_commit

        group_commit._events.event = InterruptedEvent()  # this thread's wake-up event
        try:
            group.write(2)
        except Interrupt as exc:
            interrupted.append(exc)

    waiter = threading.Thread(target=interrupted_writer)
    waiter.start()
    waiter.join()
    gate.set()
    leader.join(5)
    done = threading.Thread(target=group.write, args=(3,))
    done.start()
    done.join(5)
    assert not done.is_alive(), "a later writer waited for ever"
    assert interrupted and 3 in written
