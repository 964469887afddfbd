"""Routes: topic patterns mapped to handlers, matched through a topic trie.

`Router` holds the route table (plain `Route` objects you can print), derives the
MQTT subscriptions from it, matches a topic to its best route and dispatches a
message through the route's middleware chain to its handler. It knows nothing
about sockets: the MQTT runtime asks it for `subscriptions()` and calls
`dispatch(message)` for each message received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, overload

from core.handler_call import sync_caller
from core.message import Message, PayloadError
from core.middleware import AnyMiddleware, Next, build_chain, handle_function, middleware_name
from core.payloads import body_caller
from core.topics import LITERAL, REST, parse_pattern, share_topic

logger = logging.getLogger(__name__)

#: A route handler: `handler(message)`, or `handler(message, body: Model)` for a typed body
#: (core/payloads.py); `def` or `async def`.
RouteHandler = Callable[..., Any]
#: The decorated function, returned unchanged by `@router.on(...)`.
H = TypeVar("H", bound=RouteHandler)

#: QoS levels MQTT defines.
QOS_LEVELS = (0, 1, 2)

#: Characters a received topic name can never contain (they are subscription wildcards).
_WILDCARDS = ("+", "#")


class PayloadTooLarge(PayloadError):
    """The payload is larger than the route's `max_payload`; checked before any decoding."""


