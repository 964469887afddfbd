"""`JsonValidation`: refuse messages whose payload is not the JSON object a route expects."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from core.message import Message, PayloadError
from core.middleware import Middleware, Next

logger = logging.getLogger(__name__)

#: What a schema value may be: one type or a tuple of accepted types.
TypeSpec = type | tuple[type, ...]


class JsonValidation(Middleware):
    """Checks the payload is a JSON object with the `required` keys and `schema` types.

    `schema` maps key -> type or tuple of types (`{"temp": (int, float)}`); a key
    in `schema` but not in `required` may be absent, but when present must have
    that type (`bool` is not accepted as `int`/`float`). On a bad payload it logs
    one WARNING naming the topic and the problem and raises `PayloadError`, which
    the runtime treats as permanent (dead-letter, no retry): a malformed payload
    will not become valid by retrying. The handler is then never called. On
    success `message.json()` is already decoded (and cached) for the handler.
    """

    def __init__(
        self,
        required: Iterable[str] = (),
        schema: Mapping[str, TypeSpec] | None = None,
    ) -> None:
        self.required = tuple(required)
        self.schema = dict(schema or {})
        for key, spec in self.schema.items():
            types = spec if isinstance(spec, tuple) else (spec,)
            if not types or not all(isinstance(t, type) for t in types):
                raise TypeError(
                    f"JsonValidation schema[{key!r}] must be a type or a tuple of types, "
                    f"got {spec!r}"
                )

    def handle(self, message: Message, next: Next) -> Any:
        """Validate, then run the rest of the chain; `PayloadError` if invalid."""
        problem = self.problem(message)
        if problem is not None:
            logger.warning("invalid payload on topic %r: %s", message.topic, problem)
            raise PayloadError(f"invalid payload on {message.topic!r}: {problem}")
        return next(message)

    def problem(self, message: Message) -> str | None:
        """What is wrong with the payload, or None if it passes."""
        try:
            data = message.json()
        except PayloadError as exc:
            return str(exc)
        if not isinstance(data, dict):
            return f"expected a JSON object, got {type(data).__name__}"
        missing = [key for key in self.required if key not in data]
        if missing:
            return f"missing required key(s) {', '.join(map(repr, missing))}"
        for key, spec in self.schema.items():
            if key in data and not _has_type(data[key], spec):
                return (
                    f"key {key!r} must be {_type_names(spec)}, "
                    f"got {type(data[key]).__name__} {data[key]!r}"
                )
        return None


def _has_type(value: Any, spec: TypeSpec) -> bool:
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true/false is not a number, though bool subclasses int
    return isinstance(value, types)


def _type_names(spec: TypeSpec) -> str:
    types = spec if isinstance(spec, tuple) else (spec,)
    return " or ".join(t.__name__ for t in types)
