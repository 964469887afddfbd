"""The process-wide Redis client, and the translation of Redis failures to `QueueError`.

`get_redis(settings)` builds one client per process from REDIS_HOST/PORT/DB/
PASSWORD/TLS. The client checks a pooled connection's health before reuse and
retries a command on connection errors with a short backoff, so a worker keeps
working after a Redis restart without being restarted itself. `reset()` drops
the cached client (call it in a child after fork so no socket is shared).

`redis_errors(client)` turns a dead or refusing server into one
`QueueError("Redis at host:port is unreachable: ...")`; the password never
appears in any message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings
from queues.drivers.base import QueueError

#: Seconds to wait for the TCP (and TLS) connection to Redis before giving up.
CONNECT_TIMEOUT = 2.0
#: Seconds to wait for any reply. Blocking pops wait in slices shorter than this.
SOCKET_TIMEOUT = 10.0
#: Seconds a pooled connection may sit idle before it is PINGed before reuse.
HEALTH_CHECK_INTERVAL = 15
#: Times a command is retried after a connection error (Redis restarting).
CONNECTION_RETRIES = 3
#: Backoff between those retries: first wait and cap, in seconds.
RETRY_BACKOFF_BASE = 0.05
RETRY_BACKOFF_CAP = 0.5

_lock = threading.Lock()
_client: redis.Redis | None = None


def build_redis(settings: Settings) -> redis.Redis:
    """A new Redis client for these settings (strings decoded as UTF-8, bad bytes replaced).

    A command whose connection broke is retried on a fresh connection up to
    `CONNECTION_RETRIES` times. A retried write whose reply was lost may run
    twice (a pushed job duplicated): jobs are at-least-once, never lost. A
    retried pop does not reserve a second job, and a retried ack, release,
    extend or fail reports its first run's success instead of False: their
    scripts keep a receipt per call (see `queues.drivers.redis.POP_RECEIPT_TTL`
    and `SETTLE_RECEIPT_TTL`, which must outlast CONNECTION_RETRIES x
    (SOCKET_TIMEOUT + RETRY_BACKOFF_CAP)).
    """
    retry = Retry(
        ExponentialBackoff(cap=RETRY_BACKOFF_CAP, base=RETRY_BACKOFF_BASE), CONNECTION_RETRIES
    )
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        ssl=settings.redis_tls,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=retry,
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        decode_responses=True,
        # A hand-written entry that is not UTF-8 must reach the worker (which
        # fails it), not break every reply that carries it.
        encoding_errors="replace",
    )


def get_redis(settings: Settings) -> redis.Redis:
    """The process-wide Redis client, built on first use from `settings`."""
    global _client
    with _lock:
        if _client is None:
            _client = build_redis(settings)
        return _client


def reset() -> None:
    """Forget the cached client; the next `get_redis` builds a new one (use after fork)."""
    global _client
    with _lock:
        _client = None


def address(client: redis.Redis) -> str:
    """`host:port` (or the unix socket path) the client talks to, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def redis_errors(client: redis.Redis) -> Iterator[None]:
    """Re-raise Redis failures inside the block as `QueueError` naming the server."""
    try:
        yield
    except redis.exceptions.AuthenticationError:
        raise QueueError(
            f"Redis at {address(client)} rejected the credentials: check REDIS_PASSWORD"
        ) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise QueueError(f"Redis at {address(client)} is unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise QueueError(f"Redis at {address(client)} failed: {exc}") from exc
