"""`BackendError`: the one error a backing service (Redis, the SQL database) raises.

Its message names the server (`host:port` or the SQLite file), never a
password. `queues.drivers.base.QueueError` is the same class, so callers catch
either name. `BackendUnavailableError` marks the failures that are outages (retry later).
No third-party import here: the queue's core types import this.
"""

from __future__ import annotations

from support.errors import BackendUnavailable


class BackendError(RuntimeError):
    """A backing service failed or is unreachable; the message names the server."""


class BackendUnavailableError(BackendError, BackendUnavailable):
    """The backing service cannot take work now: unreachable, timing out, locked, refusing.

    A condition of the infrastructure, not of the job or message at hand: callers
    hold their work and retry (the MQTT intake keeps the message unacknowledged)
    instead of failing it. `queues.drivers.base.QueueUnavailable` is this class.
    """