class Route:
    """One route: a pattern, the MQTT filter it subscribes to, its handler and options.

    `middleware` is the route's own chain: enclosing groups' middleware (outermost
    first) followed by the route's `middleware=[...]`; the router's global
    middleware runs before it (see `Router.middleware_for`).
    """

    __slots__ = (
        "_call",
        "_chain",
        "_param_positions",
        "_rest_capture",
        "filter",
        "handler",
        "max_payload",
        "middleware",
        "name",
        "pattern",
        "qos",
        "shared",
    )

    def __init__(
        self,
        pattern: str,
        handler: RouteHandler,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> None:
        parsed = parse_pattern(pattern)
        if not callable(handler):
            raise TypeError(f"route {pattern!r}: handler {handler!r} is not callable")
        if qos not in QOS_LEVELS or isinstance(qos, bool):
            raise ValueError(f"route {pattern!r}: qos must be 0, 1 or 2, got {qos!r}")
        if not isinstance(shared, bool):
            raise TypeError(f"route {pattern!r}: shared must be True or False, got {shared!r}")
        if max_payload is not None and (
            not isinstance(max_payload, int) or isinstance(max_payload, bool) or max_payload < 0
        ):
            raise ValueError(
                f"route {pattern!r}: max_payload must be a number of bytes >= 0, "
                f"got {max_payload!r}"
            )
        middleware = list(middleware or [])
        for item in middleware:
            handle_function(item)  # fail at registration, not at the first message
        self.pattern = pattern
        self.filter = parsed.filter
        self.qos = qos
        self.shared = shared
        self.handler = handler
        self.middleware = middleware
        self.max_payload = max_payload
        self.name = name or handler_name(handler)
        self._call = body_caller(handler, pattern)  #: the handler, parsing a typed body first
        self._param_positions = parsed.param_positions
        self._rest_capture = parsed.rest_capture
        self._chain: Next | None = None

    def params_from(self, levels: list[str]) -> dict[str, str]:
        """The `{name}` values of this route in the split topic `levels`, and the rest of
        the topic under a `{name:#}` (levels joined with `/`; empty if there are none)."""
        params = {name: levels[i] for i, name in self._param_positions}
        if self._rest_capture is not None:
            start, name = self._rest_capture
            params[name] = "/".join(levels[start:])
        return params

    def copy(self, extra_middleware: list[AnyMiddleware]) -> Route:
        """This route with `extra_middleware` run before its own (used by `include`)."""
        return Route(
            self.pattern,
            self.handler,
            self.qos,
            self.shared,
            [*extra_middleware, *self.middleware],
            self.max_payload,
            self.name,
        )

    def __repr__(self) -> str:
        extras = "".join(
            [
                ", shared" if self.shared else "",
                f", max_payload={self.max_payload}" if self.max_payload is not None else "",
                f", middleware=[{', '.join(middleware_name(m) for m in self.middleware)}]"
                if self.middleware
                else "",
            ]
        )
        return f"Route({self.pattern!r} -> {self.name}, qos={self.qos}{extras})"


def handler_name(handler: Callable[..., Any]) -> str:
    """`module.qualname` of a handler function (or its class for callable objects)."""
    target: Any = handler
    if not hasattr(target, "__qualname__"):
        target = type(handler)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


class Match:
    """A topic matched to a route, with the values of the route's `{name}` levels."""

    __slots__ = ("params", "route")

    def __init__(self, route: Route, params: dict[str, str]) -> None:
        self.route = route
        self.params = params

    def __repr__(self) -> str:
        return f"Match({self.route.pattern!r}, params={self.params!r})"


@dataclass(frozen=True)
class Subscription:
    """One MQTT subscription the runtime must make.

    `topic` is the string to SUBSCRIBE to: `$share/{group}/{filter}` when
    `shared`, else `filter` itself.
    """

    filter: str
    qos: int
    shared: bool
    topic: str


class _Node:
    """A trie level: literal children, one single-level wildcard child, a `#` route."""

    __slots__ = ("children", "rest", "route", "wildcard")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.wildcard: _Node | None = None  #: `+` and `{name}` levels
        self.route: Route | None = None  #: route whose filter ends at this node
        self.rest: Route | None = None  #: route whose filter is this node's path + `/#`


def _best(node: _Node, levels: list[str], i: int, n: int, dollar: bool) -> Route | None:
    """Depth-first search preferring literal, then wildcard, then `#`: the first route
    found is the most specific one (see `Router`)."""
    if i == n:
        return node.route or node.rest
    child = node.children.get(levels[i])
    if child is not None:
        found = _best(child, levels, i + 1, n, dollar)
        if found is not None:
            return found
    if dollar and i == 0:
        return None  # MQTT: a leading wildcard never matches a `$...` topic
    if node.wildcard is not None:
        found = _best(node.wildcard, levels, i + 1, n, dollar)
        if found is not None:
            return found
    return node.rest


def _all(node: _Node, levels: list[str], i: int, n: int, dollar: bool) -> Iterator[Route]:
    """Every matching route, in the same precedence order `_best` uses."""
    if i == n:
        if node.route is not None:
            yield node.route
        if node.rest is not None:
            yield node.rest
        return
    child = node.children.get(levels[i])
    if child is not None:
        yield from _all(child, levels, i + 1, n, dollar)
    if dollar and i == 0:
        return
    if node.wildcard is not None:
        yield from _all(node.wildcard, levels, i + 1, n, dollar)
    if node.rest is not None:
        yield node.rest


class Router:
    """The route table and dispatcher.

    Patterns are MQTT topic filters whose levels may also be `{name}` (one level,
    delivered as `message.params[name]`) and whose last level may be `{name:#}`
    (subscribed and matched as `#`; the rest of the topic is delivered as
    `message.params[name]`); `+` and `#` mean what MQTT says (`#` last only and
    matching the parent level too; a leading wildcard never matches a topic
    starting with `$`). Patterns are validated when registered.
    Two routes may not share one MQTT filter (e.g. `a/{x}` and `a/+`): only one
    of them could ever receive a message, so the second registration fails.

    Precedence, when several routes match a topic: compare the patterns level by
    level from the left; at the first level where they differ, a literal beats
    `{name}`/`+`, which beats `#`/`{name:#}`. When one pattern ends exactly where the topic
    ends and the other continues with a `#` matching zero levels (`a/+` vs
    `a/+/#` for `a/b`), the one that ends wins: it matches strictly fewer topics.
    Two distinct filters always differ somewhere under these rules, so
    registration order never decides. Matching walks a topic trie, so its cost
    depends on the topic's depth, not on the number of routes.

    Middleware order: the router's global middleware (`use`) -> enclosing groups
    (outer to inner) -> the route's own -> handler. `include(other)` adds
    `other`'s routes with `other`'s global middleware placed before their own.
    Register routes before dispatching starts; the table is not locked.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._by_filter: dict[str, Route] = {}
        self._exact: dict[str, Route] = {}  #: all-literal filters: always the best match
        self._root = _Node()
        self._global: list[AnyMiddleware] = []
        self.unmatched = 0  #: messages `dispatch` found no route for
        #: Byte limit of routes without their own `max_payload` (None: no limit).
        #: The runtime sets it from MQTT_MAX_PAYLOAD.
        self.default_max_payload: int | None = None

    # -- registration -------------------------------------------------------

    @overload
    def on(
        self,
        pattern: str,
        handler: None = None,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Callable[[H], H]: ...

    @overload
    def on(
        self,
        pattern: str,
        handler: RouteHandler,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Route: ...

    def on(
        self,
        pattern: str,
        handler: RouteHandler | None = None,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Route | Callable[[H], H]:
        """Route `pattern` to `handler`; without `handler`, a decorator doing the same.

        The direct form returns the new `Route`; the decorator returns the function
        unchanged. `ValueError`/`TypeError` naming the pattern if anything is invalid.
        """
        if handler is None:

            def decorator(function: H) -> H:
                self.on(
                    pattern,
                    function,
                    qos=qos,
                    shared=shared,
                    middleware=middleware,
                    max_payload=max_payload,
                    name=name,
                )
                return function

            return decorator
        route = Route(pattern, handler, qos, shared, middleware, max_payload, name)
        self._add(route)
        return route

    def group(
        self,
        prefix: str = "",
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
    ) -> RouteGroup:
        """A group of routes sharing a pattern prefix, middleware and max_payload."""
        return RouteGroup(self, prefix, list(middleware or []), max_payload)

    def use(self, *middleware: AnyMiddleware) -> None:
        """Add global middleware, run before every route's own (in the order added)."""
        for item in middleware:
            handle_function(item)
        self._global.extend(middleware)
        for route in self._routes:
            route._chain = None

    def include(self, other: Router) -> None:
        """Add every route of `other`, with `other`'s global middleware before their own.

        A snapshot: routes or middleware added to `other` later are not seen here.
        Fails (ValueError naming both routes) if a filter is already routed here.
        """
        if other is self:
            raise ValueError("a router cannot include itself")
        for route in other._routes:
            self._add(route.copy(other._global))

    def _add(self, route: Route) -> None:
        existing = self._by_filter.get(route.filter)
        if existing is not None:
            raise ValueError(
                f"route {route.pattern!r} ({route.name}) has the same MQTT filter "
                f"{route.filter!r} as route {existing.pattern!r} ({existing.name}); only one "
                f"of them could ever receive a message — merge them or change one pattern"
            )
        node = self._root
        levels = parse_pattern(route.pattern).levels
        for level in levels:
            if level.kind == REST:
                node.rest = route
                break
            if level.kind == LITERAL:
                node = node.children.setdefault(level.text, _Node())
            else:
                if node.wildcard is None:
                    node.wildcard = _Node()
                node = node.wildcard
        else:
            node.route = route
        if all(level.kind == LITERAL for level in levels):
            self._exact[route.filter] = route
        self._by_filter[route.filter] = route
        self._routes.append(route)

    # -- inspection ---------------------------------------------------------

    def routes(self) -> list[Route]:
        """Every route, in registration order."""
        return list(self._routes)

    def middleware_for(self, route: Route) -> list[AnyMiddleware]:
        """The full chain run for `route`, outermost first: global, groups, route."""
        return [*self._global, *route.middleware]

    def subscriptions(self, group_name: str) -> list[Subscription]:
        """The subscriptions covering every route, in registration order.

        One per distinct (filter, shared) pair, with the highest QoS asked for it;
        shared ones subscribe to `$share/{group_name}/{filter}`.
        """
        merged: dict[tuple[str, bool], int] = {}
        for route in self._routes:
            key = (route.filter, route.shared)
            merged[key] = max(merged.get(key, 0), route.qos)
        return [
            Subscription(
                filter=topic_filter,
                qos=qos,
                shared=shared,
                topic=share_topic(group_name, topic_filter) if shared else topic_filter,
            )
            for (topic_filter, shared), qos in merged.items()
        ]

    # -- matching -----------------------------------------------------------

    def _find(self, topic: str) -> tuple[Route, list[str] | None] | None:
        route = self._exact.get(topic)
        if route is not None:
            return route, None
        if not topic or "+" in topic or "#" in topic:
            return None  # not a topic name a broker can deliver
        levels = topic.split("/")
        route = _best(self._root, levels, 0, len(levels), topic[0] == "$")
        return None if route is None else (route, levels)

    def match(self, topic: str) -> Match | None:
        """The best route for `topic` (see the precedence above) and its params, or None.

        A "topic" containing `+` or `#` is a filter, not a topic name: never matched.
        """
        found = self._find(topic)
        if found is None:
            return None
        route, levels = found
        return Match(route, route.params_from(levels) if levels is not None else {})

    def match_all(self, topic: str) -> list[Match]:
        """Every route matching `topic`, best first (the first is what `match` returns)."""
        if not topic or any(w in topic for w in _WILDCARDS):
            return []
        levels = topic.split("/")
        return [
            Match(route, route.params_from(levels))
            for route in _all(self._root, levels, 0, len(levels), topic[0] == "$")
        ]

    # -- dispatch -----------------------------------------------------------

    def dispatch(self, message: Message) -> bool:
        """Run the best route for `message`; False (and `unmatched` += 1) if none matches.

        Sets `message.route` and `message.params`, refuses a payload over the
        route's `max_payload` (else `default_max_payload`) with `PayloadTooLarge`
        before any middleware or decoding, then runs global -> group -> route
        middleware and the handler (an async handler runs on the shared loop;
        this call waits for it). A handler declaring a typed body gets it parsed
        after the middleware (core/payloads.py: `PayloadValidationError` if invalid).
        Exceptions from middleware or handler propagate to the caller.
        """
        found = self._find(message.topic)
        if found is None:
            self.unmatched += 1
            logger.debug("no route matches topic %r", message.topic)
            return False
        route, levels = found
        message.route = route
        message.params = route.params_from(levels) if levels is not None else {}
        limit = route.max_payload if route.max_payload is not None else self.default_max_payload
        if limit is not None and len(message.payload) > limit:
            source = "max_payload" if route.max_payload is not None else "MQTT_MAX_PAYLOAD"
            raise PayloadTooLarge(
                f"payload on {message.topic!r} is {len(message.payload)} bytes, over the "
                f"{source} of {limit} bytes of route {route.pattern!r}"
            )
        chain = route._chain
        if chain is None:
            chain = route._chain = build_chain(self.middleware_for(route), sync_caller(route._call))
        chain(message)
        return True


class RouteGroup:
    """Routes sharing a pattern prefix (joined with `/`), middleware and max_payload.

    Usable as an object or a context manager; `group()` nests, appending the
    prefix and running the outer group's middleware before the inner group's.
    """

    def __init__(
        self,
        router: Router,
        prefix: str,
        middleware: list[AnyMiddleware],
        max_payload: int | None,
    ) -> None:
        if prefix:
            if prefix.endswith("/"):
                raise ValueError(
                    f"group prefix {prefix!r} ends with '/'; prefix and pattern are joined "
                    f"with '/', so write {prefix.rstrip('/')!r}"
                )
            levels = parse_pattern(prefix).levels
            if levels[-1].kind == REST:
                raise ValueError(f"group prefix {prefix!r}: '#' cannot be part of a prefix")
        for item in middleware:
            handle_function(item)
        self.router = router
        self.prefix = prefix
        self.middleware = middleware
        self.max_payload = max_payload

    def full_pattern(self, pattern: str) -> str:
        """`pattern` under this group's prefix."""
        if not self.prefix:
            return pattern
        if pattern.startswith("/"):
            raise ValueError(
                f"pattern {pattern!r} in group {self.prefix!r} starts with '/'; it is joined "
                f"to the prefix with '/' already"
            )
        return f"{self.prefix}/{pattern}" if pattern else self.prefix

    @overload
    def on(
        self,
        pattern: str,
        handler: None = None,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Callable[[H], H]: ...

    @overload
    def on(
        self,
        pattern: str,
        handler: RouteHandler,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Route: ...

    def on(
        self,
        pattern: str,
        handler: RouteHandler | None = None,
        *,
        qos: int = 0,
        shared: bool = False,
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
        name: str | None = None,
    ) -> Route | Callable[[H], H]:
        """`Router.on` with this group's prefix, middleware and max_payload applied."""
        return self.router.on(
            self.full_pattern(pattern),
            handler,
            qos=qos,
            shared=shared,
            middleware=[*self.middleware, *(middleware or [])],
            max_payload=max_payload if max_payload is not None else self.max_payload,
            name=name,
        )

    def group(
        self,
        prefix: str = "",
        middleware: list[AnyMiddleware] | None = None,
        max_payload: int | None = None,
    ) -> RouteGroup:
        """A nested group: prefixes join with '/', this group's middleware runs first."""
        return RouteGroup(
            self.router,
            self.full_pattern(prefix) if prefix else self.prefix,
            [*self.middleware, *(middleware or [])],
            max_payload if max_payload is not None else self.max_payload,
        )

    def __enter__(self) -> RouteGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None
