"""The SQL engine: one per process, built from settings, shared by the queue and app jobs.

`get_engine(settings)` returns one cached SQLAlchemy engine:

* MySQL/MariaDB over PyMySQL when `ENABLE_MYSQL=true`, PostgreSQL over psycopg 3
  when `DB_CONNECTION=pgsql` (URL built from the DB_* variables, so any password
  character is safe), or whatever `DB_URL` names (`postgresql://` means psycopg 3);
* otherwise the embedded SQLite file `SQLITE_PATH`, whose tables are created on
  first use (no server, no migration step).

Tables are otherwise created only by `python main.py --migrate`
(backends/migrations.py), which also upgrades tables an earlier version created
(backends/sql_tables.py `upgrade_tables`). Worker processes call `reset()` after
fork so no connection is shared between processes.

MySQL/MariaDB must run in UTC (or a fixed offset without daylight saving time):
the queue's leases and delays compare DATETIME values written with `NOW(6)` in
the session time zone, which is kept as the server's so the spec's monitoring
queries agree with the driver. A DST jump would expire every lease at once or
hold every delayed job an hour. The first connection of each MySQL engine reads
`@@system_time_zone, @@time_zone` and logs a WARNING when the zone may observe DST.
PostgreSQL needs no such care: the driver writes `now() AT TIME ZONE 'UTC'`, UTC
whatever the session's TimeZone.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import ssl
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from backends.errors import BackendError
from backends.sql_errors import server_name
from backends.sql_tables import MYSQL_DIALECTS, POSTGRES_DIALECT, create_tables, upgrade_tables
from config.settings import Settings

#: Milliseconds a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: SQLite fsync policy. In WAL mode NORMAL never corrupts the file and loses
#: nothing when a process is killed; only an OS crash or power cut can drop the
#: last commits. FULL would fsync every commit (~10x slower pushes).
SQLITE_SYNCHRONOUS = "NORMAL"

#: Seconds after which a pooled server connection is replaced (below MySQL's
#: default wait_timeout of 8 hours, and below typical proxy idle limits).
POOL_RECYCLE_SECONDS = 3600

#: Seconds PyMySQL or psycopg waits for a TCP connection before naming the server unreachable.
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


#: The one PostgreSQL DBAPI driver the project installs (requirements.txt).
POSTGRES_DRIVER = "postgresql+psycopg"


def settings_url(settings: Settings) -> URL:
    """The SQLAlchemy URL the settings select (DB_URL, MySQL or PostgreSQL from DB_*, or SQLite)."""
    if settings.db_url:
        return with_project_driver(make_url(settings.db_url))
    if settings.sql_server_enabled:
        pgsql = settings.db_connection == "pgsql"
        return URL.create(
            POSTGRES_DRIVER if pgsql else "mysql+pymysql",
            username=settings.db_user,
            password=settings.db_pass,
            host=settings.db_host,
            port=settings.db_port_or_default,
            database=settings.db_name,
            query={} if pgsql else {"charset": "utf8mb4"},
        )
    return URL.create("sqlite", database=settings.sqlite_path)


def with_project_driver(url: URL) -> URL:
    """`url` with a bare `postgresql://` (SQLAlchemy's default: psycopg2, not
    installed) turned into psycopg 3's `postgresql+psycopg://`; others unchanged."""
    if url.drivername in (POSTGRES_DIALECT, "postgres"):
        return url.set(drivername=POSTGRES_DRIVER)
    return url


def masked(url: URL | Engine) -> str:
    """The URL as text with its password replaced by ***."""
    if isinstance(url, Engine):
        url = url.url
    return url.render_as_string(hide_password=True)


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
    recycling; `connect_args` (such as `tls_connect_args`) go to PyMySQL
    (or psycopg).
    PostgreSQL (psycopg 3; a bare `postgresql://` URL means it): the same pool,
    a connect timeout, the server's default READ COMMITTED. SQLite:
    WAL journal, a busy timeout, and `BEGIN IMMEDIATE` for
    every transaction so concurrent processes serialise on the write lock instead
    of failing on a lock upgrade; its tables are created when missing unless
    `create_sqlite_tables` is False.
    """
    url = with_project_driver(make_url(url))
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
    if backend == POSTGRES_DIALECT:
        # READ COMMITTED is PostgreSQL's default: SKIP LOCKED claims see every
        # committed row and never fail with serialization errors.
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
        raise BackendError(
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
