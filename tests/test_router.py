"""core.router: matching, precedence, groups, subscriptions and dispatch."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from core.handler_call import shutdown_loop
from core.message import Message, PayloadError
from core.router import PayloadTooLarge, Route, Router, Subscription


def noop(message: Message) -> None:
    return None


def router_with(*patterns: str) -> Router:
    router = Router()
    for pattern in patterns:
        router.on(pattern, noop)
    return router


def best(router: Router, topic: str) -> str | None:
    found = router.match(topic)
    return None if found is None else found.route.pattern


# -- matching ---------------------------------------------------------------


def test_param_matches_one_level_and_is_returned():
    router = router_with("devices/{device_id}/telemetry")
    found = router.match("devices/d-1/telemetry")
    assert found is not None
    assert found.params == {"device_id": "d-1"}
    assert router.match("devices/d-1/x/telemetry") is None
    assert router.match("devices/telemetry") is None


def test_param_and_plus_match_an_empty_level():
    router = router_with("a/{x}/c")
    found = router.match("a//c")
    assert found is not None and found.params == {"x": ""}


def test_hash_matches_the_parent_level_and_everything_below():
    router = router_with("a/#")
    assert best(router, "a") == "a/#"
    assert best(router, "a/b/c/d") == "a/#"
    assert best(router, "ab") is None


def test_leading_wildcards_do_not_match_dollar_topics():
    router = router_with("#", "+/info")
    assert best(router, "$SYS/info") is None
    assert best(router, "normal/info") == "+/info"
    router.on("$SYS/#", noop)
    assert best(router, "$SYS/info") == "$SYS/#"


def test_topics_containing_wildcards_are_never_matched():
    router = router_with("#", "a/+", "a/b")
    for topic in ["a/+", "a/#", "+", "#", "a/b+"]:
        assert router.match(topic) is None
        assert router.match_all(topic) == []
    assert router.match("") is None


def test_a_rest_capture_holds_the_remainder_of_the_topic_and_subscribes_as_hash():
    router = router_with("fleet/{site}/cmd/{path:#}", "fleet/{site}/cmd/reboot")
    assert [s.filter for s in router.subscriptions("g")] == ["fleet/+/cmd/#", "fleet/+/cmd/reboot"]
    found = router.match("fleet/s1/cmd/valve/3/open")
    assert found is not None and found.params == {"site": "s1", "path": "valve/3/open"}
    at_parent = router.match("fleet/s1/cmd")  # '#' matches the parent level too
    assert at_parent is not None and at_parent.params == {"site": "s1", "path": ""}
    assert best(router, "fleet/s1/cmd/reboot") == "fleet/{site}/cmd/reboot"  # literal still wins


def test_a_rest_capture_must_be_last_and_named_once():
    for bad, problem in (
        ("a/{p:#}/b", "must be the last level"),
        ("a/{9:#}", "Python identifier followed by ':#'"),
        ("a/{p}/{p:#}", "appears twice"),
    ):
        with pytest.raises(ValueError, match=problem):
            router_with(bad)
    with pytest.raises(ValueError, match="same MQTT filter"):
        router_with("a/#", "a/{rest:#}")


def test_exact_literal_route_is_found():
    router = router_with("a/b/c", "a/+/c")
    found = router.match("a/b/c")
    assert found is not None and found.route.pattern == "a/b/c" and found.params == {}


# -- precedence -------------------------------------------------------------


def test_literal_beats_param_beats_hash_at_the_first_differing_level():
    router = router_with("devices/#", "devices/{id}/telemetry", "devices/special/telemetry")
    assert best(router, "devices/special/telemetry") == "devices/special/telemetry"
    assert best(router, "devices/other/telemetry") == "devices/{id}/telemetry"
    assert best(router, "devices/other/status") == "devices/#"


def test_precedence_does_not_depend_on_registration_order():
    patterns = ["devices/special/telemetry", "devices/{id}/telemetry", "devices/#", "#"]
    for ordering in (patterns, list(reversed(patterns))):
        router = router_with(*ordering)
        assert best(router, "devices/special/telemetry") == "devices/special/telemetry"
        assert best(router, "devices/x/telemetry") == "devices/{id}/telemetry"
        assert best(router, "devices/x") == "devices/#"
        assert best(router, "other") == "#"


def test_leftmost_difference_decides_over_later_levels():
    # At level 1 the literal 'a' beats '+', even though '+/b' is literal at level 2.
    router = router_with("+/b", "a/+")
    assert best(router, "a/b") == "a/+"


def test_literal_prefix_with_hash_beats_wildcard_prefix():
    router = router_with("+/b/c", "a/#")
    assert best(router, "a/b/c") == "a/#"


def test_longer_literal_path_wins_over_shorter_hash():
    router = router_with("a/#", "a/b/#")
    assert best(router, "a/b/c") == "a/b/#"
    assert best(router, "a/x") == "a/#"


def test_pattern_ending_at_the_topic_beats_hash_matching_zero_levels():
    router = router_with("a/+/#", "a/+")
    assert best(router, "a/b") == "a/+"
    assert best(router, "a/b/c") == "a/+/#"


def test_backtracking_falls_back_when_the_literal_branch_dead_ends():
    router = router_with("a/b/c", "a/+/d")
    assert best(router, "a/b/d") == "a/+/d"


def test_match_all_lists_every_match_best_first():
    router = router_with("#", "a/#", "a/+", "a/b", "+/b")
    assert [m.route.pattern for m in router.match_all("a/b")] == ["a/b", "a/+", "a/#", "+/b", "#"]
    assert best(router, "a/b") == "a/b"


def test_same_filter_twice_is_refused_naming_both_routes():
    router = router_with("devices/{id}/t")
    with pytest.raises(ValueError, match=r"devices/\+/t.*devices/\{id\}/t"):
        router.on("devices/+/t", noop)
    with pytest.raises(ValueError, match="same MQTT filter"):
        router.on("devices/{other}/t", noop, shared=True)
    assert len(router.routes()) == 1


# -- registration -----------------------------------------------------------


def test_decorator_registers_and_returns_the_function_unchanged():
    router = Router()

    @router.on("devices/{device_id}/telemetry", qos=1)
    def telemetry(message: Message) -> None:
        return None

    assert callable(telemetry) and telemetry.__name__ == "telemetry"
    (route,) = router.routes()
    assert route.handler is telemetry and route.qos == 1 and route.filter == "devices/+/telemetry"
    assert route.name.endswith("telemetry")


def test_invalid_options_are_refused_at_registration():
    router = Router()
    with pytest.raises(ValueError, match="qos must be 0, 1 or 2"):
        router.on("a", noop, qos=3)
    with pytest.raises(ValueError, match="max_payload"):
        router.on("a", noop, max_payload=-1)
    with pytest.raises(TypeError, match="not callable"):
        router.on("a", "not a function")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="'#' must be the last level"):
        router.on("a/#/b", noop)
    with pytest.raises(TypeError, match="handle"):
        router.on("a", noop, middleware=[object()])  # type: ignore[list-item]
    assert router.routes() == []


def test_route_prints_its_pattern_handler_and_options():
    router = Router()
    route = router.on("a/{x}", noop, qos=2, shared=True, max_payload=10)
    text = repr(route)
    assert "'a/{x}'" in text and "noop" in text and "qos=2" in text and "shared" in text
    assert "max_payload=10" in text


def test_groups_join_prefixes_and_nest():
    router = Router()
    with router.group(prefix="site/{site}") as site:
        site.on("status", noop)
        devices = site.group(prefix="devices/{device_id}")
        devices.on("telemetry", noop)
        devices.on("", noop, name="device-root")
    assert [r.pattern for r in router.routes()] == [
        "site/{site}/status",
        "site/{site}/devices/{device_id}/telemetry",
        "site/{site}/devices/{device_id}",
    ]
    found = router.match("site/s1/devices/d9/telemetry")
    assert found is not None and found.params == {"site": "s1", "device_id": "d9"}


def test_group_prefix_mistakes_are_refused():
    router = Router()
    with pytest.raises(ValueError, match="ends with '/'"):
        router.group(prefix="devices/")
    with pytest.raises(ValueError, match="'#' cannot be part of a prefix"):
        router.group(prefix="devices/#")
    group = router.group(prefix="devices/{id}")
    with pytest.raises(ValueError, match="appears twice"):
        group.on("{id}/x", noop)
    with pytest.raises(ValueError, match="starts with '/'"):
        group.on("/x", noop)


def test_include_merges_routes_and_refuses_duplicates():
    first, second = router_with("a/{x}"), router_with("b/#")
    merged = Router()
    merged.include(first)
    merged.include(second)
    assert [r.pattern for r in merged.routes()] == ["a/{x}", "b/#"]
    assert best(merged, "b/c") == "b/#"
    with pytest.raises(ValueError, match="same MQTT filter"):
        merged.include(router_with("a/+"))
    with pytest.raises(ValueError, match="itself"):
        merged.include(merged)


# -- subscriptions ----------------------------------------------------------


def test_subscriptions_derive_filters_and_share_prefix():
    router = Router()
    router.on("devices/{id}/telemetry", noop, qos=1, shared=True)
    router.on("devices/{id}/status", noop, qos=2)
    router.on("alerts/#", noop)
    assert router.subscriptions("grp") == [
        Subscription("devices/+/telemetry", 1, True, "$share/grp/devices/+/telemetry"),
        Subscription("devices/+/status", 2, False, "devices/+/status"),
        Subscription("alerts/#", 0, False, "alerts/#"),
    ]


def test_subscription_is_frozen_and_group_name_is_validated():
    sub = Subscription("a", 0, False, "a")
    with pytest.raises(AttributeError):
        sub.qos = 1  # type: ignore[misc]
    router = Router()
    router.on("a", noop, shared=True)
    with pytest.raises(ValueError, match="MQTT_GROUP_NAME"):
        router.subscriptions("bad/name")


# -- dispatch ---------------------------------------------------------------


def test_dispatch_sets_params_and_route_and_calls_the_handler():
    router = Router()
    seen: list[Message] = []
    route = router.on("devices/{device_id}/telemetry", seen.append)
    message = Message("devices/d7/telemetry", b"{}")
    assert router.dispatch(message) is True
    assert seen == [message]
    assert message.params == {"device_id": "d7"} and message.route is route


def test_unmatched_message_returns_false_counts_and_logs_debug(caplog):
    router = router_with("a/b")
    caplog.set_level(logging.DEBUG, logger="core.router")
    assert router.dispatch(Message("x/y", b"")) is False
    assert router.dispatch(Message("a/+", b"")) is False
    assert router.unmatched == 2
    assert any("'x/y'" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_max_payload_is_checked_before_middleware_and_handler():
    router = Router()
    calls: list[str] = []

    def watcher(message, next):
        calls.append("middleware")
        return next(message)

    router.use(watcher)
    router.on("a", lambda m: calls.append("handler"), max_payload=4)
    assert router.dispatch(Message("a", b"1234")) is True
    with pytest.raises(PayloadTooLarge, match=r"'a' is 5 bytes, over the max_payload of 4") as info:
        router.dispatch(Message("a", b"12345"))
    assert isinstance(info.value, PayloadError)
    assert calls == ["middleware", "handler"]


def test_group_max_payload_applies_unless_the_route_overrides_it():
    router = Router()
    group = router.group(prefix="g", max_payload=2)
    group.on("small", noop)
    group.on("big", noop, max_payload=100)
    with pytest.raises(PayloadTooLarge):
        router.dispatch(Message("g/small", b"123"))
    assert router.dispatch(Message("g/big", b"123")) is True


def test_handler_exceptions_propagate_to_the_caller():
    router = Router()

    def broken(message: Message) -> None:
        raise RuntimeError("handler failed")

    router.on("a", broken)
    with pytest.raises(RuntimeError, match="handler failed"):
        router.dispatch(Message("a", b""))


def test_async_handler_runs_on_one_background_loop_and_dispatch_waits():
    router = Router()
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[str] = []

    async def handler(message: Message) -> None:
        await asyncio.sleep(0.01)
        loops.append(asyncio.get_running_loop())
        threads.append(threading.current_thread().name)

    router.on("a/{x}", handler)
    try:
        assert router.dispatch(Message("a/1", b"")) is True
        assert len(loops) == 1  # finished before dispatch returned
        assert router.dispatch(Message("a/2", b"")) is True
        assert loops[0] is loops[1]
        assert threads[0] != threading.current_thread().name
    finally:
        shutdown_loop()


def test_async_handler_exception_propagates():
    router = Router()

    async def handler(message: Message) -> None:
        raise ValueError("async failure on " + message.topic)

    router.on("a", handler)
    try:
        with pytest.raises(ValueError, match="async failure on a"):
            router.dispatch(Message("a", b""))
    finally:
        shutdown_loop()


def test_async_callable_object_handler_is_awaited():
    router = Router()
    done: list[str] = []

    class Handler:
        async def __call__(self, message: Message) -> None:
            done.append(message.topic)

    router.on("a", Handler())
    try:
        router.dispatch(Message("a", b""))
        assert done == ["a"]
    finally:
        shutdown_loop()


def test_routes_returns_route_objects_in_registration_order():
    router = router_with("b", "a", "c/#")
    routes = router.routes()
    assert all(isinstance(r, Route) for r in routes)
    assert [r.pattern for r in routes] == ["b", "a", "c/#"]
    routes.clear()
    assert len(router.routes()) == 3  # a copy: the table is not changed from outside
