"""core.topics: pattern validation, publish-topic validation, safe topic building."""

from __future__ import annotations

import pytest

from core.topics import (
    MAX_TOPIC_BYTES,
    build_topic,
    parse_pattern,
    share_topic,
    validate_publish_topic,
)


def test_param_levels_become_plus_in_the_filter():
    pattern = parse_pattern("devices/{device_id}/sensors/{sensor}/#")
    assert pattern.filter == "devices/+/sensors/+/#"
    assert pattern.param_positions == ((1, "device_id"), (3, "sensor"))


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "must not be empty"),
        ("a/#/b", "'#' must be the last level"),
        ("a/b#", "mixes a wildcard"),
        ("a/+b", "mixes a wildcard"),
        ("a/dev-{id}", "mixes a {parameter}"),
        ("a/{id}x", "mixes a {parameter}"),
        ("a/{}", "must be a Python identifier"),
        ("a/{1x}", "must be a Python identifier"),
        ("a/{id}/b/{id}", "appears twice"),
        ("$share/g/a", "shared=True"),
        ("a/\x00", "NUL"),
    ],
)
def test_malformed_patterns_are_refused_with_a_reason(pattern, fragment):
    with pytest.raises(ValueError, match="route pattern") as info:
        parse_pattern(pattern)
    assert fragment in str(info.value)


def test_mqtt_edge_patterns_are_accepted():
    assert parse_pattern("#").filter == "#"
    assert parse_pattern("+").filter == "+"
    assert parse_pattern("/a//b").filter == "/a//b"  # empty levels are legal in MQTT
    assert parse_pattern("$SYS/#").filter == "$SYS/#"


def test_build_topic_fills_each_parameter():
    topic = build_topic("devices/{device_id}/commands/{cmd}", device_id="d-42", cmd=7)
    assert topic == "devices/d-42/commands/7"


@pytest.mark.parametrize("value", ["a/b", "+", "x#", "$SYS", "", "a\x00b"])
def test_build_topic_refuses_values_that_escape_one_level(value):
    with pytest.raises(ValueError, match="device_id") as info:
        build_topic("devices/{device_id}/commands", device_id=value)
    if value:
        assert repr(value) in str(info.value)


def test_build_topic_refuses_missing_unknown_params_and_wildcards():
    with pytest.raises(ValueError, match="missing parameter 'device_id'"):
        build_topic("devices/{device_id}")
    with pytest.raises(ValueError, match="unknown parameter"):
        build_topic("devices/{device_id}", device_id="a", extra="b")
    with pytest.raises(ValueError, match="wildcard"):
        build_topic("devices/+/x")


def test_validate_publish_topic_accepts_names_and_refuses_filters():
    assert validate_publish_topic("a/b") == "a/b"
    assert validate_publish_topic("a//b") == "a//b"
    for bad, fragment in [
        ("", "empty"),
        ("a/+", "wildcard"),
        ("a/#", "wildcard"),
        ("a\x00", "NUL"),
        ("x" * (MAX_TOPIC_BYTES + 1), "longer than"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            validate_publish_topic(bad)


def test_validate_publish_topic_counts_utf8_bytes_not_characters():
    near_limit = "é" * (MAX_TOPIC_BYTES // 2)  # 2 bytes each: just under the limit
    assert validate_publish_topic(near_limit) == near_limit
    with pytest.raises(ValueError, match="longer than"):
        validate_publish_topic(near_limit + "éé")


def test_share_topic_prefixes_the_group_and_refuses_bad_group_names():
    assert share_topic("workers", "devices/+/t") == "$share/workers/devices/+/t"
    for bad in ["", "a/b", "a+", "#"]:
        with pytest.raises(ValueError, match="group name"):
            share_topic(bad, "x")
