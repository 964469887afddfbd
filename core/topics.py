"""MQTT topic names and route patterns: parsing, validation, building.

A route pattern is an MQTT topic filter in which a level may also be written
`{name}`: such a level matches exactly one topic level (like `+`) and its value
is handed to the handler as `message.params[name]`. The last level may be
`{name:#}`: it matches like `#` (the rest of the topic, zero levels or more) and
`message.params[name]` holds that rest, levels joined with `/` (empty when it
matched zero levels). Everything here is pure
string work, shared by the router (patterns -> filters) and by handlers that
publish (`build_topic`), so a parameter can never widen or escape a topic.
"""

from __future__ import annotations

from dataclasses import dataclass

# The topic-name rules live with the publishers (backends/): re-exported for handlers.
from backends.mqtt_message import MAX_TOPIC_BYTES as MAX_TOPIC_BYTES
from backends.mqtt_message import validate_publish_topic as validate_publish_topic

#: Prefix of an MQTT 5 shared subscription: `$share/{group}/{filter}`.
SHARE_PREFIX = "$share/"

SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
#: What follows a parameter's name in a `{name:#}` level, which captures the rest of the topic.
REST_CAPTURE = ":#"

#: Kinds of a parsed pattern level.
LITERAL, PARAM, WILDCARD, REST = "literal", "param", "wildcard", "rest"


@dataclass(frozen=True)
class Level:
    """One level of a route pattern: its kind and its text (or parameter name)."""

    kind: str  #: LITERAL, PARAM (`{name}`), WILDCARD (`+`) or REST (`#` or `{name:#}`)
    text: str  #: the literal text, the parameter name, `+` or `#`
    capture: str | None = None  #: the parameter name of a `{name:#}` level

    @property
    def filter_text(self) -> str:
        """How this level is written in the MQTT subscription filter."""
        return SINGLE_LEVEL if self.kind == PARAM else self.text


@dataclass(frozen=True)
class Pattern:
    """A validated route pattern, its levels and the MQTT filter it subscribes to."""

    text: str
    levels: tuple[Level, ...]

    @property
    def filter(self) -> str:
        """The MQTT topic filter: each `{name}` level becomes `+`."""
        return "/".join(level.filter_text for level in self.levels)

    @property
    def param_positions(self) -> tuple[tuple[int, str], ...]:
        """(level index, parameter name) of each `{name}` level, left to right."""
        return tuple((i, lv.text) for i, lv in enumerate(self.levels) if lv.kind == PARAM)

    @property
    def rest_capture(self) -> tuple[int, str] | None:
        """(level index, parameter name) of a final `{name:#}` level, else None."""
        last = self.levels[-1]
        return None if last.capture is None else (len(self.levels) - 1, last.capture)


def _is_param_name(name: str) -> bool:
    return name.isidentifier()


def parse_level(pattern: str, level: str, is_last: bool) -> Level:
    """Classify one level of `pattern`; `ValueError` naming the pattern if it is malformed."""
    if level == MULTI_LEVEL:
        if not is_last:
            raise ValueError(
                f"route pattern {pattern!r}: '#' must be the last level (it matches the rest)"
            )
        return Level(REST, level)
    if level == SINGLE_LEVEL:
        return Level(WILDCARD, level)
    if level.startswith("{") and level.endswith("}") and level.count("{") == 1:
        name = level[1:-1]
        if name.endswith(REST_CAPTURE):
            return _rest_capture(pattern, level, name[: -len(REST_CAPTURE)], is_last)
        if not _is_param_name(name):
            raise ValueError(
                f"route pattern {pattern!r}: parameter {level!r} must be a Python identifier "
                f"such as {{device_id}}"
            )
        return Level(PARAM, name)
    if "{" in level or "}" in level:
        raise ValueError(
            f"route pattern {pattern!r}: level {level!r} mixes a {{parameter}} with other "
            f"text; a parameter must be a whole level, like 'devices/{{device_id}}/telemetry'"
        )
    if MULTI_LEVEL in level or SINGLE_LEVEL in level:
        raise ValueError(
            f"route pattern {pattern!r}: level {level!r} mixes a wildcard with other text; "
            f"'+' and '#' must be a whole level"
        )
    return Level(LITERAL, level)


