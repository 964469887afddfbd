"""The SQL engine of the database queue: built once per process from settings.

`get_engine(settings)` returns one cached SQLAlchemy engine:

* MySQL/MariaDB over PyMySQL when `ENABLE_MYSQL=true` (URL built from the DB_*
  variables, so any password character is safe) or whatever `DB_URL` names;
* otherwise the embedded SQLite file `SQLITE_PATH`, whose tables are created on
  first use (no server, no migration step).

Tables are otherwise created only by `python main.py --migrate`, which also
upgrades tables an earlier version created (`upgrade_tables`: it adds the
`queue_jobs.reservations` fencing column when missing). Worker processes
call `reset()` after fork so no connection is shared between processes.

MySQL/MariaDB must run in UTC (or a fixed offset without daylight saving time):
the queue's leases and delays compare DATETIME values written with `NOW(6)` in
the session time zone, which is kept as the server's so the spec's monitoring
queries agree with the driver. A DST jump would expire every lease at once or
hold every delayed job an hour. The first connection of each MySQL engine reads
`@@system_time_zone, @@time_zone` and logs a WARNING when the zone may observe DST.
"""

from __future__ import annotations

import argparse
import logging
import re
import sqlite3
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Column, Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateColumn

from config.settings import Settings
from queues.drivers.base import QueueError
from queues.drivers.sql_models import MYSQL_DIALECTS, Base

#: Milliseconds a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: SQLite fsync policy. In WAL mode NORMAL never corrupts the file and loses
#: nothing when a process is killed; only an OS crash or power cut can drop the
#: last commits. FULL would fsync every commit (~10x slower pushes).
SQLITE_SYNCHRONOUS = "NORMAL"

#: Seconds after which a pooled server connection is replaced (below MySQL's
#: default wait_timeout of 8 hours, and below typical proxy idle limits).
POOL_RECYCLE_SECONDS = 3600

#: Seconds PyMySQL waits for a TCP connection before naming the server unreachable.
CONNECT_TIMEOUT_SECONDS = 5

#: Key in a pooled connection's info: True while it is known to have no open transaction.
_CLEAN = "queue_clean"

#: Oldest SQLite whose `UPDATE ... RETURNING` the driver's claim relies on.
MIN_SQLITE_VERSION = (3, 35, 0)

#: Time zone names (lowercase) that never observe daylight saving time.
UTC_ZONE_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "universal", "zulu", "+00:00"})

#: A fixed-offset session zone such as `+02:00` (no daylight saving time).
_FIXED_OFFSET = re.compile(r"^[+-]\d{1,2}:\d{2}$")

log = logging.getLogger(__name__)

_lock = threading.Lock()
_engine: Engine | None = None


def settings_url(settings: Settings) -> URL:
    """The SQLAlchemy URL the settings select (DB_URL, MySQL from DB_*, or SQLite)."""
    if settings.db_url:
        return make_url(settings.db_url)
    if settings.enable_mysql:
        return URL.create(
            "mysql+pymysql",
            username=settings.db_user,
            password=settings.db_pass,
            host=settings.db_host,
            port=settings.db_port,
            database=settings.db_name,
            query={"charset": "utf8mb4"},
        )
    return URL.create("sqlite", database=settings.sqlite_path)


def masked(url: URL | Engine) -> str:
    """The URL as text with its password replaced by ***."""
    if isinstance(url, Engine):
        url = url.url
    return url.render_as_string(hide_password=True)


def server_name(url: URL | Engine) -> str:
    """`host:port` of a server URL, or the file of a SQLite URL (never a password)."""
    if isinstance(url, Engine):
        url = url.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    return f"{url.host or 'localhost'}:{url.port or 3306}"


def tls_connect_args(settings: Settings) -> dict[str, Any]:
    """PyMySQL connect arguments for TLS from DB_SSL_*: none when they are unset.

    The server's certificate must chain to the system's CAs or to DB_SSL_CA and
    name DB_HOST; DB_SSL_CERT/KEY add a client certificate (for `REQUIRE X509`).
    """
    if not settings.db_ssl_enabled:
        return {}
    context = ssl.create_default_context(cafile=settings.db_ssl_ca)
    if settings.db_ssl_cert:
        context.load_cert_chain(settings.db_ssl_cert, settings.db_ssl_key)
    return {"ssl": context}


