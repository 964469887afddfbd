"""Builders of every queue driver on the real test servers, for the contract suite.

Each factory returns a fresh driver on empty state. `DRIVER_NAMES` parametrises
tests that must hold for every driver.
"""

from __future__ import annotations

from pathlib import Path

from queues.drivers.base import QueueDriver
from tests.conftest import (
    MARIADB_URL,
    POSTGRES_HOST,
    POSTGRES_PORT,
    POSTGRES_URL,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_TEST_DB,
    need_service,
)

#: "redis-cluster" is the Redis driver on a private 3-master cluster (tests/redis_topology.py).
DRIVER_NAMES = ("redis", "redis-cluster", "mariadb", "postgres", "sqlite")


def make_driver(name: str, tmp_path: Path, retry_after: int = 90) -> QueueDriver:
    """A driver of kind `name` on empty state, with its failed store."""
    if name == "redis":
        import redis

        from queues.drivers.redis import RedisDriver, RedisFailedStore

        need_service("Redis", REDIS_HOST, REDIS_PORT)
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
        client.flushdb()
        return RedisDriver(client, RedisFailedStore(client), retry_after)
    if name == "redis-cluster":
        from redis.cluster import RedisCluster

        from queues.drivers.redis import RedisDriver, RedisFailedStore
        from tests.redis_topology import shared_cluster

        seed = shared_cluster().seed
        cluster = RedisCluster(host=seed.host, port=seed.port)
        cluster.flushall()
        return RedisDriver(cluster, RedisFailedStore(cluster), retry_after)  # type: ignore[arg-type]

    from backends.sql_engine import engine_from_url
    from backends.sql_tables import create_tables, drop_tables
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore

    if name == "mariadb":
        need_service("MariaDB", "127.0.0.1", 3306)
        engine = engine_from_url(MARIADB_URL)
    elif name == "postgres":
        need_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
        engine = engine_from_url(POSTGRES_URL)
    elif name == "sqlite":
        engine = engine_from_url(f"sqlite:///{tmp_path / 'queue.db'}", create_sqlite_tables=False)
    else:
        raise ValueError(f"unknown driver {name!r}")
    drop_tables(engine)
    create_tables(engine)
    return DatabaseDriver(engine, DatabaseFailedStore(engine), retry_after)


def driver_for(connection: str, tmp_path: Path, retry_after: int = 90) -> QueueDriver:
    """The driver a `main.py` child of `connection` ("redis" or "database") uses
    with `tests.jobs_fixture.support.main_env`: Redis, or the SQLite file."""
    return make_driver("redis" if connection == "redis" else "sqlite", tmp_path, retry_after)
