"""The message object every handler and middleware receives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: Signature of the runtime's publish function: (topic, payload, qos, retain) -> None.
PublishFunction = Callable[[str, bytes | str, int, bool], None]


class PayloadError(ValueError):
    """The payload cannot be decoded as the handler asked; the message names the topic."""


class Message:
    """One incoming MQTT message, as seen by a route's middleware and handler.

    `params` holds the values of the route's `{name}` parameters; each is exactly
    one topic level, so it never contains `/`, `+` or `#` (only a `{name:#}`
    capture of the rest of the topic may contain `/`).
    """

    __slots__ = (
        "_json",
        "_publish",
        "params",
        "payload",
        "properties",
        "qos",
        "retain",
        "route",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Any = None,
        publish: PublishFunction | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties  #: paho `Properties` of an MQTT 5 message, else None
        self.params: dict[str, str] = {}
        self.route: Any = None  #: the matched `core.router.Route`, set by the router
        self._publish = publish
        self._json: Any = _UNSET

    def json(self) -> Any:
        """The payload decoded as UTF-8 JSON; `PayloadError` naming the topic if it is not."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.payload)
            except (ValueError, UnicodeDecodeError) as exc:
                raise PayloadError(f"payload on {self.topic!r} is not valid JSON: {exc}") from None
        return self._json

    def text(self) -> str:
        """The payload decoded as UTF-8; `PayloadError` if it is not."""
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"payload on {self.topic!r} is not UTF-8: {exc}") from None

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any] | list[Any],
        qos: int = 0,
        retain: bool = False,
    ) -> None:
        """Publish a message through the runtime's client (dicts and lists as JSON).

        Build topics from parameters with `core.topics.build_topic`, which refuses
        values that would widen or escape the topic.
        """
        if self._publish is None:
            raise RuntimeError("this message has no MQTT client to publish with")
        if isinstance(payload, dict | list):
            payload = json.dumps(payload, separators=(",", ":"))
        self._publish(topic, payload, qos, retain)

    def reply(self, payload: bytes | str | dict[str, Any] | list[Any], qos: int = 0) -> None:
        """Publish to the MQTT 5 ResponseTopic of this message, or `{topic}/reply`."""
        response_topic = getattr(self.properties, "ResponseTopic", None)
        self.publish(response_topic or f"{self.topic}/reply", payload, qos)

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, qos={self.qos}, {len(self.payload)} bytes)"


class _Unset:
    """Marker for a JSON payload not decoded yet (None is a valid JSON value)."""


_UNSET: Any = _Unset()
