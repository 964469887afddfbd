"""The backend a scenario runs on, per driver: a private Redis (killable, AOF), the
harness's own database on the shared MariaDB (dropped afterwards), or a SQLite file.

The shared servers are never disturbed: Redis scenarios get their own `redis-server`
on a free port, and MariaDB faults only ever kill the harness's own connections.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.faults.common import MARIADB_SERVER_URL, PROBE_JOBS, ROOT, unique
from config.settings import Settings, load_settings
from queues import connections
from queues.dispatcher import dispatch_many
from queues.drivers.base import QueueDriver
from queues.job import Job
from queues.registry import DEFAULT_QUEUE, JobRegistry
from tests.private_servers import PrivateRedis


class Backend:
    """One driver's backing service of a scenario and the environment pointing at it."""

    def __init__(self, driver: str, env: dict[str, str], redis: PrivateRedis | None = None,
                 database: str | None = None) -> None:  # fmt: skip
        self.driver = driver
        self.env = env
        self.redis = redis
        self.database = database  #: the MariaDB database of this run
        self._registry = JobRegistry(PROBE_JOBS)

    @property
    def connection(self) -> str:
        """The queue connection name the driver is reached by."""
        return "redis" if self.driver == "redis" else "database"

    def settings(self) -> Settings:
        """Settings built from this backend's environment alone."""
        return load_settings(environ=self.env, dotenv_path=None)

    def queue_driver(self) -> QueueDriver:
        """The harness's own driver on this backend (built anew after `configure`)."""
        return connections.get_driver(self.connection)

    def dispatch(self, jobs: Sequence[Job]) -> int:
        """Queue `jobs` from the harness in one driver call; the count acknowledged."""
        return len(dispatch_many(jobs, connection=self.queue_driver(), registry=self._registry))

    def queued(self, queue: str = DEFAULT_QUEUE) -> int:
        """Jobs of `queue` pending, delayed or reserved, read from the live state."""
        sizes = self.queue_driver().sizes(queue)
        return sizes.pending + sizes.delayed + sizes.reserved

    def harness_connections(self) -> list[int]:
        """Ids of the MariaDB connections on this run's database (the harness's own)."""
        assert self.database is not None, "only the MariaDB backend has server connections"
        engine = create_engine(MARIADB_SERVER_URL)
        try:
            with engine.connect() as sql:
                rows = sql.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": self.database},
                )
                return [int(row[0]) for row in rows]
        finally:
            engine.dispose()

    def kill_connections(self) -> int:
        """KILL CONNECTION every connection on this run's database; the number killed."""
        ids = self.harness_connections()
        engine = create_engine(MARIADB_SERVER_URL)
        killed = 0
        try:
            with engine.connect() as sql:
                for connection_id in ids:
                    try:
                        sql.execute(text(f"KILL CONNECTION {int(connection_id)}"))
                        killed += 1
                    except Exception:  # it may have closed meanwhile
                        pass
        finally:
            engine.dispose()
        return killed


def _migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--migrate"],
        env=env, cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@contextmanager
def backend(
    driver: str, folder: Path, base: dict[str, str], appendfsync: str = "everysec"
) -> Iterator[Backend]:
    """The backend of `driver` ("redis", "mariadb", "sqlite") for one scenario run.

    The harness process is configured for it (`queues.connections.configure`) while inside.
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(base, SQLITE_PATH=str(folder / "app.db"), ENABLE_MYSQL="false")
    redis: PrivateRedis | None = None
    database: str | None = None
    if driver == "redis":
        (folder / "redis").mkdir(exist_ok=True)
        redis = PrivateRedis(folder / "redis", appendfsync=appendfsync)
        env.update(QUEUE_CONNECTION="redis", ENABLE_REDIS="true", REDIS_HOST=redis.host,
                   REDIS_PORT=str(redis.port))  # fmt: skip
    elif driver == "mariadb":
        database = unique("faults_")
        engine = create_engine(MARIADB_SERVER_URL)
        with engine.begin() as sql:
            sql.execute(text(f"CREATE DATABASE `{database}`"))
        engine.dispose()
        env.update(QUEUE_CONNECTION="database", DB_URL=f"{MARIADB_SERVER_URL}/{database}")
    elif driver == "sqlite":
        env.update(QUEUE_CONNECTION="database")
    else:
        raise ValueError(f"unknown driver {driver!r}: use redis, mariadb or sqlite")
    found = Backend(driver, env, redis, database)
    try:
        if driver != "redis":
            _migrate(env)
        connections.configure(found.settings())
        yield found
    finally:
        connections.reset()
        if redis is not None:
            redis.stop()
        if database is not None:
            engine = create_engine(MARIADB_SERVER_URL)
            with engine.begin() as sql:
                sql.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            engine.dispose()
