"""Delay before a failed attempt is retried.

A policy is a number of seconds, a list of seconds per attempt (the last value
repeats), or `"exponential"`: a random delay in `[0, min(cap, base * 2**(n-1))]`
("full jitter", so many jobs failing together do not retry in lockstep; drawn by
support/backoff.py, the framework's one backoff rule).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from support.backoff import full_jitter

#: Seconds of the first exponential backoff step.
EXPONENTIAL_BASE = 1.0
#: Largest exponential backoff, seconds.
EXPONENTIAL_CAP = 300.0
#: The only named policy.
EXPONENTIAL = "exponential"

BackoffPolicy = float | int | Sequence[float] | str


def validate_backoff(policy: object, owner: str = "backoff") -> None:
    """Raise ValueError naming `owner` unless `policy` is a valid backoff policy."""
    if isinstance(policy, str):
        if policy != EXPONENTIAL:
            raise ValueError(f"{owner} must be seconds, a list of seconds or 'exponential'")
        return
    values: list[object] = list(policy) if isinstance(policy, list | tuple) else [policy]
    if not values:
        raise ValueError(f"{owner} list must not be empty")
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{owner} values must be finite seconds >= 0, got {value!r}")


def backoff_delay(policy: BackoffPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retrying after failed attempt number `attempt` (1-based)."""
    attempt = max(1, attempt)
    if isinstance(policy, str):
        return full_jitter(attempt, EXPONENTIAL_BASE, EXPONENTIAL_CAP, rng)
    if isinstance(policy, int | float):
        return float(policy)
    steps = list(policy)
    if not steps:
        return 0.0
    return float(steps[min(attempt, len(steps)) - 1])


def parse_backoff(text: str) -> float | list[float] | str:
    """Parse `--backoff`: `5`, `1,5,30` or `exponential`; ValueError naming the flag."""
    stripped = text.strip()
    if stripped.lower() == EXPONENTIAL:
        return EXPONENTIAL
    try:
        values = [float(part) for part in stripped.split(",")]
    except ValueError:
        raise ValueError(
            f"--backoff must be seconds, a list like 1,5,30 or 'exponential', got {text!r}"
        ) from None
    validate_backoff(values, "--backoff")
    return values[0] if len(values) == 1 else values
