"""Middleware chain order, short-circuit, and the built-in app middleware."""

from __future__ import annotations

import logging

import pytest

from app.middleware.json_validation import JsonValidation
from app.middleware.request_logging import RequestLogging
from core.message import Message, PayloadError
from core.middleware import Middleware, build_chain
from core.router import Router


class Recorder(Middleware):
    """Appends `name:before` / `name:after` around the rest of the chain."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def handle(self, message, next):
        self.log.append(f"{self.name}:before")
        result = next(message)
        self.log.append(f"{self.name}:after")
        return result


class Stop(Middleware):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def handle(self, message, next):
        self.log.append("stop")
        return None


def test_order_is_global_then_outer_group_then_inner_group_then_route():
    log: list[str] = []
    router = Router()
    outer = router.group(prefix="o", middleware=[Recorder("outer", log)])
    inner = outer.group(prefix="i", middleware=[Recorder("inner", log)])
    inner.on("r", lambda m: log.append("handler"), middleware=[Recorder("route", log)])
    router.use(Recorder("global", log))  # added after registration: still runs first
    assert router.dispatch(Message("o/i/r", b"")) is True
    assert log == [
        "global:before",
        "outer:before",
        "inner:before",
        "route:before",
        "handler",
        "route:after",
        "inner:after",
        "outer:after",
        "global:after",
    ]


def test_middleware_that_does_not_call_next_short_circuits_the_handler():
    log: list[str] = []
    router = Router()
    router.on("a", lambda m: log.append("handler"), middleware=[Stop(log), Recorder("after", log)])
    assert router.dispatch(Message("a", b"")) is True
    assert log == ["stop"]


def test_function_middleware_and_message_rewrites_reach_the_handler():
    seen: list[dict[str, str]] = []

    def add_tenant(message, next):
        message.params["tenant"] = "t1"
        return next(message)

    router = Router()
    router.on("devices/{id}", lambda m: seen.append(dict(m.params)), middleware=[add_tenant])
    router.dispatch(Message("devices/d1", b""))
    assert seen == [{"id": "d1", "tenant": "t1"}]


def test_included_router_global_middleware_wraps_only_its_own_routes():
    log: list[str] = []
    module_router = Router()
    module_router.use(Recorder("module", log))
    module_router.on("m", lambda m: log.append("m"))
    app = Router()
    app.use(Recorder("app", log))
    app.on("x", lambda m: log.append("x"))
    app.include(module_router)
    app.dispatch(Message("m", b""))
    assert log == ["app:before", "module:before", "m", "module:after", "app:after"]
    log.clear()
    app.dispatch(Message("x", b""))
    assert log == ["app:before", "x", "app:after"]


def test_middleware_exception_propagates_and_skips_the_handler():
    log: list[str] = []

    def deny(message, next):
        raise PermissionError("denied " + message.topic)

    router = Router()
    router.on("a", lambda m: log.append("handler"), middleware=[deny])
    with pytest.raises(PermissionError, match="denied a"):
        router.dispatch(Message("a", b""))
    assert log == []


def test_async_middleware_is_refused_at_registration():
    class AsyncMiddleware:
        async def handle(self, message, next):
            return next(message)

    with pytest.raises(TypeError, match="async handle"):
        Router().on("a", lambda m: None, middleware=[AsyncMiddleware()])
    with pytest.raises(TypeError, match="async handle"):
        Router().use(AsyncMiddleware())


def test_build_chain_returns_the_handler_result_through_middleware():
    chain = build_chain([Middleware(), Middleware()], lambda m: m.topic.upper())
    assert chain(Message("abc", b"")) == "ABC"


# -- JsonValidation ---------------------------------------------------------


def validated_router(log: list[object], **options) -> Router:
    router = Router()
    router.on("t/{id}", lambda m: log.append(m.json()), middleware=[JsonValidation(**options)])
    return router


def test_json_validation_passes_a_valid_object_to_the_handler():
    log: list[object] = []
    router = validated_router(log, required=["temp"], schema={"temp": (int, float), "unit": str})
    router.dispatch(Message("t/1", b'{"temp": 21.5}'))
    router.dispatch(Message("t/1", b'{"temp": 3, "unit": "C"}'))
    assert log == [{"temp": 21.5}, {"temp": 3, "unit": "C"}]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"unit": "C"}', "missing required key(s) 'temp'"),
        (b'{"temp": "hot"}', "key 'temp' must be int or float, got str"),
        (b'{"temp": true}', "key 'temp' must be int or float, got bool"),
        (b'{"temp": 1, "unit": 5}', "key 'unit' must be str, got int"),
    ],
)
def test_json_validation_raises_payload_error_and_logs_one_warning(payload, problem, caplog):
    log: list[object] = []
    router = validated_router(log, required=["temp"], schema={"temp": (int, float), "unit": str})
    caplog.set_level(logging.WARNING, logger="app.middleware.json_validation")
    with pytest.raises(PayloadError, match="'t/9'") as info:
        router.dispatch(Message("t/9", payload))
    assert problem in str(info.value)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'t/9'" in warnings[0].getMessage() and problem in warnings[0].getMessage()
    assert log == []


def test_json_validation_refuses_a_schema_that_is_not_types():
    with pytest.raises(TypeError, match=r"schema\['temp'\]"):
        JsonValidation(schema={"temp": "int"})  # type: ignore[dict-item]


# -- RequestLogging ---------------------------------------------------------


def test_request_logging_logs_topic_route_outcome_and_elapsed(caplog):
    router = Router()
    router.use(RequestLogging(level=logging.DEBUG))
    router.on("devices/{id}", lambda m: None)
    caplog.set_level(logging.DEBUG, logger="app.requests")
    router.dispatch(Message("devices/d1", b""))
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.DEBUG
    assert "topic=devices/d1" in text and "route=devices/{id}" in text
    assert "outcome=ok" in text and "elapsed_ms=" in text


def test_request_logging_logs_failures_and_reraises(caplog):
    router = Router()
    router.use(RequestLogging())

    def broken(message):
        raise KeyError("missing")

    router.on("a", broken)
    caplog.set_level(logging.INFO, logger="app.requests")
    with pytest.raises(KeyError):
        router.dispatch(Message("a", b""))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "outcome=failed (KeyError" in record.getMessage()
