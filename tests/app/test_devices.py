"""routes/devices.py: what each device message makes the app do (no broker, no queue)."""

import pytest

from app.jobs.notify_webhook import NotifyWebhook
from app.jobs.reboot_device import RebootDevice
from app.jobs.store_reading import StoreReading
from app.payloads import Reading
from testing import TestClient, fake_queue


@pytest.fixture
def client():
    """Every route of routes/, with its middleware, as `python main.py --run` serves them."""
    return TestClient("routes")


def test_telemetry_queues_the_reading_for_storage(client):
    with fake_queue() as queue:
        result = client.publish("devices/d1/telemetry", {"value": 21.5, "id": "r-1"}, qos=1)
    assert result.handled
    queue.assert_dispatched(
        StoreReading, device_id="d1", reading=Reading(value=21.5, id="r-1"), queue="readings"
    )


def test_telemetry_without_an_id_gets_one_from_the_device_and_the_time(client):
    with fake_queue() as queue:
        client.publish("devices/d1/telemetry", {"value": 3}, qos=1)
    (job,) = queue.dispatched(StoreReading)
    assert job.data["reading"]["id"].startswith("d1-")


def test_a_reading_that_is_not_a_number_is_dead_lettered_and_queues_nothing(client):
    with fake_queue() as queue:
        result = client.publish("devices/d1/telemetry", {"value": "hot"}, qos=1)
    assert result.dead_lettered and result.attempts == 1
    assert result.dead_letter.topic == "deadletter/devices/d1/telemetry"
    assert "value: Input should be a valid number" in result.dead_letter.json()["error"]
    queue.assert_nothing_dispatched()


def test_a_reboot_command_is_delayed_as_asked(client):
    with fake_queue() as queue:
        client.publish("devices/d7/commands/reboot", {"delay": 30, "by": "ops"}, qos=1)
    queue.assert_dispatched(RebootDevice, device_id="d7", requested_by="ops", delay=30)


def test_an_alert_goes_to_the_webhook_job_as_text(client):
    with fake_queue() as queue:
        client.publish("devices/d7/alerts", "too hot", qos=1)
    queue.assert_dispatched_times(NotifyWebhook, 1, device_id="d7", text="too hot")
