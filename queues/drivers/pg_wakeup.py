"""PostgreSQL LISTEN/NOTIFY wake-ups for idle workers of the database queue.

The sending side is SQL inside the driver's own statements: a push, a bulk
insert or a release that makes a job available runs `pg_notify(channel, delay)`
in the SAME transaction (`notifying` wraps the statement in a CTE: no extra
round trip), so the notification is delivered exactly when the commit makes the
row visible, and never for a rolled-back change. The payload is the job's delay
in microseconds ("0": available now).

The receiving side is `PostgresWaker`: one dedicated autocommit connection per
worker process (outside the engine's pool) that LISTENs on the channel of each
queue the worker takes. An idle worker's blocking `pop` waits on it instead of
polling: it returns as soon as a notification says a job is available now, or
when the earliest announced delayed job comes due, or after the caller's
timeout (the bounded fallback poll that also finds expired leases and delayed
jobs pushed before the worker started). An idle worker sends nothing to the
server while it waits.

Channels: `routemq:queue:{name}` (as Redis names the queue's list), or for a
name too long for PostgreSQL's 63-byte identifiers `routemq:queue:md5:{md5 of
the name}`. `LISTEN "routemq:queue:default"` in psql shows the traffic.

If the LISTEN connection fails (server restart, network partition) the waker
logs one WARNING, sleeps the caller's fallback interval like a polling worker
and reconnects with backoff; no job is lost because the claim, not the
notification, is the truth.

Issue 15 adds a generic wake-up interface in queues/drivers/wakeup.py; this
class keeps the same two verbs (`wait(queues, timeout)` on the idle path and a
notification on commit) so the integrator can plug it in there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine

from support.backoff import Backoff

#: Prefix of every wake-up channel (the Redis key prefix of a queue, for recognition).
CHANNEL_PREFIX = "routemq:queue:"

#: PostgreSQL's longest identifier in bytes (NAMEDATALEN - 1): a channel's limit.
MAX_CHANNEL_BYTES = 63

#: Seconds between two reads of notifications that piled up while the worker was
#: busy: unread notifications would sit in the socket and, once it is full, hold
#: back the server's notification queue.
DRAIN_INTERVAL_SECONDS = 1.0

#: Seconds the LISTEN connection waits for the server to answer a connect.
CONNECT_TIMEOUT_SECONDS = 5

#: TCP keepalive of the LISTEN connection (seconds idle, between probes, probes):
#: a silently cut link is noticed in about half a minute, not hours.
KEEPALIVE = (10, 5, 3)

#: Seconds of the first and the largest pause before reconnecting a failed LISTEN.
RECONNECT_BASE_SECONDS, RECONNECT_CAP_SECONDS = 0.2, 10.0

log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def channel_for(queue: str) -> str:
    """The NOTIFY channel of `queue` (hashed when the name would exceed 63 bytes)."""
    channel = CHANNEL_PREFIX + queue
    if len(channel.encode()) <= MAX_CHANNEL_BYTES:
        return channel
    return CHANNEL_PREFIX + "md5:" + hashlib.md5(queue.encode()).hexdigest()


def notifying(statement: str) -> str:
    """`statement` (an INSERT or UPDATE without RETURNING) made to notify on commit.

    The result has one row per changed row (so its row count is the statement's),
    and needs two more parameters: `:channel` (`channel_for(queue)`) and
    `:delay` (the delay in microseconds, which the statements already bind).
    PostgreSQL folds identical notifications of one transaction into one.
    """
    return (
        f"WITH changed AS ({statement} RETURNING 1) "
        "SELECT pg_notify(:channel, CAST(:delay AS TEXT)) FROM changed"
    )


class PostgresWaker:
    """Waits for NOTIFY on the channels of a worker's queues (one connection per process).

    Not thread-safe: one worker loop uses it. Opens its connection on first use
    and again after a fork (the parent's socket is never shared).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None
        self._pid = 0
        self._channels: set[str] = set()
        self._next_due: float | None = None  #: monotonic time an announced delayed job is due
        self._last_drain = 0.0
        self._backoff = Backoff(RECONNECT_BASE_SECONDS, RECONNECT_CAP_SECONDS)
        self._retry_at = 0.0
        self._failing = False

    # -- the idle path ------------------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a job of `queues` may be available, or after `timeout` seconds.

        The first call for a queue subscribes and returns at once, so the caller
        claims again: a job pushed before the LISTEN took effect is not missed.
        """
        deadline = time.monotonic() + timeout
        connection = self._listening(queues)
        if connection is None:  # just subscribed, or the connection is down
            if not self._failing:
                return
            time.sleep(max(0.0, min(timeout, self._retry_at - time.monotonic())))
            return
        while True:
            now = time.monotonic()
            if self._next_due is not None and self._next_due <= now:
                self._next_due = None
                return
            limit = min(deadline, self._next_due or deadline) - now
            if limit <= 0:
                return
            try:
                woke = self._read(connection, limit)
            except Exception as exc:  # psycopg.Error, OSError: the link is gone
                self._lost(exc)
                return
            if woke:
                return

    def drain(self) -> None:
        """Read notifications that arrived while the worker was busy (at most once a second).

        Costs no round trip: a non-blocking read of what the socket already holds.
        """
        now = time.monotonic()
        if self._connection is None or now - self._last_drain < DRAIN_INTERVAL_SECONDS:
            return
        self._last_drain = now
        try:
            self._read(self._connection, 0.0)
        except Exception as exc:
            self._lost(exc)

    def close(self) -> None:
        """Close the LISTEN connection (only this process's own)."""
        connection, self._connection = self._connection, None
        self._channels.clear()
        if connection is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # already broken: nothing to release
                connection.close()

    # -- internals ------------------------------------------------------------

    def _read(self, connection: Any, limit: float) -> bool:
        """Consume notifications for up to `limit` seconds; True when a job is available now."""
        available = False
        stop = 1 if limit > 0 else None
        for notify in connection.notifies(timeout=limit, stop_after=stop):
            try:
                delay = int(notify.payload) / 1_000_000
            except ValueError:
                delay = 0.0
            if delay <= 0:
                available = True
                continue
            due = time.monotonic() + delay
            if self._next_due is None or due < self._next_due:
                self._next_due = due
        return available

    def _listening(self, queues: Sequence[str]) -> Any:
        """The connection LISTENing on every queue's channel; None if it just subscribed."""
        if self._pid != os.getpid():
            self._connection, self._channels, self._pid = None, set(), os.getpid()
        wanted = {channel_for(queue) for queue in queues}
        if self._connection is not None and wanted <= self._channels:
            return self._connection
        if self._connection is None and time.monotonic() < self._retry_at:
            return None
        try:
            if self._connection is None:
                self._connection = self._connect()
            for channel in sorted(wanted - self._channels):
                quoted = '"' + channel.replace('"', '""') + '"'
                self._connection.execute(f"LISTEN {quoted}")
                self._channels.add(channel)
        except Exception as exc:
            self._lost(exc)
            return None
        if self._failing:
            log.warning("wake-ups from %s restored", self._server())
        self._failing = False
        self._backoff.reset()
        return None

    def _connect(self) -> Any:
        """A new autocommit connection with SQLAlchemy's arguments for the engine's URL."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        idle, interval, count = KEEPALIVE
        cparams = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": count,
            **cparams,
            "autocommit": True,
        }
        return self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams)

    def _lost(self, exc: BaseException) -> None:
        """Forget a failed connection; reconnect after a backoff pause."""
        if not self._failing:
            log.warning(
                "wake-ups from %s lost (%s): idle workers poll until it is back",
                self._server(),
                exc,
            )
        self._failing = True
        broken, self._connection = self._connection, None
        self._channels.clear()
        if broken is not None:
            with contextlib.suppress(Exception):
                broken.close()
        self._retry_at = time.monotonic() + self._backoff.next_delay()

    def _server(self) -> str:
        url = self.engine.url
        return f"{url.host or 'localhost'}:{url.port or 5432}"
