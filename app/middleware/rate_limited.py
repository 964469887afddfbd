"""`RateLimited`: at most `limit` messages of a route (per key) in any `per` seconds,
counted across every process of the app (queues/coordination.py).

Over the limit the message is, by choice:

* dropped (the default, `dead_letter=False`): acknowledged, the handler is not
  called, one DEBUG line is logged. Right for telemetry a device repeats anyway.
* dead-lettered (`dead_letter=True`): `RateLimitExceeded` (a `PayloadError`) is
  raised, so the message goes to the dead-letter topic at once, never retried.

It is never retried: a message held back until the window has room would stall
every later message of its topic (they are handled in order).

`key` is a string, or a callable taking the message (`lambda m:
m.params["device_id"]` limits each device on its own). The count lives on the
store of `connection` (QUEUE_CONNECTION by default: Redis, or the SQL table);
the same names counted by the job middleware `queues.job_middleware.RateLimited`
are kept apart (`route:` and `job:` prefixes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.message import Message, PayloadError
from core.middleware import Middleware, Next
from queues.coordination import Coordinator, check_limit, default_coordinator

logger = logging.getLogger(__name__)


class RateLimitExceeded(PayloadError):
    """A message was over its route's rate limit and `dead_letter=True` was chosen."""


class RateLimited(Middleware):
    """Route middleware: at most `limit` messages per `per` seconds per key (see module)."""

    def __init__(
        self,
        key: str | Callable[[Message], str],
        limit: int,
        per: float,
        *,
        dead_letter: bool = False,
        connection: str | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        check_limit(limit, per)
        self.key, self.limit, self.per = key, limit, float(per)
        self.dead_letter = dead_letter
        self._connection = connection
        self._coordinator = coordinator

    def handle(self, message: Message, next: Next) -> Any:
        """Run the rest of the chain if the window has room; else drop or dead-letter."""
        key = self.key(message) if callable(self.key) else self.key
        name = f"route:{key}"
        # Looked up per message (a dict lookup): a cached one would outlive a fork or a
        # `connections.reset()` and share or reuse a closed connection.
        store = self._coordinator or default_coordinator(self._connection)
        wait = store.take(name, self.limit, self.per)
        if wait == 0:
            return next(message)
        if self.dead_letter:
            raise RateLimitExceeded(
                f"rate limit {key!r} ({self.limit} per {self.per:g} s) exceeded on "
                f"{message.topic!r}"
            )
        logger.debug("message on %r dropped: rate limit %r is full", message.topic, key)
        return None

    def __repr__(self) -> str:
        return f"RateLimited({self.key!r}, {self.limit}, {self.per:g})"
