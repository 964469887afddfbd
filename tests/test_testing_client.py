"""testing.TestClient: routes run in-process under the intake's rules, with no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from config.settings import Settings
from core.handler_call import shutdown_loop
from core.message import Message, MessageProperties, PayloadError
from core.router import Router
from queues import dispatch
from support.errors import BackendUnavailable
from testing import TestClient, fake_queue, sync_queue
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry


class Reading(BaseModel):
    value: float


def test_a_message_reaches_its_handler_with_params_payload_and_delivered_qos():
    router = Router()
    seen: list[tuple[dict[str, str], bytes, int, bool]] = []

    @router.on("devices/{device_id}/telemetry", qos=0)
    def telemetry(message: Message) -> None:
        seen.append((message.params, message.payload, message.qos, message.retain))

    result = TestClient(router).publish("devices/d1/telemetry", {"value": 1}, qos=1, retain=True)
    assert seen == [({"device_id": "d1"}, b'{"value":1}', 0, True)]  # route QoS 0 caps it
    assert (result.handled, result.acknowledged, result.dead_lettered) == (True, True, False)
    assert (result.route, result.params, result.qos, result.attempts) == (
        "devices/{device_id}/telemetry",
        {"device_id": "d1"},
        0,
        1,
    )


def test_what_the_handler_publishes_and_replies_is_captured_not_sent():
    router = Router()

    @router.on("rpc/{name}", qos=1)
    def rpc(message: Message) -> None:
        message.publish("audit/rpc", {"name": message.params["name"]}, qos=1)
        message.reply(b"pong")

    client = TestClient(router)
    mqtt5 = client.publish(
        "rpc/ping", b"", qos=1, properties=MessageProperties(response_topic="me/inbox")
    )
    assert [(p.topic, p.payload, p.qos) for p in mqtt5.published] == [
        ("audit/rpc", b'{"name":"ping"}', 1),
        ("me/inbox", b"pong", 0),
    ]
    assert mqtt5.published[0].json() == {"name": "ping"}
    # Without a ResponseTopic there is no reply topic: a PayloadError, dead-lettered once.
    plain = client.publish("rpc/ping", b"", qos=1)
    assert plain.dead_letter is not None and "NoResponseTopic" in plain.dead_letter.json()["error"]


def test_an_invalid_typed_body_is_dead_lettered_at_once_with_its_field_errors():
    router = Router()

    @router.on("devices/{device_id}/telemetry", qos=1)
    def telemetry(message: Message, body: Reading) -> None:
        dispatch(jobs.RecordJob(path="p", value=body.value), registry=registry())

    with fake_queue() as queue:
        result = TestClient(router).publish("devices/d1/telemetry", {"value": "hot"}, qos=1)
    queue.assert_nothing_dispatched()
    assert result.dead_lettered and result.attempts == 1 and not result.handled
    assert isinstance(result.error, PayloadError)
    assert result.dead_letter is not None
    assert result.dead_letter.topic == "deadletter/devices/d1/telemetry"
    letter = result.dead_letter.json()
    assert letter["route"] == "devices/{device_id}/telemetry"
    assert "value: Input should be a valid number" in letter["error"]
    assert letter["payload"] == '{"value":"hot"}' and letter["attempts"] == 1
    assert result.published == []  # the dead letter is reported apart


def test_a_failing_handler_is_retried_then_dead_lettered_and_failed_attempts_queue_nothing():
    router = Router()
    calls: dict[str, int] = {}

    @router.on("jobs/{kind}", qos=1)
    def flaky(message: Message) -> None:
        kind = message.params["kind"]
        calls[kind] = calls.get(kind, 0) + 1
        dispatch(jobs.RecordJob(path=kind, value=calls[kind]), registry=registry())
        if kind == "never" or calls[kind] == 1:
            raise RuntimeError("table locked")

    settings = Settings(mqtt_handler_retries=4, mqtt_dead_letter_topic="dead")
    client = TestClient(router, settings=settings)
    with fake_queue() as queue:
        second = client.publish("jobs/second", b"", qos=1)
        never = client.publish("jobs/never", b"", qos=1)
    assert (second.handled, second.attempts, second.dead_lettered) == (True, 2, False)
    assert (never.attempts, never.dead_lettered, calls["never"]) == (4, True, 4)
    assert never.dead_letter is not None and never.dead_letter.topic == "dead/jobs/never"
    assert str(never.error) == "table locked"
    assert [(job.data["path"], job.data["value"]) for job in queue.jobs] == [("second", 2)]


def test_a_backend_outage_leaves_the_message_unacknowledged_instead_of_dead_lettered():
    router = Router()

    @router.on("t", qos=1)
    def down(message: Message) -> None:
        raise BackendUnavailable("redis unreachable")

    result = TestClient(router).publish("t", b"x", qos=1)
    assert (result.acknowledged, result.dead_lettered, result.handled) == (False, False, False)
    assert isinstance(result.error, BackendUnavailable)


def test_an_unmatched_topic_is_acknowledged_and_handled_by_no_route():
    result = TestClient(Router()).publish("nobody/listens", b"x", qos=1)
    assert (result.handled, result.acknowledged, result.route) == (False, True, None)


def test_a_payload_over_the_limit_is_dead_lettered_before_any_decoding():
    router = Router()
    router.on("small", lambda message: None, max_payload=4)
    result = TestClient(router).publish("small", b"12345")
    assert result.dead_lettered and "over the max_payload of 4 bytes" in str(result.error)


def test_a_topic_no_broker_accepts_is_refused():
    with pytest.raises(ValueError, match="wildcard"):
        TestClient(Router()).publish("devices/+/telemetry", b"")


def test_jobs_dispatched_under_sync_queue_run_before_publish_returns(tmp_path: Path):
    router = Router()
    out = tmp_path / "ran"

    @router.on("run/{value}")
    def run(message: Message) -> None:
        dispatch(jobs.RecordJob(path=str(out), value=message.params["value"]), registry=registry())

    with sync_queue():
        TestClient(router).publish("run/7")
    assert out.read_text() == "7\n"


def test_async_handlers_run_too():
    router = Router()
    seen: list[Any] = []

    @router.on("async/{x}")
    async def handler(message: Message, body: Reading) -> None:
        await asyncio.sleep(0)
        seen.append((message.params["x"], body.value))

    try:
        assert TestClient(router).publish("async/a", {"value": 2}).handled
    finally:
        shutdown_loop()
    assert seen == [("a", 2.0)]


def test_without_a_router_it_loads_the_routes_package_with_every_modules_routes():
    from tests.fixture_routes import devices

    devices.received.clear()
    client = TestClient("tests.fixture_routes")
    assert client.publish("devices/d9/telemetry", b"{}").handled
    assert devices.received == [("telemetry", {"device_id": "d9"})]
    refused = client.publish("devices/d9/commands", {"no": "cmd"}, qos=2)
    assert refused.dead_lettered and refused.qos == 1  # QoS 2 routes are served at QoS 1
