"""Build queue drivers and the failed store from settings, once per process.

`get_driver("redis" | "database" | None)` returns the process-wide driver of that
connection (None means QUEUE_CONNECTION); `get_publisher()` the MQTT connection
jobs publish through (`Job.publish`), opened on its first publish. Worker
processes started with `--workers N` call `reset()` after fork so that no
socket is shared across processes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import Settings, load_settings
from queues.drivers.base import FailedStore, QueueDriver
from queues.failed_stores import FailedStores

#: Kinds of failed store: the Redis failed lists and the SQL table.
FAILED_STORE_KINDS = ("redis", "database")

if TYPE_CHECKING:
    from backends.mqtt_publisher import MqttPublisher

_lock = threading.Lock()
_settings: Settings | None = None
_drivers: dict[str, QueueDriver] = {}
_failed_store: FailedStore | None = None


def configure(settings: Settings) -> None:
    """Use these settings for every driver built from now on (drops cached ones)."""
    global _settings
    reset()
    _settings = settings


@contextmanager
def configured(settings: Settings) -> Iterator[Settings]:
    """Use `settings` while inside (drivers and engines built anew from them), then go
    back to the settings in force before, with fresh connections."""
    global _settings
    previous = _settings
    configure(settings)
    try:
        yield settings
    finally:
        reset()
        _settings = previous


def current_settings() -> Settings:
    """The configured settings, loading them from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def database_enabled(settings: Settings) -> bool:
    """True when a database server is configured (MySQL/MariaDB, PostgreSQL or DB_URL).

    The embedded SQLite database is always usable for the database queue, but
    failed Redis jobs go to SQL only when a real database is enabled (the seed's
    "Monitor Both": otherwise they stay in `routemq:queue:failed:{name}`).
    """
    return settings.sql_server_enabled or settings.db_url is not None


def get_failed_store(settings: Settings | None = None) -> FailedStore:
    """The failed store: the `queue_failed_jobs` table if a database is enabled, else Redis."""
    global _failed_store
    settings = settings or current_settings()
    with _lock:
        if _failed_store is None:
            _failed_store = _build_failed_store(settings)
        return _failed_store


def _build_failed_store(settings: Settings) -> FailedStore:
    if database_enabled(settings) or not settings.enable_redis:
        return _failed_store_of("database", settings)
    return _failed_store_of("redis", settings)


def _failed_store_of(kind: str, settings: Settings) -> FailedStore:
    if kind == "database":
        from backends.sql_engine import get_engine
        from queues.drivers.database import DatabaseFailedStore

        return DatabaseFailedStore(get_engine(settings))
    from backends.redis_client import get_redis
    from queues.drivers.redis import RedisFailedStore

    return RedisFailedStore(get_redis(settings))


def get_failed_store_of(kind: str, settings: Settings | None = None) -> FailedStore:
    """The failed store of one kind ("redis" lists or the "database" table).

    The configured store when it is of that kind, else a store on the same
    connection (used by `--queue-migrate` to move failed records).
    """
    settings = settings or current_settings()
    if kind not in FAILED_STORE_KINDS:
        raise ValueError(f"unknown failed store {kind!r}: use 'redis' or 'database'")
    if kind == "redis" and not settings.enable_redis:
        raise ValueError("the redis failed store needs ENABLE_REDIS=true")
    primary = get_failed_store(settings)
    return primary if primary.kind == kind else _failed_store_of(kind, settings)


def failed_stores(settings: Settings | None = None) -> FailedStores:
    """Every failed store that may hold records, the configured one first.

    Besides the configured store: the Redis failed lists whenever Redis is
    enabled (records left there before a database was enabled), and the SQL
    table when a database server is configured or the SQLite file exists
    (records left there before Redis was enabled; a missing file is not
    created just to be read).
    """
    settings = settings or current_settings()
    primary = get_failed_store(settings)
    stores = [primary]
    if primary.kind != "redis" and settings.enable_redis:
        stores.append(_failed_store_of("redis", settings))
    if primary.kind != "database" and (
        database_enabled(settings) or Path(settings.sqlite_path).exists()
    ):
        stores.append(_failed_store_of("database", settings))
    return FailedStores(stores)


#: Why the sync connection has no driver: one line for the operator commands that need one.
SYNC_HAS_NO_QUEUE = (
    "QUEUE_CONNECTION=sync runs each job inside dispatch(), so there is no queue to work, "
    "inspect or fill: pass --connection redis or --connection database"
)


def get_driver(connection: str | None = None, settings: Settings | None = None) -> QueueDriver:
    """The process-wide driver of `connection` ("redis" or "database").

    `ValueError` for the sync connection, which runs jobs in `dispatch()` and has no queue.
    """
    settings = settings or current_settings()
    name = connection or settings.queue_connection
    if name == "sync":
        raise ValueError(SYNC_HAS_NO_QUEUE)
    if name not in ("redis", "database"):
        raise ValueError(f"unknown queue connection {name!r}: use 'redis' or 'database'")
    existing = _drivers.get(name)
    if existing is not None:
        return existing
    failed_store = get_failed_store(settings)
    with _lock:
        if name not in _drivers:
            _drivers[name] = _build_driver(name, settings, failed_store)
        return _drivers[name]


def _build_driver(name: str, settings: Settings, failed_store: FailedStore) -> QueueDriver:
    if name == "redis":
        if not settings.enable_redis:
            raise ValueError("the redis queue connection needs ENABLE_REDIS=true")
        from backends.redis_client import get_redis
        from queues.drivers.redis import RedisDriver

        return RedisDriver(
            get_redis(settings),
            failed_store,
            settings.queue_retry_after,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
    from backends.sql_engine import get_engine
    from queues.drivers.database import DatabaseDriver

    return DatabaseDriver(get_engine(settings), failed_store, settings.queue_retry_after)


def get_publisher(settings: Settings | None = None) -> MqttPublisher:
    """The process-wide MQTT publisher of jobs (it connects on its first publish)."""
    from backends.mqtt_publisher import get_publisher as shared_publisher

    return shared_publisher(settings or current_settings())


def reset() -> None:
    """Forget every cached driver and connection (after fork, at exit, or in tests)."""
    global _failed_store
    with _lock:
        for driver in _drivers.values():
            driver.close()
        _drivers.clear()
        _failed_store = None
    from backends import redis_client, sql_engine

    sql_engine.reset()
    redis_client.reset()
    publisher = sys.modules.get("backends.mqtt_publisher")  # not loaded: nothing published
    if publisher is not None:
        publisher.reset()
