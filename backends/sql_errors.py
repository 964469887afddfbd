"""How a SQL failure names its server: `server_name` and `connection_error`.

Below both the engine and the table DDL, which raise through it.
"""

from __future__ import annotations

from sqlalchemy import URL, Engine
from sqlalchemy.exc import DBAPIError

from backends.errors import BackendError


def server_name(url: URL | Engine) -> str:
    """`host:port` of a server URL, or the file of a SQLite URL (never a password)."""
    if isinstance(url, Engine):
        url = url.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    return f"{url.host or 'localhost'}:{url.port or 3306}"


def connection_error(engine: Engine, exc: Exception) -> BackendError:
    """A BackendError naming the server (host:port, never the password) and the cause."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return BackendError(f"database {server_name(engine)} failed: {cause}")
