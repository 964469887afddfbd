"""Middleware: code that wraps a route's handler, in a fixed and documented order.

A middleware is an object with `handle(message, next)`. `next(message)` runs the
rest of the chain (later middleware, then the handler) and returns its result;
a middleware short-circuits by returning without calling `next`. A plain
function `fn(message, next)` is accepted too.

Order, outermost first: the router's global middleware (`router.use`, in the
order added), then each enclosing group's middleware from the outermost group
to the innermost, then the route's own `middleware=[...]`, then the handler.
`handle` must be a plain (sync) function; handlers themselves may be async.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from core.message import Message

#: The rest of the chain as seen by a middleware: call it with the message.
Next = Callable[[Message], Any]

#: A middleware function: `fn(message, next) -> result`.
MiddlewareFunction = Callable[[Message, Next], Any]


@runtime_checkable
class MiddlewareLike(Protocol):
    """Anything with a `handle(message, next)` method."""

    def handle(self, message: Message, next: Next) -> Any: ...


class Middleware:
    """Base class for middleware: override `handle`; the default passes straight through."""

    def handle(self, message: Message, next: Next) -> Any:
        """Run before/after the rest of the chain; return what `next(message)` returned."""
        return next(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: What `middleware=[...]` and `router.use` accept.
AnyMiddleware = MiddlewareLike | MiddlewareFunction


def handle_function(middleware: AnyMiddleware) -> MiddlewareFunction:
    """The `(message, next)` callable of a middleware; `TypeError` naming it if unusable."""
    handle = getattr(middleware, "handle", None)
    if handle is None:
        if not callable(middleware):
            raise TypeError(
                f"middleware {middleware!r} has no handle(message, next) method and is not callable"
            )
        handle = middleware
    if inspect.iscoroutinefunction(handle):
        raise TypeError(
            f"middleware {middleware_name(middleware)} has an async handle(); middleware runs "
            f"synchronously around the handler (only handlers may be async)"
        )
    function: MiddlewareFunction = handle
    return function


def middleware_name(middleware: object) -> str:
    """A short printable name: the class name, or a function's qualified name."""
    if inspect.isfunction(middleware) or inspect.ismethod(middleware):
        return str(middleware.__qualname__)
    return type(middleware).__name__


def build_chain(middleware: list[AnyMiddleware], handler: Next) -> Next:
    """Compose `middleware` (outermost first) around `handler` into one callable.

    Built once per route, so a dispatch costs one Python call per middleware.
    """
    call = handler
    for item in reversed(middleware):
        call = _link(handle_function(item), call)
    return call


def _link(handle: MiddlewareFunction, rest: Next) -> Next:
    def step(message: Message) -> Any:
        return handle(message, rest)

    return step
