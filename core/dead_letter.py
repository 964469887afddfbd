"""Dead letters: what a message that cannot be handled becomes, always publishable.

A dead letter is published at QoS 1 to `{MQTT_DEAD_LETTER_TOPIC}/{original
topic}` with a JSON body: topic, route, error, attempts, qos, retain, payload
(UTF-8 text when it decodes, else base64, as `payload_encoding` says),
payload_size, payload_truncated and failed_at (UTC ISO time).

Whatever the message held, the dead letter fits MQTT's limits: a target topic
longer than MQTT allows, or deeper than brokers accept, becomes
`{prefix}/_long/{sha256 of the topic, 16 hex}` (the full topic is in the body),
and at most `DEAD_LETTER_PAYLOAD_LIMIT` bytes of the payload are copied in.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

#: Longest topic name MQTT can carry, in UTF-8 bytes.
MAX_TOPIC_BYTES = 65_535
#: Most topic levels we publish to: Mosquitto disconnects a client publishing deeper than 200.
MAX_TOPIC_LEVELS = 200
#: Level under the dead-letter prefix for topics too long or deep to be copied as is.
LONG_TOPIC_LEVEL = "_long"
#: Most bytes of the original payload copied into a dead letter (the size is always given).
DEAD_LETTER_PAYLOAD_LIMIT = 1024 * 1024


def dead_letter_topic(prefix: str, topic: str) -> str:
    """`prefix + topic`, or a short stand-in when that is too long or too deep to publish.

    `prefix` ends with `/`.
    """
    target = prefix + topic
    if len(target.encode("utf-8")) <= MAX_TOPIC_BYTES and target.count("/") < MAX_TOPIC_LEVELS:
        return target
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}{LONG_TOPIC_LEVEL}/{digest}"


def dead_letter_body(
    topic: str,
    route: str,
    error: str,
    attempts: int,
    qos: int,
    retain: bool,
    payload: bytes,
    payload_limit: int = DEAD_LETTER_PAYLOAD_LIMIT,
) -> str:
    """The JSON body of a dead letter, with at most `payload_limit` payload bytes copied."""
    kept = payload[:payload_limit]
    try:
        text: str | None = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body: dict[str, Any] = {
        "topic": topic,
        "route": route,
        "error": error,
        "attempts": attempts,
        "qos": qos,
        "retain": retain,
        "payload": text if text is not None else base64.b64encode(kept).decode("ascii"),
        "payload_encoding": "utf-8" if text is not None else "base64",
        "payload_size": len(payload),
        "payload_truncated": len(kept) < len(payload),
        "failed_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(body, separators=(",", ":"))
