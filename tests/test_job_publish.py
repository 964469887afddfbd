"""Jobs publish MQTT: one lazily opened connection per worker, acknowledged or failed.

Against real brokers: the shared Mosquitto, a private one that is paused
(SIGSTOP: connected but silent) or absent, and a worker process running the
example app's `RebootDevice`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from app.jobs.reboot_device import COMMAND_TOPIC, RebootDevice
from backends import mqtt_publisher
from backends.mqtt_message import MessageProperties, PropertiesNotSupported
from backends.mqtt_publisher import MqttPublisher, MqttUnavailableError
from config.settings import load_settings
from core.broker import free_port
from core.discovery import load_routes
from core.topics import build_topic
from queues import connections, dispatch
from queues.registry import JobRegistry
from queues.worker import Worker
from tests.conftest import MQTT_HOST, MQTT_PORT
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main
from tests.mqtt_helpers import (
    WAIT_TIMEOUT,
    collector,
    make_settings,
    private_mosquitto,
    unique_prefix,
    wait_until,
)


@pytest.fixture
def configured() -> Iterator[Any]:
    """`configure(settings)` for the jobs of this test; every connection reset after it."""

    def configure(**overrides: Any) -> None:
        values = {"MQTT_HOST": MQTT_HOST, "MQTT_PORT": str(MQTT_PORT), **overrides}
        connections.configure(load_settings(values, dotenv_path=None))

    yield configure
    connections.reset()


def test_jobs_of_a_worker_share_one_connection_opened_by_the_first_publish(
    mqtt_broker: tuple[str, int], configured: Any, tmp_path: Path
) -> None:
    configured()
    prefix = unique_prefix("jobpub")
    driver = make_driver("sqlite", tmp_path)
    work = registry()
    dispatch(jobs.RecordJob(path=str(tmp_path / "out"), value=1), connection=driver, registry=work)
    for n in range(3):
        dispatch(jobs.PublishJob(topic=f"{prefix}/n", n=n), connection=driver, registry=work)
    worker = Worker(
        driver, ["default"], sleep=0.05, max_jobs=1, handle_signals=False, registry=work
    )
    with collector(*mqtt_broker, f"{prefix}/#") as received:
        assert worker.run() == 0  # the job that does not publish
        publisher = connections.get_publisher()
        assert publisher.connections == 0, "connected before any job published"
        worker.max_jobs = 4
        assert worker.run() == 0
        got = received.wait_for(3)
    assert [json.loads(payload) for _, payload in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert connections.get_publisher() is publisher
    assert publisher.connections == 1
    driver.close()


def test_a_job_publishing_while_the_broker_is_down_fails_its_attempt_naming_the_broker(
    configured: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(mqtt_publisher, "CONNECT_TIMEOUT", 0.5)
    port = free_port()  # nothing listens there
    configured(MQTT_PORT=str(port))
    driver = make_driver("sqlite", tmp_path)
    app_jobs = JobRegistry("app.jobs").load()
    job_id = dispatch(
        RebootDevice(device_id="d1", requested_by="test"),
        delay=0,
        connection=driver,
        registry=app_jobs,
    )
    worker = Worker(
        driver, ["default"], sleep=0.05, max_jobs=1, handle_signals=False, registry=app_jobs
    )
    with caplog.at_level(logging.WARNING, logger="queues.worker"):
        assert worker.run() == 0
    failures = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
    assert len(failures) == 1, failures
    assert "attempt 1/5 failed" in failures[0]
    assert (
        f"MqttUnavailableError: MQTT broker at 127.0.0.1:{port} is unreachable "
        f"(not connected within 0.5 s)" in failures[0]
    )
    assert "\n" not in failures[0]
    assert driver.sizes("default").delayed == 1, "the job is not waiting for its retry"
    driver.close()


def test_a_publish_fails_when_the_broker_does_not_acknowledge_it_in_time(
    tmp_path: Path,
) -> None:
    prefix = unique_prefix("silent")
    with private_mosquitto(tmp_path) as broker:
        assert broker.broker is not None
        pid = broker.broker.pid
        publisher = MqttPublisher(make_settings(broker.host, broker.port), publish_timeout=0.5)
        try:
            with collector(broker.host, broker.port, f"{prefix}/#") as received:
                publisher.publish(f"{prefix}/before", b"1")
                os.kill(pid, signal.SIGSTOP)  # the connection stays open; nothing answers
                try:
                    with pytest.raises(MqttUnavailableError) as refused:
                        publisher.publish(f"{prefix}/during", b"2")
                finally:
                    os.kill(pid, signal.SIGCONT)
                assert str(refused.value) == (
                    f"MQTT broker at {broker.host}:{broker.port} did not acknowledge the "
                    f"publish to '{prefix}/during' within 0.5 s"
                )
                # At least once: the unacknowledged message still reaches the broker.
                assert [t for t, _ in received.wait_for(2)] == [
                    f"{prefix}/before",
                    f"{prefix}/during",
                ]
        finally:
            publisher.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_job_publishes_carry_mqtt5_properties_and_are_refused_over_311(
    mqtt_broker: tuple[str, int], protocol: str
) -> None:
    host, port = mqtt_broker
    topic = f"{unique_prefix('jobprops')}/x"
    properties = MessageProperties(
        content_type="application/json",
        user_properties=[("tag", "a"), ("tag", "b")],
        message_expiry=600,
        correlation_data=b"\x00\x01",
    )
    publisher = MqttPublisher(make_settings(host, port, mqtt_protocol=protocol))
    try:
        if protocol == "3.1.1":
            with pytest.raises(PropertiesNotSupported, match="set MQTT_PROTOCOL=5"):
                publisher.publish(topic, {"v": 1}, properties=properties)
            assert publisher.connections == 0, "connected although nothing could be sent"
            return
        seen: list[Any] = []
        subscriber = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        subscriber.on_message = lambda _c, _u, msg: seen.append(msg.properties)
        subscriber.connect(host, port)
        subscriber.loop_start()
        try:
            subscriber.subscribe(topic, 1)
            assert wait_until(lambda: subscriber.is_connected())
            publisher.publish(topic, {"v": 1}, properties=properties)
            assert wait_until(lambda: len(seen) == 1)
        finally:
            subscriber.disconnect()
            subscriber.loop_stop()
        received = MessageProperties.from_paho(seen[0])
        assert received is not None
        assert received.content_type == "application/json"
        assert received.user_properties == (("tag", "a"), ("tag", "b"))
        assert received.correlation_data == b"\x00\x01"
        assert received.message_expiry is not None and 0 < received.message_expiry <= 600
    finally:
        publisher.close()


@pytest.mark.slow
def test_reboot_command_of_the_example_app_reaches_the_device_through_a_worker_process(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    device = f"t{uuid.uuid4().hex[:10]}"
    topic = build_topic(COMMAND_TOPIC, device_id=device)
    assert load_routes("routes").match(topic) is None, "the command would come back as a request"
    env = main_env(
        "database",
        tmp_path,
        JOBS_PACKAGE="app.jobs",
        MQTT_HOST=MQTT_HOST,
        MQTT_PORT=str(MQTT_PORT),
        MQTT_PROTOCOL="3.1.1",
    )
    settings = load_settings(env, dotenv_path=None)
    connections.configure(settings)
    try:
        job_id = dispatch(RebootDevice(device_id=device, requested_by="e2e"), delay=0)
    finally:
        connections.reset()
    with collector(*mqtt_broker, f"devices/{device}/#") as device_inbox:
        result = run_main(
            ["--queue-work", "--queue", "default", "--max-jobs", "1", "--sleep", "0.1"], env
        )
        assert result.returncode == 0, result.stderr
        got = device_inbox.wait_for(1, WAIT_TIMEOUT)
    assert got == [
        (
            topic,
            json.dumps(
                {"command": "reboot", "requested_by": "e2e", "job_id": job_id},
                separators=(",", ":"),
            ).encode(),
        )
    ]
