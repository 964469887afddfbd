"""app/jobs: each job run for real on a fresh SQLite file, through the sync queue."""

import logging

import pytest
from sqlalchemy import select

from app.jobs.notify_webhook import NotifyWebhook, WebhookUnavailable
from app.jobs.store_reading import StoreReading
from app.models import DeviceReading, app_engine
from app.payloads import Reading
from queues import dispatch
from queues.job import JobDataError
from testing import TestClient


def stored_readings():
    with app_engine().connect() as connection:
        query = select(DeviceReading.device_id, DeviceReading.reading_id, DeviceReading.repeats)
        return [tuple(row) for row in connection.execute(query)]


def test_a_reading_sent_twice_is_stored_once(app_database):
    client = TestClient("routes")
    for _ in range(2):  # a QoS 1 message delivered twice
        assert client.publish("devices/d1/telemetry", {"value": 2.5, "id": "r-1"}, qos=1).handled
    assert stored_readings() == [("d1", "r-1", 1)]


def test_a_store_reading_job_needs_the_readings_id(app_database):
    with pytest.raises(JobDataError, match="needs the reading's id"):
        dispatch(StoreReading(device_id="d1", reading=Reading(value=1.0)))
    assert stored_readings() == []


def test_the_webhook_job_fails_once_then_delivers_on_its_retry(app_database, caplog):
    caplog.set_level(logging.INFO)
    dispatch(NotifyWebhook(device_id="d1", text="too hot"))
    assert "unavailable (attempt 1)" in caplog.text
    assert "alert for d1 delivered: too hot" in caplog.text


def test_a_webhook_that_never_answers_ends_in_failed_and_raises(app_database, caplog):
    with pytest.raises(WebhookUnavailable, match="attempt 3"):
        dispatch(NotifyWebhook(device_id="d1", text="too hot", succeed_on_attempt=9))
    assert "alert for d1 was never delivered" in caplog.text
