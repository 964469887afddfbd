"""The process-wide Redis client, and the translation of Redis failures to `BackendError`.

`get_redis(settings)` builds one client per process from REDIS_HOST/PORT/DB
(or the master REDIS_SENTINELS name, or a REDIS_CLUSTER), the credentials
(REDIS_USERNAME for an ACL user, REDIS_PASSWORD) and TLS
(`tls_options`). The client checks a pooled connection's health before reuse and
retries a command on connection errors with a short backoff, so a worker keeps
working after a Redis restart without being restarted itself. `reset()` drops
the cached client (call it in a child after fork so no socket is shared).

`redis_errors(client)` turns a dead or refusing server into one
`BackendError("Redis at host:port is unreachable: ...")`; the password never
appears in any message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import AbstractBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from backends.errors import BackendError, BackendUnavailableError
from config.settings import Settings
from support.backoff import full_jitter

#: Seconds to wait for the TCP (and TLS) connection to Redis before giving up.
CONNECT_TIMEOUT = 2.0
#: Seconds to wait for any reply. Blocking pops wait in slices shorter than this.
SOCKET_TIMEOUT = 10.0
#: Seconds a pooled connection may sit idle before it is PINGed before reuse.
HEALTH_CHECK_INTERVAL = 15
#: Times a command is retried after a connection error (Redis restarting).
CONNECTION_RETRIES = 3
#: Error replies of a server that cannot take writes for now (out of memory, a failing
#: snapshot, a replica, loading, a busy script, a cluster in failover): outages, not bugs.
UNAVAILABLE_REPLIES = ("OOM", "MISCONF", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
                       "CLUSTERDOWN", "NOREPLICAS")  # fmt: skip
#: Seconds: ceiling of the jittered pause before the first of those retries (doubles per retry).
RETRY_BACKOFF_BASE = 0.1
#: Seconds: the longest pause between two of those retries.
RETRY_BACKOFF_CAP = 0.5

_lock = threading.Lock()
_client: redis.Redis | None = None


def build_redis(settings: Settings) -> redis.Redis:
    """A new Redis client for these settings (strings decoded as UTF-8, bad bytes replaced).

    One server (REDIS_HOST/PORT), the master the sentinels name
    (REDIS_SENTINELS + REDIS_SENTINEL_MASTER: a `redis.sentinel.Sentinel`
    `master_for` client, which asks the sentinels again after a failover), or a
    Redis Cluster (REDIS_CLUSTER: a `redis.cluster.RedisCluster` seeded by
    REDIS_HOST/PORT, which follows MOVED replies and a promoted replica; it
    offers the commands the queue drivers use, so it is returned under the
    same type).

    A command whose connection broke is retried on a fresh connection up to
    `CONNECTION_RETRIES` times. A retried write whose reply was lost may run
    twice (a pushed job duplicated): jobs are at-least-once, never lost. A
    retried pop does not reserve a second job, and a retried ack, release,
    extend or fail reports its first run's success instead of False: their
    scripts keep a receipt per call (see `queues.drivers.redis.POP_RECEIPT_TTL`
    and `SETTLE_RECEIPT_TTL`, which must outlast CONNECTION_RETRIES x
    (SOCKET_TIMEOUT + RETRY_BACKOFF_CAP)).
    """
    retry = Retry(JitteredBackoff(), CONNECTION_RETRIES)
    options: dict[str, Any] = {
        "username": settings.redis_username,
        "password": settings.redis_password,
        **tls_options(settings),
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": retry,
        "decode_responses": True,
        # A hand-written entry that is not UTF-8 must reach the worker (which
        # fails it), not break every reply that carries it.
        "encoding_errors": "replace",
    }
    if settings.redis_cluster:
        cluster = RedisCluster(host=settings.redis_host, port=settings.redis_port, **options)
        return cast(redis.Redis, cluster)
    options["retry_on_error"] = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels),
            sentinel_kwargs={
                "socket_timeout": CONNECT_TIMEOUT,
                "socket_connect_timeout": CONNECT_TIMEOUT,
            },
        )
        master = settings.redis_sentinel_master or ""
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            master, db=settings.redis_db, **options
        )
        return cast(redis.Redis, client)
    return redis.Redis(
        host=settings.redis_host, port=settings.redis_port, db=settings.redis_db, **options
    )


def socket_timeout_of(client: redis.Redis) -> float | None:
    """The reply timeout (seconds) the client's connections use, if any."""
    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    timeout = kwargs.get("socket_timeout")
    return None if timeout is None else float(timeout)


def is_cluster(client: object) -> bool:
    """True if `client` is a Redis Cluster client (keys need one hash tag per queue)."""
    return isinstance(client, RedisCluster)


class JitteredBackoff(AbstractBackoff):
    """redis-py's pause between connection retries, drawn by support/backoff.py (full jitter)."""

    def compute(self, failures: int) -> float:
        """Seconds before retry number `failures` (1-based), under `RETRY_BACKOFF_CAP`."""
        return full_jitter(failures, RETRY_BACKOFF_BASE, RETRY_BACKOFF_CAP)


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py keyword arguments for TLS: none when it is off.

    With TLS on, the server's certificate must chain to the system's CAs or to
    REDIS_TLS_CA and name REDIS_HOST; REDIS_TLS_CERT/KEY add a client certificate.
    """
    if not settings.redis_tls_enabled:
        return {}
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": settings.redis_tls_ca,
        "ssl_certfile": settings.redis_tls_cert,
        "ssl_keyfile": settings.redis_tls_key,
    }


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
    """`host:port` (or the unix socket path) the client talks to, for messages.

    For a Sentinel client: the master's name and the sentinels; for a cluster
    client: the nodes it knows.
    """
    if isinstance(client, RedisCluster):
        nodes = ",".join(sorted(node.name for node in client.get_nodes()))
        return f"cluster {nodes}"
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinels = ",".join(
            f"{s.connection_pool.connection_kwargs.get('host')}:"
            f"{s.connection_pool.connection_kwargs.get('port')}"
            for s in pool.sentinel_manager.sentinels
        )
        return f"master {pool.service_name!r} of sentinels {sentinels}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def redis_errors(client: redis.Redis) -> Iterator[None]:
    """Re-raise Redis failures inside the block as `BackendError` naming the server.

    A server that cannot be reached, times out, refuses our credentials or
    cannot take writes for now raises `BackendUnavailableError` (an outage:
    retry later); any other error reply raises a plain `BackendError`.
    """
    try:
        yield
    except redis.exceptions.AuthenticationError:
        raise BackendUnavailableError(
            f"Redis at {address(client)} rejected the credentials: "
            "check REDIS_USERNAME and REDIS_PASSWORD"
        ) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailableError(f"Redis at {address(client)} is unreachable: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith(UNAVAILABLE_REPLIES):
            raise BackendUnavailableError(f"Redis at {address(client)} refused: {exc}") from exc
        raise BackendError(f"Redis at {address(client)} failed: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BackendError(f"Redis at {address(client)} failed: {exc}") from exc
