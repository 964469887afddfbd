"""Full-jitter exponential backoff: the one delay rule of every retry loop that sleeps.

Retry number `n` (1-based) waits a random time in `[0, min(cap, base * 2**(n-1))]`
("full jitter"): processes that failed together do not retry in lockstep, and no
wait exceeds `cap`. `Backoff` counts consecutive failures for a loop that retries
until something succeeds (a supervisor restarting a child, a worker that cannot
reach its backend) and starts over after `reset()`.

Users: the job retry policy `"exponential"` (queues/backoff.py), deadlock
retries of the database driver, Redis connection retries, MQTT handler retries,
a worker's pause after a failed pop, and the supervisor's restarts.
"""

from __future__ import annotations

import random

#: Largest exponent applied to `base`, so `2**n` stays a finite float for any attempt.
MAX_DOUBLINGS = 64


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based; below 1 counts as 1).

    Uniform in `[0, min(cap, base * 2**(attempt-1))]`; never negative, never above `cap`.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, MAX_DOUBLINGS))
    return (rng or random).uniform(0.0, max(0.0, ceiling))


class Backoff:
    """Consecutive failures of one retry loop and the full-jitter delay after each.

    `next_delay()` counts a failure and returns the wait before the next try;
    `reset()` after a success makes the next failure wait like the first.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base < 0 or cap < 0:
            raise ValueError(f"backoff base and cap must be seconds >= 0, got {base}, {cap}")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """Count one more failure; return the seconds to wait before trying again."""
        self.failures += 1
        return full_jitter(self.failures, self.base, self.cap, self._rng)

    def reset(self) -> None:
        """Forget the failures: the next delay is drawn as for a first failure."""
        self.failures = 0
