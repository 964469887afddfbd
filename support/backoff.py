"""Jittered exponential backoff: the one delay rule of every retry loop that sleeps."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based): uniform in
    `[0, min(cap, base * 2**(attempt-1))]` ("full jitter"), so many clients failing
    together do not retry in lockstep."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 64))
    return (rng or random).uniform(0.0, ceiling)
