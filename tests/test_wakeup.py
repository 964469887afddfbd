"""Wake-ups of idle database workers (queues/drivers/wakeup.py): hints between processes
of one machine, never a condition for correctness. Latency is measured in
benchmarks/bench_worker.py, not asserted here."""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.drivers.base import ReservedJob
from queues.drivers.wakeup import LocalWaker
from queues.envelope import Envelope
from tests.driver_factories import make_driver


@pytest.fixture
def root() -> Iterator[Path]:
    """A short folder: socket paths must fit the 108 bytes of an AF_UNIX address."""
    folder = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _notify_later(root: str, identity: str, queue: str, delay: float) -> None:
    time.sleep(delay)
    LocalWaker(identity, Path(root)).notify(queue)


def test_a_notify_from_another_process_wakes_a_listener(root: Path) -> None:
    waker = LocalWaker("db-1", root)
    with waker.listen(["a", "b"]) as listener:
        child = multiprocessing.get_context("spawn").Process(
            target=_notify_later, args=(str(root), "db-1", "b", 0.2)
        )
        child.start()
        assert listener.wait(30) is True  # woken by the notify, long before 30 s
        child.join()
    assert not any((waker.folder).rglob("*-*")), "the listener's sockets were not removed"


def test_a_notify_of_another_queue_or_database_does_not_wake(root: Path) -> None:
    waker = LocalWaker("db-1", root)
    with waker.listen(["a"]) as listener:
        LocalWaker("db-2", root).notify("a")
        waker.notify("b")
        assert listener.wait(0.2) is False
        waker.notify("a")
        assert listener.wait(5) is True


def test_a_dead_listeners_socket_is_removed_by_the_next_notify(root: Path) -> None:
    waker = LocalWaker("db-1", root)
    listener = waker.listen(["a"])
    [path] = list(waker.folder.rglob("*-*"))
    listener._sockets[0][0].close()  # type: ignore[attr-defined]  # as if its process died
    waker.notify("a")
    assert not path.exists()


def test_an_idle_sqlite_worker_is_woken_by_a_push(tmp_path: Path) -> None:
    """A blocking pop waiting on the waker returns the pushed job (correctness only)."""
    driver = make_driver("sqlite", tmp_path)
    queue = f"w-{uuid.uuid4().hex[:8]}"
    got: list[list[ReservedJob]] = []
    try:
        waiter = threading.Thread(target=lambda: got.append(driver.pop_many([queue], 4, 30)))
        waiter.start()
        time.sleep(0.3)
        driver.push(queue, Envelope(job="RecordJob", data={}, queue=queue).to_json())
        waiter.join(30)
        assert not waiter.is_alive()
        [[job]] = got
        assert job.queue == queue
    finally:
        driver.close()
