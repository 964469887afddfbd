"""What an MQTT message is made of, for both publishers: topic check, payload, MQTT 5 properties.

Handlers publish through the app's runtime (core/mqtt.py) and jobs through the
worker's publisher (backends/mqtt_publisher.py); both check topics, encode
payloads and turn `MessageProperties` into paho's form here, so user code
never builds a paho `Properties` object. `MessageProperties` is also how a
handler reads the properties of a received MQTT 5 message (`message.properties`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: Longest topic name or filter MQTT allows, in UTF-8 bytes (a 16-bit length prefix).
MAX_TOPIC_BYTES = 65535
#: Largest Message Expiry Interval MQTT 5 can carry (a four-byte integer), seconds.
MAX_MESSAGE_EXPIRY = 0xFFFF_FFFF
#: Characters a topic name to publish to may not contain (subscription wildcards).
_WILDCARDS = ("+", "#")

#: What `publish()` accepts as a payload: bytes and text as they are, dicts and lists as JSON.
Payload = bytes | str | dict[str, Any] | list[Any]


class PropertiesNotSupported(ValueError):
    """MQTT 5 properties were given to a connection that speaks MQTT 3.1.1."""


def validate_publish_topic(topic: str) -> str:
    """Return `topic` if it is a valid MQTT topic name to publish to, else `ValueError`.

    A topic name is non-empty, has no `+`/`#` wildcard and no NUL, and is at most
    65535 bytes in UTF-8.
    """
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a string, got {type(topic).__name__}")
    if topic == "":
        raise ValueError("topic to publish to must not be empty")
    if any(wildcard in topic for wildcard in _WILDCARDS):
        raise ValueError(
            f"topic {topic!r} contains a wildcard ('+' or '#'); wildcards are for subscribing"
        )
    if "\x00" in topic:
        raise ValueError(f"topic {topic!r} contains a NUL character")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic {topic[:60]!r}... is longer than {MAX_TOPIC_BYTES} bytes")
    return topic


def encode_payload(payload: Payload) -> bytes | str:
    """The payload to send: bytes and text unchanged, a dict or list as compact JSON."""
    if isinstance(payload, dict | list):
        return json.dumps(payload, separators=(",", ":"))
    return payload


@dataclass(frozen=True, slots=True, init=False)
class MessageProperties:
    """MQTT 5 properties of a message, sent with `publish()`/`reply()` or read from a request.

    * `content_type` - MIME type of the payload (`application/json`).
    * `user_properties` - (name, value) pairs, in order; a name may repeat. A dict
      is accepted too.
    * `message_expiry` - seconds the broker keeps the message for subscribers
      that have not received it yet; None: forever.
    * `response_topic` - where the receiver should send its answer (a request).
    * `correlation_data` - bytes the answer carries back so the requester can
      match it; `message.reply()` copies the request's.

    Only MQTT 5 carries them: publishing non-empty properties over MQTT 3.1.1
    raises `PropertiesNotSupported` (set MQTT_PROTOCOL=5).
    """

    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    message_expiry: int | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None

    def __init__(
        self,
        content_type: str | None = None,
        user_properties: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        message_expiry: int | None = None,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        for name, text in (("content_type", content_type), ("response_topic", response_topic)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"MessageProperties.{name} must be a string, got {text!r}")
        if response_topic == "":
            raise ValueError("MessageProperties.response_topic must not be empty")
        if correlation_data is not None and not isinstance(correlation_data, bytes):
            raise TypeError(
                f"MessageProperties.correlation_data must be bytes, got {correlation_data!r}"
            )
        if message_expiry is not None and (
            not isinstance(message_expiry, int)
            or isinstance(message_expiry, bool)
            or not 0 <= message_expiry <= MAX_MESSAGE_EXPIRY
        ):
            raise ValueError(
                f"MessageProperties.message_expiry must be whole seconds from 0 to "
                f"{MAX_MESSAGE_EXPIRY}, got {message_expiry!r}"
            )
        # Frozen: fields are set once, here.
        object.__setattr__(self, "content_type", content_type)
        object.__setattr__(self, "user_properties", _pairs(user_properties))
        object.__setattr__(self, "message_expiry", message_expiry)
        object.__setattr__(self, "response_topic", response_topic)
        object.__setattr__(self, "correlation_data", correlation_data)

    def names_set(self) -> list[str]:
        """Names of the properties that are set (empty: nothing to send)."""
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, ())]

    def user_property(self, name: str) -> str | None:
        """The first value of user property `name`, or None."""
        return next((value for key, value in self.user_properties if key == name), None)

    @classmethod
    def from_paho(cls, properties: Any) -> MessageProperties | None:
        """The properties of a received paho message; None for MQTT 3.1.1 (no properties).

        Not checked again: paho decoded them by the MQTT 5 rules (this runs once
        per received message, so it skips `__init__`).
        """
        if properties is None:
            return None
        received = object.__new__(cls)
        for name, value in (
            ("content_type", getattr(properties, "ContentType", None)),
            ("user_properties", tuple(getattr(properties, "UserProperty", ()))),
            ("message_expiry", getattr(properties, "MessageExpiryInterval", None)),
            ("response_topic", getattr(properties, "ResponseTopic", None)),
            ("correlation_data", getattr(properties, "CorrelationData", None)),
        ):
            object.__setattr__(received, name, value)
        return received


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """User properties as a tuple of (name, value) string pairs; `TypeError` otherwise."""
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    pairs: list[tuple[str, str]] = []
    for item in items:
        if (
            not isinstance(item, tuple | list)
            or len(item) != 2
            or not all(isinstance(part, str) for part in item)
        ):
            raise TypeError(
                f"MessageProperties.user_properties must be (name, value) string pairs, "
                f"got {item!r}"
            )
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def prepare_publish(
    topic: str, payload: Payload, properties: MessageProperties | None, mqtt5: bool
) -> tuple[bytes | str, Properties | None]:
    """Check `topic` and return the payload and paho properties to send with it.

    `ValueError` for a topic that cannot be published to, `PropertiesNotSupported`
    for properties over MQTT 3.1.1 (see `publish_properties`).
    """
    validate_publish_topic(topic)
    return encode_payload(payload), publish_properties(properties, mqtt5, topic)


def publish_properties(
    properties: MessageProperties | None, mqtt5: bool, topic: str
) -> Properties | None:
    """paho PUBLISH properties for `properties`, or None when there is nothing to send.

    Over MQTT 3.1.1 (`mqtt5` False) non-empty properties raise
    `PropertiesNotSupported` naming the topic and the properties: dropping them
    silently would break a requester waiting for its correlation data.
    """
    if properties is None:
        return None
    names = properties.names_set()
    if not names:
        return None
    if not mqtt5:
        raise PropertiesNotSupported(
            f"cannot publish to {topic!r} with MQTT 5 properties ({', '.join(names)}): "
            f"the connection speaks MQTT 3.1.1; set MQTT_PROTOCOL=5"
        )
    packed = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if properties.content_type is not None:
        packed.ContentType = properties.content_type
    if properties.user_properties:
        packed.UserProperty = list(properties.user_properties)
    if properties.message_expiry is not None:
        packed.MessageExpiryInterval = properties.message_expiry
    if properties.response_topic is not None:
        packed.ResponseTopic = validate_publish_topic(properties.response_topic)
    if properties.correlation_data is not None:
        packed.CorrelationData = properties.correlation_data
    return packed
