"""The JSON envelope every queued job travels in.

The envelope is plain JSON (never pickle) with `attempts` as its first key and
`id` as its second: the Redis Lua scripts rewrite the attempts count and read the
id by matching that fixed prefix, so they never decode and re-encode user data
(cjson turns `[]` into `{}` and rounds large numbers).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

#: Exact text every envelope starts with; the Lua scripts match it.
ENVELOPE_PREFIX = '{"attempts":'


class EnvelopeError(ValueError):
    """A stored payload is not a valid job envelope; the message says why."""


@dataclass
class Envelope:
    """One job as stored in a queue: identity, data and retry policy."""

    job: str  #: registered job name (see queues.registry)
    data: dict[str, Any]
    queue: str = "default"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    max_tries: int = 1
    timeout: float | None = None
    backoff: float | list[float] | str = 0
    retry_until: float | None = None  #: unix time after which no retry is made
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """Serialise with `attempts` first and `id` second (the Lua scripts rely on it)."""
        return json.dumps(
            {
                "attempts": self.attempts,
                "id": self.id,
                "job": self.job,
                "queue": self.queue,
                "data": self.data,
                "max_tries": self.max_tries,
                "timeout": self.timeout,
                "backoff": self.backoff,
                "retry_until": self.retry_until,
                "created_at": self.created_at,
            },
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, payload: str | bytes) -> Envelope:
        """Parse a stored payload; raise `EnvelopeError` naming what is wrong."""
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"payload is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EnvelopeError("payload is not a JSON object")
        for key in ("id", "job", "data"):
            if key not in raw:
                raise EnvelopeError(f"payload has no {key!r} field")
        if not isinstance(raw["data"], dict):
            raise EnvelopeError("payload field 'data' is not an object")
        try:
            return cls(
                job=str(raw["job"]),
                data=raw["data"],
                queue=str(raw.get("queue", "default")),
                id=str(raw["id"]),
                attempts=int(raw.get("attempts", 0)),
                max_tries=int(raw.get("max_tries", 1)),
                timeout=raw.get("timeout"),
                backoff=raw.get("backoff", 0),
                retry_until=raw.get("retry_until"),
                created_at=float(raw.get("created_at", 0.0)),
            )
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"payload has a malformed field: {exc}") from None


#: Longest accepted queue name, in characters.
MAX_QUEUE_NAME_LENGTH = 200
#: Characters a queue name may use: no ':' (the Redis key separator) and no spaces.
QUEUE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
#: Names whose Redis keys would be another queue's: `routemq:queue:failed:delayed` is both
#: the delayed set of a queue "failed" and the failed list of a queue "delayed".
RESERVED_QUEUE_NAMES = frozenset({"failed"})


def validate_queue_name(name: str) -> str:
    """Return `name` if it is a safe queue name, else raise ValueError naming it.

    A safe name is 1 to MAX_QUEUE_NAME_LENGTH characters of letters, digits,
    '_', '.' and '-', and not a reserved name: so no queue's keys can be those
    of another queue (seed key layout `routemq:queue:{name}:delayed`,
    `routemq:queue:failed:{name}`).
    """
    if not name:
        raise ValueError("queue name must not be empty")
    if len(name) > MAX_QUEUE_NAME_LENGTH:
        raise ValueError(
            f"queue name {name[:40]!r}... is {len(name)} characters long; "
            f"the limit is {MAX_QUEUE_NAME_LENGTH}"
        )
    bad = sorted(set(name) - QUEUE_NAME_CHARS)
    if bad:
        raise ValueError(
            f"queue name {name!r} contains {''.join(bad)!r}: only letters, digits, "
            "'_', '.' and '-' are allowed"
        )
    if name in RESERVED_QUEUE_NAMES:
        raise ValueError(
            f"queue name {name!r} is reserved: its Redis keys would collide with "
            "the failed lists of other queues"
        )
    return name
