"""Router speed: matching cost vs route count, and dispatch overhead vs a direct call.

Needs no server. Figures are ratios to baselines measured in the same run:
- matching with 1,000 routes vs 10 routes (the trie should make them about equal);
- dispatching a sync handler through 2 middleware vs calling the handler directly;
- dispatching an async handler (run on the shared loop) vs a sync one.
"""

from __future__ import annotations

import itertools
from typing import Any

from benchmarks.common import BenchResult, ops_per_sec
from core.handler_call import shutdown_loop
from core.message import Message
from core.middleware import Middleware, Next
from core.router import Router

#: Operations per timed run of the cheap benchmarks (match, dispatch).
FAST_COUNT = 100_000
#: Operations per timed run of the async-handler benchmark (a thread hand-off each).
ASYNC_COUNT = 5_000
#: Distinct topics cycled through, all matching routes present in both tables.
TOPIC_COUNT = 10


def handler(message: Message) -> None:
    return None


async def async_handler(message: Message) -> None:
    return None


class PassThrough(Middleware):
    """Middleware doing what most do: a little work, then the rest of the chain."""

    def handle(self, message: Message, next: Next) -> Any:
        message.topic  # noqa: B018 - touch the message like a real middleware would
        return next(message)


def route_table(route_count: int) -> Router:
    """`route_count` routes of realistic shapes: literals, params, and a catch-all."""
    router = Router()
    shapes = (
        "site{i}/devices/{{device_id}}/telemetry",
        "site{i}/devices/{{device_id}}/status",
        "site{i}/alerts/#",
        "site{i}/config",
    )
    for i in range(route_count):
        router.on(shapes[i % len(shapes)].format(i=i // len(shapes)), handler)
    return router


def topics() -> list[str]:
    """Topics hitting param routes (the trie walk, not the exact-topic fast path)."""
    return [f"site{i % 2}/devices/dev-{i}/telemetry" for i in range(TOPIC_COUNT)]


def match_rate(route_count: int) -> float:
    router = route_table(route_count)
    cycle = itertools.cycle(topics())
    assert all(router.match(t) is not None for t in topics())
    return ops_per_sec(lambda: router.match(next(cycle)), FAST_COUNT)


def run() -> list[BenchResult]:
    """Measure and return the router figures (no server needed)."""
    results = [
        BenchResult("match, 1,000 routes", match_rate(1000), "match, 10 routes", match_rate(10))
    ]

    router = Router()
    router.on("devices/{device_id}/telemetry", handler, middleware=[PassThrough(), PassThrough()])
    message = Message("devices/d1/telemetry", b"{}")
    dispatched = ops_per_sec(lambda: router.dispatch(message), FAST_COUNT)
    direct = ops_per_sec(lambda: handler(message), FAST_COUNT)
    results.append(
        BenchResult("dispatch, sync + 2 middleware", dispatched, "direct handler call", direct)
    )

    async_router = Router()
    async_router.on("devices/{device_id}/telemetry", async_handler)
    try:
        async_rate = ops_per_sec(lambda: async_router.dispatch(message), ASYNC_COUNT)
    finally:
        shutdown_loop()
    results.append(
        BenchResult("dispatch, async handler", async_rate, "dispatch, sync + 2 mw", dispatched)
    )
    return results
