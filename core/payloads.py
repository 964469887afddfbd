"""Typed payloads: a handler that declares the type of its body gets it parsed and validated.

`def telemetry(message, body: Reading)` - a second parameter annotated with a
pydantic model, or any type pydantic validates (`list[float]`,
`dict[str, int]`, a `TypedDict`) - receives the JSON payload parsed into that
type, after the route's middleware and before the handler runs. A payload that
is not JSON, or does not fit the type, raises `PayloadValidationError` (a
`PayloadError`, so the intake dead-letters it at once) naming the topic, the
type and every field error. Validation follows pydantic's rules (lax by
default: `"21"` becomes 21 for an `int` field; set the model's
`model_config = ConfigDict(strict=True)` to refuse that).

The annotation is resolved and its validator built once, when the route is
registered, so a mistake there (an undefined name, a type pydantic cannot
validate, a second parameter without an annotation) fails at start-up, naming
the route. pydantic is imported only by apps that declare a typed body.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from core.handler_call import Handler, is_async
from core.message import Message, PayloadError
from support.validation import describe_errors

#: Parameter kinds that take a positional argument.
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class PayloadValidationError(PayloadError):
    """The payload does not fit the handler's body type; `errors` holds pydantic's field errors.

    Each error is a dict with `loc` (the path to the field, a tuple), `msg`
    and `type`, as pydantic's `ValidationError.errors()` gives them.
    """

    def __init__(self, text: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(text)
        self.errors = errors


def body_caller(handler: Callable[..., Any], pattern: str) -> Handler:
    """`handler` itself when it takes only the message; else a callable of the message
    that parses the body and calls `handler(message, body)` (async if `handler` is).

    `TypeError` naming the route when the handler's signature cannot be served.
    """
    body = _body_parameter(handler, pattern)
    if body is None:
        return handler
    parse = _parser(handler, body, pattern)
    if is_async(handler):

        async def call_async(message: Message) -> Any:
            return await handler(message, parse(message))

        return call_async

    def call(message: Message) -> Any:
        return handler(message, parse(message))

    return call


def _body_parameter(handler: Callable[..., Any], pattern: str) -> inspect.Parameter | None:
    """The body parameter (the second positional one), or None if the handler takes none."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return None  # a builtin or C callable: called with the message only, as always
    positional = [p for p in signature.parameters.values() if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > 2:
        raise TypeError(
            f"route {pattern!r}: handler {_name(handler)} takes {len(required)} arguments; "
            f"a handler takes the message and, optionally, a typed body: (message, body: Model)"
        )
    if len(positional) < 2:
        return None
    second = positional[1]
    empty = inspect.Parameter.empty
    if second.annotation is empty and second.default is not empty:
        return None  # an optional untyped extra: not a body
    return second


def _annotation(handler: Callable[..., Any], body: inspect.Parameter, pattern: str) -> Any:
    """The resolved annotation of the body parameter; `TypeError` naming the route if none."""
    if body.annotation is inspect.Parameter.empty:
        raise TypeError(
            f"route {pattern!r}: parameter {body.name!r} of {_name(handler)} has no type; "
            f"annotate it with a pydantic model (def handler(message, {body.name}: Model)) "
            f"or remove it"
        )
    function = inspect.isfunction(handler) or inspect.ismethod(handler)
    target: Any = handler if function else type(handler).__call__
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise TypeError(
            f"route {pattern!r}: cannot resolve the type of parameter {body.name!r} of "
            f"{_name(handler)}: {exc}; define or import it before the route"
        ) from None
    return hints.get(body.name, body.annotation)


def _parser(
    handler: Callable[..., Any], body: inspect.Parameter, pattern: str
) -> Callable[[Message], Any]:
    """A function parsing a message's payload into the body type (built once)."""
    from pydantic import TypeAdapter, ValidationError

    annotation = _annotation(handler, body, pattern)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except Exception as exc:
        raise TypeError(
            f"route {pattern!r}: pydantic cannot validate the type {annotation!r} of parameter "
            f"{body.name!r} of {_name(handler)}: {exc}"
        ) from None
    type_name = getattr(annotation, "__name__", None) or repr(annotation)

    def parse(message: Message) -> Any:
        try:
            return adapter.validate_json(message.payload)
        except ValidationError as exc:
            errors = [dict(error) for error in exc.errors(include_url=False, include_input=False)]
            problems = describe_errors(errors)
            raise PayloadValidationError(
                f"payload on {message.topic!r} is not a valid {type_name}: {problems}", errors
            ) from None

    return parse


def _name(handler: Callable[..., Any]) -> str:
    return str(getattr(handler, "__qualname__", type(handler).__qualname__))
