"""`Dedupe`: a message whose dedupe key was seen within `window` seconds is dropped, so
a QoS 1 redelivery (after a reconnect, or a device that publishes twice) dispatches once.

The key is, per choice: a payload field (`Dedupe("id")`, the JSON object's
`id`), an MQTT 5 user property (`Dedupe(user_property="msg-id")`) or a callable
taking the message. It is scoped by topic (`devices/d1/...` and `devices/d2/...`
may reuse ids: a device chooses its own). A message without a key is handled
normally. The first message claims `dedupe:{topic}:{key}` for `window` seconds
(queues/coordination.py, atomic across processes); a copy arriving meanwhile is
acknowledged without running the handler (one DEBUG line). If the handler raises,
the claim is given back, so the retried (or redelivered) message is handled.
Under the intake's outbox the claim lasts at most IN_FLIGHT_SECONDS until the
jobs the handler dispatched are stored, and `window` from then on, so a message
an outage leaves unacknowledged is handled again when it comes back.
A copy that arrives while the first is still being handled is dropped: the
first's outcome stands for both.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from core.message import Message
from core.middleware import Middleware, Next
from queues.coordination import (
    MAX_NAME_LENGTH,
    Coordinator,
    check_ttl,
    default_coordinator,
)
from queues.outbox import after_stored, recorded
from queues.unique import IN_FLIGHT_SECONDS

logger = logging.getLogger(__name__)

#: Seconds a dedupe key is remembered unless `window` says otherwise.
DEFAULT_WINDOW = 300.0


class Dedupe(Middleware):
    """Route middleware dropping repeats of a message key within `window` seconds."""

    def __init__(
        self,
        by: str | Callable[[Message], str | None] | None = None,
        *,
        user_property: str | None = None,
        window: float = DEFAULT_WINDOW,
        connection: str | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        if (by is None) == (user_property is None):
            raise TypeError("Dedupe needs exactly one of `by` (field or callable) or user_property")
        self.by, self.user_property = by, user_property
        self.window = check_ttl(window, "Dedupe window")
        self._connection = connection
        self._coordinator = coordinator

    def key(self, message: Message) -> str | None:
        """This message's dedupe key, or None when it carries none."""
        if self.user_property is not None:
            properties = message.properties
            return None if properties is None else properties.user_property(self.user_property)
        if callable(self.by):
            return self.by(message)
        body = message.json()
        value = body.get(self.by) if isinstance(body, dict) else None
        return None if value is None else str(value)

    def handle(self, message: Message, next: Next) -> Any:
        """Handle the first message of a key; drop its repeats within the window."""
        key = self.key(message)
        if key is None:
            return next(message)
        name = f"dedupe:{message.topic}:{key}"
        if len(name) > MAX_NAME_LENGTH:
            name = "dedupe:#" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        # Looked up per message (a dict lookup): a cached one would outlive a fork or a
        # `connections.reset()` and share or reuse a closed connection.
        coordinator = self._coordinator or default_coordinator(self._connection)
        token = uuid.uuid4().hex
        in_outbox = recorded() is not None
        ttl = min(self.window, IN_FLIGHT_SECONDS) if in_outbox else self.window
        if coordinator.claim(name, token, ttl) != token:
            logger.debug("message on %r dropped: key %r seen within %g s", message.topic, key,
                         self.window)  # fmt: skip
            return None
        try:
            result = next(message)
        except BaseException:
            coordinator.release(name, token)
            raise
        if ttl < self.window:
            after_stored(lambda: coordinator.extend(name, token, self.window))
        return result

    def __repr__(self) -> str:
        return f"Dedupe({self.user_property or self.by!r}, window={self.window:g})"