def engine_from_url(
    url: str | URL,
    pool_size: int = 5,
    pool_pre_ping: bool = True,
    create_sqlite_tables: bool = True,
    connect_args: dict[str, Any] | None = None,
) -> Engine:
    """A new engine for `url`, tuned for the queue.

    MySQL/MariaDB: READ COMMITTED (locking reads take no gap locks, which is what
    makes SKIP LOCKED claims deadlock-light), pool of `pool_size`, pre-ping and
    recycling; `connect_args` (such as `tls_connect_args`) go to PyMySQL. SQLite:
    WAL journal, a busy timeout, and `BEGIN IMMEDIATE` for
    every transaction so concurrent processes serialise on the write lock instead
    of failing on a lock upgrade; its tables are created when missing unless
    `create_sqlite_tables` is False.
    """
    url = make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, pool_size, create_sqlite_tables)
    options: dict[str, Any] = {
        "pool_size": pool_size,
        "pool_pre_ping": pool_pre_ping,
        "pool_recycle": POOL_RECYCLE_SECONDS,
    }
    if backend in MYSQL_DIALECTS:
        options["isolation_level"] = "READ COMMITTED"
        if url.get_driver_name() == "pymysql":
            options["connect_args"] = {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                **(connect_args or {}),
            }
    # The pool's default reset sends a ROLLBACK at every check-in, even right
    # after a COMMIT: one wasted round trip per queue operation. The reset
    # below skips it only for connections `mark_clean` vouched for.
    options["pool_reset_on_return"] = None
    engine = create_engine(url, **options)
    _install_reset(engine)
    if backend in MYSQL_DIALECTS:
        _install_time_zone_check(engine)
    return engine


def time_zone_is_dst_free(system_zone: str, session_zone: str) -> bool:
    """True when the effective MySQL session zone is UTC or a fixed offset (never DST).

    `session_zone` is `@@time_zone`; `SYSTEM` means `system_zone` (`@@system_time_zone`).
    """
    zone = (system_zone if session_zone.strip().upper() == "SYSTEM" else session_zone).strip()
    return zone.lower() in UTC_ZONE_NAMES or bool(_FIXED_OFFSET.match(zone))


def _install_time_zone_check(engine: Engine) -> None:
    @event.listens_for(engine, "first_connect")
    def _on_first_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT @@system_time_zone, @@time_zone")
            system_zone, session_zone = (str(value) for value in cursor.fetchone())
        finally:
            cursor.close()
        if not time_zone_is_dst_free(system_zone, session_zone):
            log.warning(
                "database %s runs in time zone %s (system %s), which may observe daylight "
                "saving time: the queue's leases and delays assume UTC or a fixed offset; "
                "set the server's default_time_zone to '+00:00'",
                server_name(engine),
                session_zone,
                system_zone,
            )


def _install_reset(engine: Engine) -> None:
    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info[_CLEAN] = False

    @event.listens_for(engine.pool, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, _state: Any) -> None:
        if record is None or not record.info.get(_CLEAN):
            dbapi_connection.rollback()


def mark_clean(connection: Connection) -> None:
    """Vouch that `connection` has no open transaction (just committed or rolled back).

    Its check-in then skips the pool's ROLLBACK; any other check-in rolls back.
    """
    connection.info[_CLEAN] = True


