"""The JSON envelope every queued job travels in, and the one place it is checked.

The envelope is plain JSON (never pickle) with `attempts` as its first key and
`id` as its second: the Redis Lua scripts rewrite the attempts count and read the
id by matching that fixed prefix, so they never decode and re-encode user data
(cjson turns `[]` into `{}` and rounds large numbers).

Every stored payload is decoded and checked here, once (`Envelope.from_json`):
its size, its nesting depth and the type and range of every field. So worker
code never meets a wrong type, and an entry that fails any check is refused with
one line naming the field (`EnvelopeError`). `dispatch()` applies the same
checks (`check_fields`) before it queues anything, so a dispatched job is always
one a worker accepts.

Decoding limits: Python's `json` decoder is recursive in C and raises
RecursionError past the interpreter's recursion limit (about 1000 levels); that
is caught and reported as too deep, and shallower nesting is measured after
decoding against MAX_JSON_DEPTH.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from queues.backoff import validate_backoff

#: Exact text every envelope starts with; the Lua scripts match it.
ENVELOPE_PREFIX = '{"attempts":'
#: Largest stored payload a worker decodes, in bytes of UTF-8 (1 MiB). Larger
#: entries are failed unread; dispatch refuses jobs whose envelope is larger.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Deepest nesting of JSON arrays and objects in a payload, in levels; the
#: envelope object is level 1 and its `data` object level 2.
MAX_JSON_DEPTH = 64
#: Longest job id, in characters.
MAX_JOB_ID_LENGTH = 200
#: A job id: printable ASCII without '"' or '\\', so the Redis scripts read it
#: from the envelope prefix exactly as Python does (see redis_scripts/include/envelope.lua).
JOB_ID_PATTERN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: Longest per-attempt `timeout` a job may declare, in seconds (7 days).
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
#: Longest delay before a job becomes due, in seconds (365 days). A dispatch or
#: release asking for more is capped to this; backoff values above it are refused.
MAX_DELAY_SECONDS = 365 * 24 * 3600.0


class EnvelopeError(ValueError):
    """A stored payload is not a valid job envelope; the message says why.

    `job` and `data` are set when those two fields were valid, so the worker
    can still tell the job's `failed()` hook why the entry was refused.
    """

    def __init__(
        self, message: str, job: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.job = job
        self.data = data


def utf8_size(text: str | bytes) -> int:
    """Size of `text` in UTF-8 bytes (bytes are counted as they are)."""
    if isinstance(text, bytes):
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True if `value` nests arrays/objects more than `limit` levels deep (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def decode_json(
    text: str | bytes, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES
) -> Any:
    """Decode JSON within the size and depth limits; `EnvelopeError` naming `what` otherwise.

    Never raises RecursionError or MemoryError-prone work beyond `max_bytes`:
    an oversized text is refused before it is decoded.
    """
    # Every character is 1 to 4 UTF-8 bytes: only measure when it could matter.
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and utf8_size(text) > max_bytes):
        raise EnvelopeError(
            f"{what} is {utf8_size(text)} bytes; the limit is {max_bytes} (MAX_PAYLOAD_BYTES)"
        )
    try:
        value = json.loads(text)
    except RecursionError:
        raise EnvelopeError(
            f"{what} nests deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"{what} is not valid JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest deeper than it: skip the walk.
    if isinstance(text, bytes):
        brackets = text.count(b"[") + text.count(b"{")
    else:
        brackets = text.count("[") + text.count("{")
    if brackets > MAX_JSON_DEPTH and json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise EnvelopeError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_field(value: Any, limit: int | None = None) -> str | None:
    if not isinstance(value, str) or not value:
        return "a non-empty string"
    if limit is not None and len(value) > limit:
        return f"a string of at most {limit} characters"
    return None


def _id_field(value: Any) -> str | None:
    problem = _text_field(value, MAX_JOB_ID_LENGTH)
    if problem is None and not JOB_ID_PATTERN.fullmatch(value):
        return "printable ASCII without spaces, quotes or backslashes"
    return problem


def _count_field(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"an integer >= {minimum}"
        return None

    return check


def _timeout_field(value: Any) -> str | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        return f"null or seconds > 0 and <= {MAX_TIMEOUT_SECONDS:g} (MAX_TIMEOUT_SECONDS)"
    return None


def _time_field(value: Any) -> str | None:
    if value is None or (_is_number(value) and math.isfinite(value)):
        return None
    return "null or a finite unix time"


def _backoff_field(value: Any) -> str | None:
    try:
        validate_backoff(value)
    except ValueError:
        return "seconds >= 0, a non-empty list of them or 'exponential'"
    values = value if isinstance(value, list) else [value]
    if not isinstance(value, str) and any(v > MAX_DELAY_SECONDS for v in values):
        return f"at most {MAX_DELAY_SECONDS:g} seconds per step (MAX_DELAY_SECONDS)"
    return None


#: field -> (required, check returning what the value must be, or None if it is fine)
_FIELDS: dict[str, tuple[bool, Callable[[Any], str | None]]] = {
    "attempts": (False, _count_field(0)),
    "id": (True, _id_field),
    "job": (True, _text_field),
    "queue": (False, lambda v: None if isinstance(v, str) else "a string"),
    "data": (True, lambda v: None if isinstance(v, dict) else "an object"),
    "max_tries": (False, _count_field(1)),
    "timeout": (False, _timeout_field),
    "backoff": (False, _backoff_field),
    "retry_until": (False, _time_field),
    "created_at": (False, lambda v: None if v is not None and not _time_field(v) else "a number"),
    "unique": (False, lambda v: None if v is None or not _text_field(v) else "null or a string"),
}


def check_fields(raw: Mapping[str, Any]) -> None:
    """Raise `EnvelopeError` naming the first missing or ill-typed envelope field.

    The one set of rules for what a worker runs: `from_json` applies it to every
    stored payload and `dispatch()` to every new envelope.
    """
    job = raw.get("job") if not _text_field(raw.get("job")) else None
    data = raw.get("data") if isinstance(raw.get("data"), dict) else None
    for name, (required, check) in _FIELDS.items():
        if name not in raw:
            if required:
                raise EnvelopeError(f"payload has no {name!r} field", job, data)
            continue
        expected = check(raw[name])
        if expected is not None:
            raise EnvelopeError(
                f"payload field {name!r} is not {expected} (got {_short(raw[name])})", job, data
            )


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
    #: the unique-job lock this job holds until it finishes (queues/unique.py), or None
    unique: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields in stored order: `attempts` first, `id` second (the Lua scripts need it).

        `unique` is written only when set, so other envelopes keep their form."""
        fields = {
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
        }
        if self.unique is not None:
            fields["unique"] = self.unique
        return fields

    def to_json(self) -> str:
        """Serialise with `attempts` first and `id` second (the Lua scripts rely on it)."""
        return json.dumps(
            self.as_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )

    @classmethod
    def from_json(cls, payload: str | bytes) -> Envelope:
        """Decode and check a stored payload; raise `EnvelopeError` naming what is wrong.

        Checks, in order: size (MAX_PAYLOAD_BYTES), JSON syntax, nesting
        (MAX_JSON_DEPTH), then every field (`check_fields`). A returned
        envelope's fields all have the types the dataclass declares.
        """
        raw = decode_json(payload)
        if not isinstance(raw, dict):
            raise EnvelopeError("payload is not a JSON object")
        check_fields(raw)
        backoff = raw.get("backoff", 0)
        return cls(
            job=raw["job"],
            data=raw["data"],
            queue=raw.get("queue", "default"),
            id=raw["id"],
            attempts=raw.get("attempts", 0),
            max_tries=raw.get("max_tries", 1),
            timeout=None if raw.get("timeout") is None else float(raw["timeout"]),
            backoff=[float(v) for v in backoff] if isinstance(backoff, list) else backoff,
            retry_until=None if raw.get("retry_until") is None else float(raw["retry_until"]),
            created_at=float(raw.get("created_at", 0.0)),
            unique=raw.get("unique"),
        )


