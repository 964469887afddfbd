"""Typed payloads: a handler's annotated body is parsed and validated before it runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from core.handler_call import shutdown_loop
from core.message import Message, PayloadError
from core.payloads import PayloadValidationError
from core.router import Router


class Reading(BaseModel):
    model_config = ConfigDict(strict=True)

    value: float
    id: str | None = None


def dispatch(router: Router, topic: str, payload: bytes) -> bool:
    return router.dispatch(Message(topic, payload, qos=1))


def test_a_typed_body_arrives_parsed_and_validated():
    router = Router()
    seen: list[Any] = []

    @router.on("devices/{device_id}/telemetry")
    def telemetry(message: Message, body: Reading) -> None:
        seen.append((message.params["device_id"], body))

    assert dispatch(router, "devices/d1/telemetry", b'{"value": 21.5, "id": "r1"}')
    assert seen == [("d1", Reading(value=21.5, id="r1"))]


def test_an_invalid_body_is_a_payload_error_naming_every_field_and_the_handler_never_runs():
    called: list[Reading] = []
    typed = Router()

    @typed.on("t/{x}")
    def handler(message: Message, body: Reading) -> None:
        called.append(body)

    with pytest.raises(PayloadValidationError) as raised:
        dispatch(typed, "t/a", b'{"value": true, "id": 7}')
    assert isinstance(raised.value, PayloadError)  # so the intake dead-letters it at once
    text = str(raised.value)
    assert "'t/a'" in text and "Reading" in text
    assert "value: Input should be a valid number" in text and "id: Input should be" in text
    assert [error["loc"] for error in raised.value.errors] == [("value",), ("id",)]
    with pytest.raises(PayloadValidationError, match="Invalid JSON"):
        dispatch(typed, "t/a", b"not json")
    assert called == []


def test_an_untyped_second_parameter_is_refused_when_the_route_is_registered():
    router = Router()
    with pytest.raises(TypeError, match=r"route 't/\{x\}'.*parameter 'body'.*has no type"):
        router.on("t/{x}", lambda message, body: None)
    with pytest.raises(TypeError, match="takes 3 arguments"):
        router.on("t/{y}", lambda message, body, extra: None)


def test_a_body_type_that_cannot_be_resolved_is_refused_naming_the_route():
    router = Router()

    def handler(message: Message, body: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(TypeError, match=r"route 't'.*cannot resolve the type of parameter 'body'"):
        router.on("t", handler)


def test_any_type_pydantic_validates_works_as_a_body():
    router = Router()
    seen: list[list[float]] = []

    @router.on("series")
    def series(message: Message, body: list[float]) -> None:
        seen.append(body)

    assert dispatch(router, "series", b"[1, 2.5]")
    assert seen == [[1.0, 2.5]]
    with pytest.raises(PayloadValidationError, match=r"1: Input should be a valid number"):
        dispatch(router, "series", b'[1, "x"]')


def test_middleware_runs_before_the_body_is_parsed():
    router = Router()
    order: list[str] = []

    def gate(message: Message, next: Any) -> Any:
        order.append("middleware")
        if message.params["x"] == "closed":
            return None  # short-circuits: the body is never parsed
        return next(message)

    @router.on("t/{x}", middleware=[gate])
    def handler(message: Message, body: Reading) -> None:
        order.append("handler")

    assert dispatch(router, "t/closed", b"not even json")
    assert dispatch(router, "t/open", b'{"value": 1}')
    assert order == ["middleware", "middleware", "handler"]


def test_async_handlers_and_callable_objects_get_typed_bodies_too():
    router = Router()
    seen: list[float] = []

    @router.on("async")
    async def handler(message: Message, body: Reading) -> None:
        seen.append(body.value)

    class Handler:
        def __call__(self, message: Message, body: Reading) -> None:
            seen.append(-body.value)

    router.on("object", Handler())
    try:
        assert dispatch(router, "async", b'{"value": 2}')
        assert dispatch(router, "object", b'{"value": 3}')
        with pytest.raises(PayloadValidationError):
            dispatch(router, "async", b"{}")
    finally:
        shutdown_loop()
    assert seen == [2.0, -3.0]


def test_a_handler_taking_only_the_message_is_called_as_before():
    router = Router()
    seen: list[bytes] = []
    router.on("plain", lambda message: seen.append(message.payload))
    router.on("optional", lambda message, extra=None: seen.append(extra))
    assert dispatch(router, "plain", b"raw bytes, not JSON")
    assert dispatch(router, "optional", b"x")
    assert seen == [b"raw bytes, not JSON", None]