def _sqlite_engine(url: URL, pool_size: int, create_tables_now: bool) -> Engine:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise QueueError(
            f"SQLite {sqlite3.sqlite_version} is too old for the database queue: "
            f"need {'.'.join(map(str, MIN_SQLITE_VERSION))} or newer (UPDATE ... RETURNING)"
        )
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_reset_on_return=None,
    )
    _install_reset(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module: it would BEGIN
        # DEFERRED, and a deferred reader that later writes can fail with
        # "database is locked" without waiting.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {SQLITE_SYNCHRONOUS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to the busy
        # timeout), so a claim's read and write see the same state.
        # Straight to sqlite3: exec_driver_sql would double each transaction's
        # SQLAlchemy overhead for a statement with no parameters and no result.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")

    if create_tables_now:
        # The embedded default has no --migrate step: create and upgrade here.
        create_tables(engine)
        upgrade_tables(engine)
    return engine


def get_engine(settings: Settings) -> Engine:
    """The process-wide engine of `settings` (built on first call, then cached).

    The embedded SQLite database gets its tables here on first use.
    """
    global _engine
    with _lock:
        if _engine is None:
            _engine = engine_from_url(
                settings_url(settings),
                pool_size=settings.db_pool_size,
                pool_pre_ping=settings.db_pool_pre_ping,
                connect_args=tls_connect_args(settings),
            )
        return _engine


def reset() -> None:
    """Forget the cached engine without closing sockets a parent process still uses.

    Safe after fork: the child's copies of pooled connections are dropped, not
    closed over the wire (`dispose(close=False)`).
    """
    global _engine
    with _lock:
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = None


def create_tables(engine: Engine) -> list[str]:
    """Create the queue tables and indexes that are missing; return the names created."""
    try:
        with engine.begin() as connection:
            existing = set(inspect(connection).get_table_names())
            Base.metadata.create_all(connection, checkfirst=True)
    except DBAPIError as exc:
        raise connection_error(engine, exc) from None
    return [name for name in Base.metadata.tables if name not in existing]


#: Columns a later version added to tables an earlier `--migrate` may have made.
UPGRADE_COLUMNS: tuple[Column[Any], ...] = (Base.metadata.tables["queue_jobs"].c.reservations,)


def upgrade_tables(engine: Engine) -> list[str]:
    """Add the columns of `UPGRADE_COLUMNS` missing from existing tables; return them.

    The one upgrade step so far: `queue_jobs.reservations` (the fencing
    counter, NOT NULL DEFAULT 0) came after the first release, and a table
    made without it gets it by `ALTER TABLE ... ADD COLUMN`; existing rows get
    0. Stop workers and migrations for the upgrade: a reservation taken by the
    old code fenced on `attempts`, so its holder's ack may be refused and the
    job then runs again once its lease expires (at least once, as for any lost
    lease). Only `--migrate` runs this; a missing table is left to
    `create_tables`.
    """
    added: list[str] = []
    try:
        with engine.begin() as connection:
            inspector = inspect(connection)
            tables = set(inspector.get_table_names())
            for column in UPGRADE_COLUMNS:
                table = column.table.name
                if table not in tables:
                    continue
                if column.name in {c["name"] for c in inspector.get_columns(table)}:
                    continue
                definition = CreateColumn(column).compile(dialect=engine.dialect)
                connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {definition}"))
                added.append(f"{table}.{column.name}")
    except DBAPIError as exc:
        raise connection_error(engine, exc) from None
    return added


def drop_tables(engine: Engine) -> None:
    """Drop the queue tables (tests only: this deletes every job)."""
    Base.metadata.drop_all(engine, checkfirst=True)


def connection_error(engine: Engine, exc: Exception) -> QueueError:
    """A QueueError naming the server (host:port, never the password) and the cause."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return QueueError(f"database {server_name(engine)} failed: {cause}")


def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    """`main.py --migrate`: create or upgrade the queue tables; print what changed and where.

    Exit code 0 on success (also when nothing was missing), 1 when the database
    failed; the message names the server, never its password.
    """
    del args
    # Not get_engine(): for SQLite that would create the tables before we look.
    engine = engine_from_url(
        settings_url(settings),
        pool_size=1,
        create_sqlite_tables=False,
        connect_args=tls_connect_args(settings),
    )
    target = masked(engine)
    try:
        added = upgrade_tables(engine)
        created = create_tables(engine)
    except QueueError as exc:
        print(f"migrate failed for {target}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if added:
        print(f"added columns {', '.join(added)} in {target}")
    if created:
        print(f"created tables {', '.join(created)} in {target}")
    if not added and not created:
        print(f"tables already present in {target}: nothing to do")
    return 0