#: Longest accepted queue name for new jobs, in characters.
MAX_QUEUE_NAME_LENGTH = 200
#: Characters a queue name may use: no ':' (the Redis key separator) and no spaces.
QUEUE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
#: Names whose Redis keys would be another queue's: `routemq:queue:failed:delayed` is both
#: the delayed set of a queue "failed" and the failed list of a queue "delayed".
RESERVED_QUEUE_NAMES = frozenset({"failed"})


def colliding_queue_name(name: str) -> str | None:
    """Why `name` can never be read as a queue (its keys are another's), or None.

    `failed:x` is the failed list of `x`, `x:reserved` / `x:delayed` are keys
    of `x`, and every other ':' name may be a bookkeeping key; an empty name
    or `failed` has no keys of its own.
    """
    if not name:
        return "queue name must not be empty"
    if ":" in name or name in RESERVED_QUEUE_NAMES:
        return (
            f"queue name {name!r} names another queue's keys (like failed:NAME, NAME:reserved "
            "or NAME:delayed): queue names must not contain ':' or be 'failed'"
        )
    return None


def validate_queue_name(name: str, *, existing: bool = False) -> str:
    """Return `name` if it is a safe queue name, else raise ValueError naming it.

    The one rule for every place a queue name enters (dispatch, `--queue` of the
    worker, status, retry, migrate, the drivers). Any name is refused whose keys
    would be another queue's (`colliding_queue_name`). A queue that gets NEW jobs
    (`existing=False`) must also be 1 to MAX_QUEUE_NAME_LENGTH characters of
    letters, digits, '_', '.' and '-'; a name only read (`existing=True`) may
    use other characters, so queues created before names were checked
    (`reports/daily`) stay readable and drainable.
    """
    problem = colliding_queue_name(name)
    if problem is not None:
        raise ValueError(problem)
    if existing:
        return name
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
    return name


def checked_delay(delay: Any, owner: str = "delay") -> float:
    """`delay` as seconds in [0, MAX_DELAY_SECONDS]; ValueError naming `owner` if not finite.

    Negative delays mean "now" (0); longer ones are capped at MAX_DELAY_SECONDS,
    so every due time fits every driver's clock (SQL DATETIME, Redis scores).
    """
    if not _is_number(delay) or not math.isfinite(delay):
        raise ValueError(f"{owner} must be a finite number of seconds, got {_short(delay)}")
    return min(max(float(delay), 0.0), MAX_DELAY_SECONDS)
