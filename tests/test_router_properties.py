"""Property test: the router's trie agrees with paho's reference MQTT matcher."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from core.message import Message
from core.router import Router

#: Topic level values: a small alphabet so filters and topics collide often.
LEVELS = ["a", "b", "", "$s"]

level = st.sampled_from(LEVELS)
#: Topic names: MQTT forbids the empty topic, so it is never generated.
topic_strategy = st.lists(level, min_size=1, max_size=5).map("/".join).filter(bool)


#: A final level capturing the rest of the topic: subscribed and matched as `#`.
REST_CAPTURE = "{rest:#}"


@st.composite
def topic_filter(draw: st.DrawFn) -> str:
    """A route pattern; its last level may be `#` or `{rest:#}`, which mean the same filter."""
    body = draw(st.lists(st.sampled_from([*LEVELS, "+"]), min_size=0, max_size=4))
    if not body or draw(st.booleans()):
        body.append(draw(st.sampled_from(["#", REST_CAPTURE])))
    joined = "/".join(body)
    return joined or "+"  # the empty filter is not valid MQTT


def as_filter(pattern: str) -> str:
    """The MQTT filter a pattern subscribes to."""
    return pattern.replace(REST_CAPTURE, "#")


def unique_filters(patterns: list[str]) -> bool:
    """True when no two patterns share a filter (`a/#` and `a/{rest:#}` would)."""
    return len({as_filter(p) for p in patterns}) == len(patterns)


filters_strategy = st.lists(topic_filter(), min_size=1, max_size=12, unique=True).filter(
    unique_filters
)


def noop(message: Message) -> None:
    return None


@settings(max_examples=300, deadline=None)
@given(filters=filters_strategy, topics=st.lists(topic_strategy, min_size=1, max_size=8))
def test_trie_finds_exactly_the_filters_paho_matches(filters, topics):
    router = Router()
    for f in filters:
        router.on(f, noop)
    for topic in topics:
        expected = {as_filter(f) for f in filters if topic_matches_sub(as_filter(f), topic)}
        found = [m.route.filter for m in router.match_all(topic)]
        assert len(found) == len(set(found)), f"{topic!r} matched a route twice: {found}"
        assert set(found) == expected, f"topic {topic!r}"
        best = router.match(topic)
        assert (best.route.filter if best else None) == (found[0] if found else None)


@st.composite
def param_pattern(draw: st.DrawFn) -> tuple[str, list[str]]:
    kinds = draw(st.lists(st.sampled_from(["lit", "param"]), min_size=1, max_size=5))
    parts, names = [], []
    for i, kind in enumerate(kinds):
        if kind == "param":
            names.append(f"p{i}")
            parts.append(f"{{p{i}}}")
        else:
            parts.append(draw(st.sampled_from(["a", "b"])))
    return "/".join(parts), names


@settings(max_examples=300, deadline=None)
@given(pattern=param_pattern(), values=st.lists(st.sampled_from(["a", "x", "", "42"]), min_size=5))
def test_params_are_exactly_the_topic_levels_at_param_positions(pattern, values):
    text, names = pattern
    levels = text.split("/")
    topic_levels = [values[i] if lv.startswith("{") else lv for i, lv in enumerate(levels)]
    topic = "/".join(topic_levels)
    assume(topic != "")  # not a valid MQTT topic name
    router = Router()
    router.on(text, noop)
    found = router.match(topic)
    assert found is not None
    assert found.params == {
        lv[1:-1]: topic_levels[i] for i, lv in enumerate(levels) if lv.startswith("{")
    }
    assert list(found.params) == names
    for value in found.params.values():
        assert "/" not in value and "+" not in value and "#" not in value


@settings(max_examples=200, deadline=None)
@given(filters=filters_strategy, topic=topic_strategy)
def test_best_match_is_the_leftmost_most_specific_filter(filters, topic):
    router = Router()
    for f in filters:
        router.on(f, noop)
    matching = [as_filter(f) for f in filters if topic_matches_sub(as_filter(f), topic)]
    best = router.match(topic)
    if not matching:
        assert best is None
        return
    expected = min(matching, key=lambda f: specificity(f, len(topic.split("/"))))
    assert best is not None and best.route.filter == expected


@settings(max_examples=300, deadline=None)
@given(
    pattern=param_pattern(),
    values=st.lists(st.sampled_from(["a", "x", "", "42"]), min_size=5),
    rest=st.lists(st.sampled_from(["a", "x", "", "$s"]), max_size=4),
)
def test_a_rest_capture_holds_exactly_the_levels_its_hash_matched(pattern, values, rest):
    text, names = pattern
    levels = text.split("/")
    topic_levels = [values[i] if lv.startswith("{") else lv for i, lv in enumerate(levels)]
    topic = "/".join(topic_levels + rest)
    assume(topic != "")
    router = Router()
    route = router.on(f"{text}/{REST_CAPTURE}", noop)
    assert route.filter == "/".join(["+" if lv.startswith("{") else lv for lv in levels] + ["#"])
    assert topic_matches_sub(route.filter, topic)
    found = router.match(topic)
    assert found is not None
    assert found.params["rest"] == "/".join(rest)
    assert list(found.params) == [*names, "rest"]
    assert [found.params[n] for n in names] == [
        topic_levels[i] for i, lv in enumerate(levels) if lv.startswith("{")
    ]


#: Rank of a filter level when comparing specificity: lower is more specific.
LITERAL_RANK, WILDCARD_RANK, END_RANK, REST_RANK = 0, 1, 2, 3


def specificity(topic_filter: str, topic_depth: int) -> list[int]:
    """The documented precedence as a sort key: level ranks left to right, and a
    filter that ends exactly at the topic's end ranks before a '#' matching zero levels."""
    levels = topic_filter.split("/")
    ranks = [
        REST_RANK if lv == "#" else WILDCARD_RANK if lv == "+" else LITERAL_RANK for lv in levels
    ]
    if levels[-1] != "#":
        ranks.append(END_RANK)
    return ranks
