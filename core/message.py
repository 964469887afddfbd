"""The message object every handler and middleware receives."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

# Handlers import MessageProperties from here; it lives with the publishers (backends/).
from backends.mqtt_message import MessageProperties as MessageProperties
from backends.mqtt_message import Payload
from backends.mqtt_message import PropertiesNotSupported as PropertiesNotSupported


class PublishFunction(Protocol):
    """The runtime's publish: queue one message for paho's network thread to send."""

    def __call__(
        self,
        topic: str,
        payload: Payload,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> object:
        """Publish `payload` to `topic`; raise `ValueError` for what cannot be sent.

        May return a receipt with `wait_for_publish(timeout)` and `is_published()`
        (paho's `MQTTMessageInfo`): the dead-letter path waits on it.
        """


class PayloadError(ValueError):
    """The payload cannot be decoded as the handler asked; the message names the topic."""


class NoResponseTopic(PayloadError):
    """`reply()` to a message that names no MQTT 5 ResponseTopic: it is not a request.

    A `PayloadError`, so the message is dead-lettered at once: retrying cannot
    give it a response topic, and no reply topic is ever made up (a made-up one
    under the request's topic would reach the app's own routes again).
    """


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
        properties: MessageProperties | None = None,
        publish: PublishFunction | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        #: MQTT 5 properties of the message (None over MQTT 3.1.1)
        self.properties = properties
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
        payload: Payload,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish a message through the runtime's client (dicts and lists as JSON).

        Build topics from parameters with `core.topics.build_topic`, which refuses
        values that would widen or escape the topic. `properties` need
        MQTT_PROTOCOL=5 (`PropertiesNotSupported` otherwise). The packet is
        queued here and sent by paho's network thread.
        """
        if self._publish is None:
            raise RuntimeError("this message has no MQTT client to publish with")
        self._publish(topic, payload, qos, retain, properties)

    def reply(
        self,
        payload: Payload,
        qos: int = 0,
        properties: MessageProperties | None = None,
    ) -> None:
        """Answer an MQTT 5 request: publish to its ResponseTopic with its CorrelationData.

        `properties` (content type, user properties, expiry) go with the answer;
        the request's correlation data replaces any given there. A message
        without a ResponseTopic (every MQTT 3.1.1 message) raises
        `NoResponseTopic`: there is no implicit reply topic.
        """
        request = self.properties
        if request is None or request.response_topic is None:
            raise NoResponseTopic(
                f"cannot reply to the message on {self.topic!r}: it names no MQTT 5 "
                f"ResponseTopic (a requester must set one; over MQTT 3.1.1 publish the "
                f"answer with message.publish() to a topic agreed with the requester)"
            )
        answer = properties or MessageProperties()
        if request.correlation_data is not None:
            answer = dataclasses.replace(answer, correlation_data=request.correlation_data)
        self.publish(request.response_topic, payload, qos, properties=answer)

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, qos={self.qos}, {len(self.payload)} bytes)"


class _Unset:
    """Marker for a JSON payload not decoded yet (None is a valid JSON value)."""


_UNSET: Any = _Unset()
