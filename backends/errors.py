"""`BackendError`: the one error a backing service (Redis, the SQL database) raises.

Its message names the server (`host:port` or the SQLite file), never a
password. `queues.drivers.base.QueueError` is the same class, so callers catch
either name. No third-party import here: the queue's core types import this.
"""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backing service failed or is unreachable; the message names the server."""
