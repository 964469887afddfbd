"""How a SQL failure names its server and whether it is an outage.

`server_name`, `connection_error` and `is_outage`; below both the engine and
the table DDL, which raise through it.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import URL, Engine
from sqlalchemy.exc import DBAPIError

from backends.errors import BackendError, BackendUnavailableError

#: MySQL/MariaDB error codes of a server that cannot take work now: can't connect
#: (2002, 2003), gone or lost (2006, 2013, 2055), too many connections (1040),
#: shutting down (1053), access denied (1045), lock wait / deadlock still failing
#: after the driver's retries (1205, 1213), connection killed (1927), read-only
#: (1290, 1792), no such table (1146: run --migrate).
MYSQL_OUTAGE_CODES = frozenset(
    {1040, 1045, 1053, 1146, 1205, 1213, 1290, 1792, 1927, 2002, 2003, 2006, 2013, 2055}
)

#: PostgreSQL SQLSTATE classes of a server that cannot take work now: connection
#: exceptions (08), insufficient resources (53), operator intervention such as a
#: shutdown (57), invalid authorization (28).
POSTGRES_OUTAGE_CLASSES = frozenset({"08", "53", "57", "28"})

#: PostgreSQL SQLSTATEs of an outage outside those classes: lock not available
#: (55P03), serialization failure and deadlock still failing after the driver's
#: retries (40001, 40P01), read-only transaction (25006), undefined table
#: (42P01: run --migrate).
POSTGRES_OUTAGE_STATES = frozenset({"55P03", "40001", "40P01", "25006", "42P01"})

#: Default port per server dialect, for naming a server whose URL has none.
DEFAULT_PORTS = {"postgresql": 5432}


def server_name(url: URL | Engine) -> str:
    """`host:port` of a server URL, or the file of a SQLite URL (never a password)."""
    if isinstance(url, Engine):
        url = url.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    port = url.port or DEFAULT_PORTS.get(url.get_backend_name(), 3306)
    return f"{url.host or 'localhost'}:{port}"


def connection_error(engine: Engine, exc: Exception) -> BackendError:
    """A BackendError naming the server (host:port, never the password) and the cause.

    `BackendUnavailableError` when the database cannot take work now (`is_outage`).
    """
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    error = BackendUnavailableError if is_outage(exc) else BackendError
    return error(f"database {server_name(engine)} failed: {cause}")


def is_psycopg_error(error: BaseException | None) -> bool:
    """True for an error raised by psycopg (PostgreSQL), whose SQLSTATE is the code to read.

    PyMySQL errors may carry a `sqlstate` too (HY000 for most): never read it
    as PostgreSQL's.
    """
    return type(error).__module__.split(".")[0] == "psycopg"


def postgres_state(error: BaseException | None) -> str | None:
    """The SQLSTATE of a psycopg error (None for other errors, or none sent)."""
    if not is_psycopg_error(error):
        return None
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_outage(exc: BaseException) -> bool:
    """True when a database error is the server's condition, not the statement's.

    A lost or refused connection, a lock that stayed taken, a server shutting
    down or out of connections, missing tables (run --migrate), a read-only
    server; on SQLite any OperationalError (locked, unopenable, disk full); on
    PostgreSQL the SQLSTATEs above and psycopg's connection failures.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, sqlite3.OperationalError):
        return True
    if is_psycopg_error(cause):
        state = postgres_state(cause)
        if state is None:
            return type(cause).__name__ == "OperationalError"  # psycopg's own connection failures
        return state[:2] in POSTGRES_OUTAGE_CLASSES or state in POSTGRES_OUTAGE_STATES
    args: tuple[object, ...] = tuple(getattr(cause, "args", ()))
    code = args[0] if args else None
    return isinstance(code, int) and code in MYSQL_OUTAGE_CODES