def _rest_capture(pattern: str, level: str, name: str, is_last: bool) -> Level:
    """The `{name:#}` level: `#` whose match is kept as `message.params[name]`."""
    if not _is_param_name(name):
        raise ValueError(
            f"route pattern {pattern!r}: parameter {level!r} must be a Python identifier "
            f"followed by ':#', such as {{path:#}}"
        )
    if not is_last:
        raise ValueError(
            f"route pattern {pattern!r}: {level!r} must be the last level "
            f"(it captures the rest of the topic, like '#')"
        )
    return Level(REST, MULTI_LEVEL, name)


def parse_pattern(pattern: str) -> Pattern:
    """Parse and validate a route pattern; `ValueError` naming the pattern and the problem.

    Rejects: empty patterns, NUL, `#` or `{name:#}` anywhere but alone in the
    last level, `+` or `{...}` sharing a level with other text, bad or duplicate
    parameter names, `$share/...` (use `shared=True`), and filters over 65535 bytes.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"route pattern must be a string, got {type(pattern).__name__}")
    if pattern == "":
        raise ValueError("route pattern must not be empty")
    if "\x00" in pattern:
        raise ValueError(f"route pattern {pattern!r} contains a NUL character")
    if pattern.startswith(SHARE_PREFIX):
        raise ValueError(
            f"route pattern {pattern!r}: do not write '$share/...' in a pattern; "
            f"register the route with shared=True and set MQTT_GROUP_NAME"
        )
    raw_levels = pattern.split("/")
    levels = tuple(
        parse_level(pattern, raw, i == len(raw_levels) - 1) for i, raw in enumerate(raw_levels)
    )
    seen: set[str] = set()
    for level in levels:
        name = level.text if level.kind == PARAM else level.capture
        if name is not None:
            if name in seen:
                raise ValueError(
                    f"route pattern {pattern!r}: parameter {{{name}}} appears twice; "
                    f"each parameter name must be unique"
                )
            seen.add(name)
    parsed = Pattern(pattern, levels)
    if len(parsed.filter.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise ValueError(
            f"route pattern {pattern[:60]!r}...: filter is longer than {MAX_TOPIC_BYTES} bytes"
        )
    return parsed


def validate_param_value(name: str, value: object) -> str:
    """Return `value` as one safe topic level, else `ValueError` naming the parameter.

    Refuses values that would add levels (`/`), widen a subscription (`+`, `#`),
    reach system topics (leading `$`), be empty, or contain NUL.
    """
    text = str(value)
    if text == "":
        raise ValueError(f"topic parameter {name!r} must not be empty")
    for bad, why in (
        ("/", "would add a topic level"),
        (SINGLE_LEVEL, "is an MQTT wildcard"),
        (MULTI_LEVEL, "is an MQTT wildcard"),
        ("\x00", "is a NUL character"),
    ):
        if bad in text:
            raise ValueError(f"topic parameter {name!r}={text!r} contains {bad!r}, which {why}")
    if text.startswith("$"):
        raise ValueError(
            f"topic parameter {name!r}={text!r} starts with '$', reserved for broker topics"
        )
    return text


def build_topic(pattern: str, **params: object) -> str:
    """Fill the `{name}` levels of `pattern` with `params` and return a publishable topic.

    Every value must be exactly one safe topic level (see `validate_param_value`);
    a missing or unused parameter, or a wildcard left in the pattern, is a
    `ValueError` naming it. The result passes `validate_publish_topic`.
    """
    parsed = parse_pattern(pattern)
    parts: list[str] = []
    used: set[str] = set()
    for level in parsed.levels:
        if level.kind == PARAM:
            if level.text not in params:
                raise ValueError(f"build_topic({pattern!r}): missing parameter {level.text!r}")
            parts.append(validate_param_value(level.text, params[level.text]))
            used.add(level.text)
        elif level.kind == LITERAL:
            parts.append(level.text)
        else:
            raise ValueError(
                f"build_topic({pattern!r}): a topic to publish to cannot contain "
                f"the wildcard {level.text!r}"
            )
    unused = sorted(set(params) - used)
    if unused:
        raise ValueError(
            f"build_topic({pattern!r}): unknown parameter(s) {', '.join(unused)} "
            f"(the pattern has no such {{name}} level)"
        )
    return validate_publish_topic("/".join(parts))


def share_topic(group_name: str, topic_filter: str) -> str:
    """The topic of a shared subscription to `topic_filter` in consumer group `group_name`."""
    if not group_name or any(c in group_name for c in "/+#\x00"):
        raise ValueError(
            f"shared subscription group name must be non-empty without '/', '+', '#', "
            f"got {group_name!r} (MQTT_GROUP_NAME)"
        )
    return f"{SHARE_PREFIX}{group_name}/{topic_filter}"
