"""Dead letters: what a message that cannot be handled becomes, always publishable.

A dead letter is published at QoS 1 to `{MQTT_DEAD_LETTER_TOPIC}/{original
topic}` with a JSON body: topic, route, error, attempts, qos, retain, payload
(UTF-8 text when it decodes, else base64, as `payload_encoding` says),
payload_size, payload_truncated and failed_at (UTC ISO time).

Whatever the message held, the dead letter fits in `max_bytes` (topic plus
body; MQTT_DEAD_LETTER_MAX_BYTES, lowered to the broker's Maximum Packet Size
when an MQTT 5 broker announces one). A broker disconnects a client that
publishes a larger packet, and paho would re-send it after the reconnect, for
ever. So:

- a target topic that is long (over a quarter of the budget) or deeper than
  brokers accept becomes `{prefix}/_long/{sha256 of the topic, 16 hex}`, and the
  body's `topic` keeps at most that quarter (`topic_size` gives the full length);
- the error text is cut to `MAX_ERROR_CHARS`;
- the payload is copied in as far as the rest of the budget allows
  (`payload_truncated` says whether all of it is there).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

#: Most topic levels we publish to: Mosquitto disconnects a client publishing deeper than 200.
MAX_TOPIC_LEVELS = 200
#: Level under the dead-letter prefix for topics too long or deep to be copied as is.
LONG_TOPIC_LEVEL = "_long"
#: Most characters of the error text kept in a dead letter.
MAX_ERROR_CHARS = 2000
#: Bytes kept free in the budget for the packet's own header and framing.
PACKET_OVERHEAD = 64


def dead_letter_topic(prefix: str, topic: str, max_topic_bytes: int) -> str:
    """`prefix + topic`, or a short stand-in when that is too long or too deep to publish.

    `prefix` ends with `/`.
    """
    target = prefix + topic
    if len(target.encode("utf-8")) <= max_topic_bytes and target.count("/") < MAX_TOPIC_LEVELS:
        return target
    digest = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}{LONG_TOPIC_LEVEL}/{digest}"


def build_dead_letter(
    prefix: str,
    topic: str,
    route: str,
    error: str,
    attempts: int,
    qos: int,
    retain: bool,
    payload: bytes,
    max_bytes: int,
) -> tuple[str, bytes]:
    """The `(target topic, JSON body)` of a dead letter, together at most `max_bytes` long."""
    quarter = max(max_bytes // 4, 1)
    target = dead_letter_topic(prefix, topic, quarter)
    body: dict[str, Any] = {
        "topic": topic if len(topic) <= quarter else topic[:quarter],
        "route": route[:quarter],
        "error": error[:MAX_ERROR_CHARS],
        "attempts": attempts,
        "qos": qos,
        "retain": retain,
        "payload": "",
        "payload_encoding": "utf-8",
        "payload_size": len(payload),
        "payload_truncated": False,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    if len(topic) > quarter:
        body["topic_size"] = len(topic)
    empty = _encode(body)
    budget = max_bytes - PACKET_OVERHEAD - len(target.encode("utf-8")) - len(empty)
    text, encoding, kept = _fit_payload(payload, budget)
    body.update(payload=text, payload_encoding=encoding, payload_truncated=kept < len(payload))
    return target, _encode(body)


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fit_payload(payload: bytes, budget: int) -> tuple[str, str, int]:
    """`(text, encoding, bytes of the payload kept)` whose JSON string fits in `budget` bytes."""
    kept = min(len(payload), max(budget, 0))
    while kept > 0:
        text, encoding = _as_text(payload[:kept])
        size = len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2
        if size <= budget:
            return text, encoding, kept
        kept = min(kept - 1, int(kept * budget / size * 0.98))
    return "", "utf-8", 0


def _as_text(chunk: bytes) -> tuple[str, str]:
    """The chunk as UTF-8 text (a multi-byte character cut at its end is dropped), or base64."""
    for cut in range(min(4, len(chunk) + 1)):
        try:
            return chunk[: len(chunk) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(chunk).decode("ascii"), "base64"
