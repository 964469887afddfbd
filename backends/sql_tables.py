"""The tables of the database queue, `queue_jobs` and `queue_failed_jobs`, and their DDL.

`create_tables` makes the missing ones, `upgrade_tables` adds the columns a
later version introduced, `drop_tables` removes them (tests only).

Column for column the tables of the user's spec (docs "Database Tables"), so the
spec's monitoring and cleanup SQL runs on them unchanged. Where a type is wider
than the spec's, the reason is written beside it; every type stays in the spec's
family (an integer key, TEXT payloads, DATETIME times).

`queue_locks` holds the coordination keys of unique jobs, message dedupe, rate
limits, overlap locks and the scheduler's ticks (queues/coordination.py).

One table is added beyond the spec's, for the operator's view only:
`queue_workers`, one row per live worker process (its state as JSON, written
every few seconds, see queues/worker_board.py), and one row named `*restart`
whose `seen_at` is the time of the last `--queue-restart`.

One column is added beyond the spec's, because leases need it: `reservations`
(INT NOT NULL DEFAULT 0, last, so the spec's INSERT and `SELECT *` still work)
counts every reservation of the row, a worker's claim and a migration's take
alike, and never goes down. A reservation is fenced by `(id, reservations)`.
`attempts` cannot fence: `release(undo_attempt=True)` lowers it, so an old
reservation's count can come back and its stale holder would match a later
reservation. `attempts` is purely the attempt count: it starts at the count the
pushed envelope carries (a job moved from another driver keeps what it spent
there) and each worker claim adds one. A heartbeat moves `reserved_at` forward,
and a reservation has expired when `reserved_at` is older than the driver's
`retry_after`. Tables made by an earlier `--migrate` without the column get it
from the next `--migrate` (`upgrade_tables` below).

Times on MySQL/MariaDB are DATETIME in the session time zone, which must be UTC
or a fixed offset (see queues/drivers/database.py: a DST jump moves every lease).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateColumn

from backends.sql_errors import connection_error

#: Dialect names of MySQL and MariaDB (SQLAlchemy names MariaDB "mysql" over PyMySQL).
MYSQL_DIALECTS = ("mysql", "mariadb")

#: Dialect name of PostgreSQL (the tables are the same: BIGSERIAL keys, TEXT,
#: TIMESTAMP WITHOUT TIME ZONE holding UTC with microseconds).
POSTGRES_DIALECT = "postgresql"

#: Table options on MySQL/MariaDB: InnoDB for row locks and SKIP LOCKED, utf8mb4
#: because envelopes are written with ensure_ascii=False.
MYSQL_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# A busy queue at 1,000 jobs/s would exhaust a signed INT auto-increment in
# about 25 days, so the key is BIGINT on servers; SQLite keeps INTEGER because
# only `INTEGER PRIMARY KEY` is its auto-assigned rowid.
_KEY = BigInteger().with_variant(Integer(), "sqlite")

# MySQL TEXT stops at 64 KiB and strict mode rejects a longer value: a large
# job (or a long traceback) would then be refused or, worse, its failure could
# not be recorded. LONGTEXT is the same TEXT family without that ceiling.
_LONG_TEXT = Text().with_variant(mysql.LONGTEXT(), *MYSQL_DIALECTS)

# Microsecond DATETIME on MySQL/MariaDB so FIFO, leases and delays below one
# second are exact; SQLite stores the same instants as ISO text.
_TIME = DateTime().with_variant(mysql.DATETIME(fsp=6), *MYSQL_DIALECTS)


class Base(DeclarativeBase):
    """Declarative base holding the queue tables' metadata."""


class QueueJob(Base):
    """One pending, delayed or reserved job.

    pending: `reserved_at IS NULL AND available_at <= now`; delayed:
    `reserved_at IS NULL AND available_at > now`; reserved: `reserved_at IS NOT NULL`
    (an expired reservation stays here until a worker reclaims it).
    """

    __tablename__ = "queue_jobs"
    __table_args__ = (
        Index("idx_queue_reserved", "queue", "reserved_at"),
        Index("idx_available", "available_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(_KEY, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(255), nullable=False)
    payload: Mapped[str] = mapped_column(_LONG_TEXT, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reserved_at: Mapped[datetime | None] = mapped_column(_TIME, nullable=True)
    available_at: Mapped[datetime] = mapped_column(_TIME, nullable=False)
    created_at: Mapped[datetime] = mapped_column(_TIME, nullable=False)
    # Not in the spec: the fencing counter (see the module docstring). Every
    # reservation adds one and nothing lowers it, unlike `attempts`, which a
    # stopped worker's release gives back. The server default keeps the spec's
    # own INSERT (which names only the spec's columns) valid.
    reservations: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )


class QueueFailedJob(Base):
    """One permanently failed job with the exception that ended it."""

    __tablename__ = "queue_failed_jobs"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(_KEY, primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(String(255), nullable=False)
    queue: Mapped[str] = mapped_column(String(255), nullable=False)
    payload: Mapped[str] = mapped_column(_LONG_TEXT, nullable=False)
    exception: Mapped[str] = mapped_column(_LONG_TEXT, nullable=False)
    failed_at: Mapped[datetime] = mapped_column(_TIME, nullable=False)


class QueueWorker(Base):
    """One live worker process as it last reported itself (not in the spec: the
    dashboard's list of workers), or the `--queue-restart` marker row."""

    __tablename__ = "queue_workers"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    # 191 characters: the longest key InnoDB indexes in utf8mb4 on old row formats.
    id: Mapped[str] = mapped_column(String(191), primary_key=True)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    seen_at: Mapped[float] = mapped_column(Float(precision=53), nullable=False)  #: unix time


class QueueLock(Base):
    """One coordination key (not in the spec; queues/coordination.py): a lock held by
    `holder` until `expires_at`, or one slot of a rate limit (`scope` names the limit,
    `expires_at` is when the slot is free again). Times are unix seconds on the
    database's clock; a row whose `expires_at` has passed holds nothing."""

    __tablename__ = "queue_locks"
    __table_args__ = (Index("idx_queue_locks_scope", "scope"), MYSQL_TABLE_ARGS)

    # 191 characters: the longest key InnoDB indexes in utf8mb4 on old row formats.
    name: Mapped[str] = mapped_column(String(191), primary_key=True)
    scope: Mapped[str] = mapped_column(String(191), nullable=False)
    holder: Mapped[str] = mapped_column(String(191), nullable=False, default="")
    expires_at: Mapped[float] = mapped_column(Float(precision=53), nullable=False)


#: Every table of the queue, in creation order.
TABLES = (
    QueueJob.__table__,
    QueueFailedJob.__table__,
    QueueWorker.__table__,
    QueueLock.__table__,
)


def create_tables(engine: Engine) -> list[str]:
    """Create the queue tables and indexes that are missing; return the names created."""
    return create_missing_tables(engine, Base.metadata)


def create_missing_tables(engine: Engine, metadata: MetaData) -> list[str]:
    """Create the tables (and indexes) of `metadata` that are missing; return their names."""
    try:
        with engine.begin() as connection:
            existing = set(inspect(connection).get_table_names())
            metadata.create_all(connection, checkfirst=True)
    except DBAPIError as exc:
        raise connection_error(engine, exc) from None
    return [name for name in metadata.tables if name not in existing]


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
    lease). Only `--migrate` and the embedded SQLite's first use run this; a
    missing table is left to `create_tables`.
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
