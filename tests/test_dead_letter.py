"""Dead letters always fit the budget, whatever the message held."""

from __future__ import annotations

import base64
import json

import pytest

from core.dead_letter import LONG_TOPIC_LEVEL, MAX_TOPIC_LEVELS, build_dead_letter

BUDGET = 60_000


def _letter(topic: str, payload: bytes, budget: int = BUDGET) -> tuple[str, dict[str, object]]:
    target, body = build_dead_letter(
        "deadletter/", topic, "r/#", "ValueError: bad", 3, 1, False, payload, budget
    )
    assert len(target.encode()) + len(body) <= budget
    return target, json.loads(body)


def test_a_small_message_is_copied_whole() -> None:
    target, body = _letter("devices/d1/telemetry", b'{"value": 3}')
    assert target == "deadletter/devices/d1/telemetry"
    assert (body["payload"], body["payload_encoding"]) == ('{"value": 3}', "utf-8")
    assert (body["payload_size"], body["payload_truncated"]) == (12, False)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x01" * 200_000,  # control bytes: JSON escapes each one in six
        "é漢😀".encode() * 30_000,  # multi-byte characters, cut anywhere
        bytes(range(256)) * 1000,  # not UTF-8: base64
    ],
    ids=["control", "multibyte", "binary"],
)
def test_a_large_payload_is_cut_to_fit_and_says_so(payload: bytes) -> None:
    _, body = _letter("devices/d1/telemetry", payload)
    assert body["payload_truncated"] is True
    assert body["payload_size"] == len(payload)
    kept = (
        base64.b64decode(str(body["payload"]))
        if body["payload_encoding"] == "base64"
        else str(body["payload"]).encode()
    )
    assert payload.startswith(kept) and len(kept) > BUDGET // 8


def test_a_topic_too_long_or_too_deep_gets_a_short_stand_in() -> None:
    long_topic = "a/" + "x" * 65_000
    target, body = _letter(long_topic, b"x")
    assert target.startswith(f"deadletter/{LONG_TOPIC_LEVEL}/")
    assert body["topic_size"] == len(long_topic)
    deep = "/".join(["l"] * MAX_TOPIC_LEVELS)
    target, body = _letter(deep, b"x")
    assert target.startswith(f"deadletter/{LONG_TOPIC_LEVEL}/") and body["topic"] == deep


def test_a_tiny_budget_still_gives_a_valid_letter_without_payload() -> None:
    _, body = _letter("devices/d1/telemetry", b"y" * 10_000, budget=1024)
    assert body["payload_truncated"] is True and len(str(body["payload"])) < 1024
