"""Errors that cross layers without the layers importing each other."""

from __future__ import annotations


class BackendUnavailable(RuntimeError):
    """A backing service (Redis, SQL) cannot be reached or is refusing work for now.

    Raised by the queue drivers for connection failures, timeouts and lock waits:
    conditions of the infrastructure, not of the job or the message. The MQTT
    intake treats it as backpressure (the message stays unacknowledged and is
    retried until the backend is back), never as a reason to dead-letter.
    """


def caused_by_outage(exc: BaseException) -> bool:
    """True if `exc`, or an exception it was raised from or during, is `BackendUnavailable`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BackendUnavailable):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
