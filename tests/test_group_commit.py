"""Group commit: concurrent dispatches share round trips, and each job is stored once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.message import Message
from core.router import Router
from queues import dispatch
from queues.drivers.base import QueueDriver, QueueUnavailable
from queues.envelope import Envelope
from queues.group_commit import GroupCommit
from queues.outbox import DispatchOutbox
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry
from tests.mqtt_helpers import make_settings, publisher, running_runtime, unique_prefix, wait_until


def _race(writers: int, per_writer: int, write: object) -> None:
    def run(base: int) -> None:
        for i in range(per_writer):
            write(base + i)  # type: ignore[operator]

    threads = [threading.Thread(target=run, args=(w * per_writer,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_writes_share_batches_and_each_returns_after_its_row_is_written() -> None:
    written: list[int] = []
    batch_sizes: list[int] = []

    def write_batch(rows: Sequence[int]) -> None:
        time.sleep(0.002)  # a round trip, during which other writers gather
        written.extend(rows)
        batch_sizes.append(len(rows))

    group: GroupCommit[int] = GroupCommit(write_batch)
    returned_before_written: list[int] = []

    def write(row: int) -> None:
        group.write(row)
        if row not in written:
            returned_before_written.append(row)

    _race(writers=8, per_writer=50, write=write)
    assert sorted(written) == list(range(400))
    assert returned_before_written == []
    assert group.batches == len(batch_sizes) < 400
    assert max(batch_sizes) > 1


def test_a_lone_writer_pays_one_call_per_row() -> None:
    batch_sizes: list[int] = []
    group: GroupCommit[int] = GroupCommit(lambda rows: batch_sizes.append(len(rows)))
    for row in range(20):
        group.write(row)
    assert batch_sizes == [1] * 20


def test_a_bad_row_fails_alone_and_the_rows_batched_with_it_are_written() -> None:
    written: list[str] = []
    gate = threading.Event()

    def write_batch(rows: Sequence[str]) -> None:
        if rows[0] == "first":
            gate.wait(5)  # hold the first batch so the next three gather into one
        if "bad" in rows:
            raise ValueError("row 'bad' is malformed")
        written.extend(rows)

    group: GroupCommit[str] = GroupCommit(write_batch)
    errors: dict[str, BaseException] = {}

    def write(row: str) -> None:
        try:
            group.write(row)
        except ValueError as exc:
            errors[row] = exc

    first = threading.Thread(target=write, args=("first",))
    first.start()
    time.sleep(0.05)
    others = [threading.Thread(target=write, args=(row,)) for row in ("a", "bad", "b")]
    for thread in others:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in [first, *others]:
        thread.join()
    assert sorted(written) == ["a", "b", "first"]
    assert list(errors) == ["bad"]


def test_an_outage_fails_every_row_of_the_batch_without_retrying_them_one_by_one() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def write_batch(rows: Sequence[int]) -> None:
        calls.append(len(rows))
        if rows[0] == 0:
            gate.wait(5)
            return
        raise QueueUnavailable("Redis at 127.0.0.1:1 is unreachable")

    group: GroupCommit[int] = GroupCommit(write_batch)
    failed: list[int] = []

    def write(row: int) -> None:
        try:
            group.write(row)
        except QueueUnavailable:
            failed.append(row)

    threads = [threading.Thread(target=write, args=(row,)) for row in range(5)]
    threads[0].start()
    time.sleep(0.05)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join()
    assert sorted(failed) == [1, 2, 3, 4]
    assert calls == [1, 4]


@pytest.mark.parametrize("through", ["outbox", "group commit"])
@pytest.mark.parametrize("driver_name", DRIVER_NAMES)
def test_each_message_dispatches_its_job_exactly_once_under_four_concurrent_publishers(
    driver_name: str, through: str, tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    driver: QueueDriver = make_driver(driver_name, tmp_path)
    reg = registry()
    prefix = unique_prefix("groupcommit")
    router = Router()

    def enqueue(message: Message) -> None:
        dispatch(jobs.RecordJob(path=message.params["device"], value=int(message.payload)),
                 connection=driver, registry=reg)  # fmt: skip

    router.on(f"{prefix}/{{device}}", enqueue, qos=1)
    publishers, per_publisher = 4, 250
    settings = make_settings(host, port, mqtt_handler_concurrency=16, mqtt_max_inflight=100)
    try:
        outbox = DispatchOutbox() if through == "outbox" else None
        with running_runtime(settings, router, router.subscriptions("g"), outbox=outbox) as runtime:

            def publish(index: int) -> None:
                with publisher(host, port) as pub:
                    infos = [
                        pub.client.publish(f"{prefix}/d{(index * 7 + n) % 20}", str(n), qos=1)
                        for n in range(index * per_publisher, (index + 1) * per_publisher)
                    ]
                    for info in infos:
                        info.wait_for_publish(30)

            threads = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            total = publishers * per_publisher
            assert wait_until(lambda: runtime.acked == total, timeout=60)
            assert runtime.dead_lettered == 0
        values: Counter[int] = Counter()
        while (job := driver.pop(["default"])) is not None:
            values[Envelope.from_json(job.payload).data["value"]] += 1
            driver.ack(job)
        assert values == Counter(range(total))
        if outbox is None:
            group = driver._group_commit
            assert group is not None and group.rows == total
    finally:
        driver.close()
