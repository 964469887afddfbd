"""Stand-ins for the queues while a test runs: where `dispatch()` sends jobs instead.

`fake_queue()` (queues/fake.py) records dispatched jobs without storing or
running them; `sync_queue()` (queues/sync.py) runs them at once. Each installs a
`Substitute` for the whole process (every thread, every connection) until its
`with` block ends; the innermost one wins. Production code never installs one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Substitute(Protocol):
    """What takes a connection's jobs while substituted."""

    def target(self, connection: Any) -> Any:
        """The job sink (or the sync queue) standing in for `connection` (a name, a driver,
        or None for QUEUE_CONNECTION)."""


_lock = threading.Lock()
_stack: list[Substitute] = []


def current() -> Substitute | None:
    """The innermost substitute in force, or None (the real queues)."""
    return _stack[-1] if _stack else None


@contextmanager
def substituted(substitute: Substitute) -> Iterator[None]:
    """Send every `dispatch()` of the process to `substitute` while inside."""
    with _lock:
        _stack.append(substitute)
    try:
        yield
    finally:
        with _lock:
            _stack.remove(substitute)
