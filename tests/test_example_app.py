"""The example application: its routes dispatch the right jobs and its jobs behave as documented."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.jobs.notify_webhook import NotifyWebhook
from config.settings import load_settings
from core.discovery import load_routes
from core.message import Message, PayloadError
from queues import dispatch
from queues.connections import configure, get_driver, reset
from queues.drivers.base import QueueDriver
from queues.worker import Worker


@pytest.fixture
def sqlite_driver(tmp_path: Path) -> Iterator[QueueDriver]:
    """The default (database) connection on a fresh SQLite file."""
    configure(load_settings({"SQLITE_PATH": str(tmp_path / "q.db")}, dotenv_path=None))
    yield get_driver()
    reset()


def test_reboot_route_dispatches_a_delayed_job(sqlite_driver: QueueDriver) -> None:
    router = load_routes("routes")
    handled = router.dispatch(Message("devices/d7/commands/reboot", b'{"delay": 30}', qos=1))
    assert handled
    sizes = sqlite_driver.sizes("default")
    assert (sizes.pending, sizes.delayed) == (0, 1)
    assert sqlite_driver.pop(["default"]) is None


def test_telemetry_route_queues_a_reading(sqlite_driver: QueueDriver) -> None:
    router = load_routes("routes")
    assert router.dispatch(Message("devices/d7/telemetry", b'{"value": 3.5, "id": "r1"}', qos=1))
    job = sqlite_driver.pop(["readings"])
    assert job is not None
    assert '"device_id":"d7"' in job.payload and '"reading":{"value":3.5,"id":"r1"' in job.payload


def test_telemetry_route_rejects_a_non_json_payload(sqlite_driver: QueueDriver) -> None:
    router = load_routes("routes")
    with pytest.raises(PayloadError, match="devices/d7/telemetry"):
        router.dispatch(Message("devices/d7/telemetry", b"not json", qos=1))
    assert sqlite_driver.sizes("readings").pending == 0


def test_webhook_job_fails_first_then_succeeds_on_retry(
    sqlite_driver: QueueDriver, caplog: pytest.LogCaptureFixture
) -> None:
    dispatch(NotifyWebhook(device_id="d7", text="too hot", succeed_on_attempt=2))
    caplog.set_level(logging.INFO)
    worker = Worker(
        sqlite_driver, ["default"], sleep=0.2, max_jobs=2, max_time=10, handle_signals=False
    )
    worker.run()
    assert "unavailable (attempt 1)" in caplog.text
    assert "alert for d7 delivered: too hot" in caplog.text
    sizes = sqlite_driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (0, 0, 0, 0)


def test_a_device_cannot_mark_another_devices_reading_as_a_repeat(
    sqlite_driver: QueueDriver,
) -> None:
    from sqlalchemy import select

    from app.models import DeviceReading
    from backends.sql_engine import get_engine
    from queues.connections import current_settings

    router = load_routes("routes")
    # Device a sends the id device b will use next, then b sends its real reading,
    # then a's message is redelivered (a genuine repeat of a's own reading).
    for device, value in (("a", 1.0), ("b", 2.0), ("a", 1.0)):
        body = f'{{"value": {value}, "id": "r-42"}}'.encode()
        assert router.dispatch(Message(f"devices/{device}/telemetry", body, qos=1))
    worker = Worker(
        sqlite_driver, ["readings"], sleep=0.1, max_jobs=3, max_time=10, handle_signals=False
    )
    worker.run()
    with get_engine(current_settings()).connect() as connection:
        rows = connection.execute(
            select(
                DeviceReading.device_id,
                DeviceReading.reading_id,
                DeviceReading.value,
                DeviceReading.repeats,
            ).order_by(DeviceReading.device_id)
        ).all()
    assert [tuple(row) for row in rows] == [("a", "r-42", 1.0, 1), ("b", "r-42", 2.0, 0)]
