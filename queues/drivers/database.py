"""The database queue driver: jobs as rows of `queue_jobs`, on MySQL/MariaDB, PostgreSQL or SQLite.

Claiming a job is one transaction on the server's row locks, never a
read-then-write race:

* MySQL 8 / MariaDB 10.6+: `SELECT ... ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`
  then `UPDATE ... SET reserved_at = NOW(6), attempts = attempts + 1,
  reservations = reservations + 1`, committed
  together; concurrent workers skip each other's locked rows instead of waiting.
* SQLite (>= 3.35): one `UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING`
  under `BEGIN IMMEDIATE`, so processes take turns on the database write lock.

Clock: every time is the DATABASE's clock, written in SQL. MySQL/MariaDB use
`NOW(6)` (the session time zone, like the `NOW()` of the spec's monitoring
queries, so `reserved_at < DATE_SUB(NOW(), INTERVAL 1 HOUR)` tells the truth);
SQLite uses UTC `'now'`, the basis of its `datetime('now')`, stored as
`YYYY-MM-DD HH:MM:SS.SSS` text that sorts and compares like the time it names.

REQUIREMENT on MySQL/MariaDB: the server's time zone must be UTC (or a fixed
offset without daylight saving time). DATETIME columns store wall-clock time of
the session zone, so a DST jump moves `NOW(6)` against every stored time: one
hour forward expires every lease at once (jobs run twice), one hour back holds
delayed jobs and expired leases an extra hour. The session zone is left as the
server's on purpose, so the spec's monitoring queries typed by an operator agree
with the driver; `backends.sql_engine` logs a warning when the zone may observe DST.

Fencing: every reservation of a row, a worker's claim and a migration's take
alike, adds one to its `reservations` column, which nothing ever lowers (the
one column beyond the spec's; see backends/sql_tables.py). A reservation's token is
`"{id}:{reservations}"` (`":transfer"` appended for a migration's), so every
later reservation of the same row has another token, forever. `ack`,
`release`, `extend` and `fail` match on `(id, reservations)` and on a lease
that has not expired (`reserved_at > now - retry_after`); anything else
changes nothing. `attempts` cannot serve as the fence: `release(undo_attempt=
True)` lowers it, so an old count (and its stale holder's token) could come
back while a migration holds the row.

Attempts: the `attempts` column starts at the count in the pushed envelope's
`{"attempts":N,` prefix (a job moved from Redis keeps the attempts it spent
there), each worker claim adds one (also the claim of an expired lease: the
dead holder's attempt was counted when it claimed), a migration's take adds
none, and `release(undo_attempt=True)` of a worker's reservation takes its one
back. A claimed job's payload is the stored envelope
with that prefix set to the column (the row itself keeps the payload as pushed:
the column is the truth, and large payloads are not rewritten per claim).

Deadlocks (1213), lock-wait timeouts (1205) and SQLite "database is locked" are
retried with jittered backoff; they never reach the caller as a job failure. A
missing table ends with one line saying to run `python main.py --migrate`.

A claim also sets `available_at` to the claim time: a reserved row's due time
is spent, and keeping when this attempt began lets the next claim of the row
after its lease expired report how long that attempt stayed unsettled
(`ReservedJob.abandoned_after`: last heartbeat + lease - claim time), read by
the claim's own SELECT (no extra round trip; on SQLite the claim is a SELECT
and an UPDATE by id under BEGIN IMMEDIATE, as `UPDATE ... RETURNING` returns
only the new values).

Duplicates: two rows with the same envelope id (a hand-written copy, an
INSERT re-sent after a lost reply) are two rows, each reserved and fenced on
its own (`id`, `reservations`), so neither can settle or hide the other and no
phantom reservation is possible; both run (at least once, like any retried
job). Checking every claim for a live row with the same envelope id costs a
same-table subquery per claim, measured at 25-40% of pop throughput on both
SQLite and MariaDB, so it is not done: `duplicate_of` is never set here.

Wake-ups: a blocking `pop` waits on the driver's same-machine `waker`
(queues/drivers/wakeup.py: a push on this machine wakes it at once) and polls at
an adaptive interval, short after work and backing off to
`BLOCKING_POLL_SECONDS` while idle, until its `block` time is used up. On
PostgreSQL the push, bulk and release statements also `pg_notify` the queue's
channel in their own transaction and an idle `pop` waits on LISTEN
(queues/drivers/pg_wakeup.py), claiming again at least every
`NOTIFY_FALLBACK_POLL_SECONDS`; PostgreSQL claims one row per pop (its claim is
one UPDATE ... RETURNING statement; `pop_many` there is the one-job default).

PostgreSQL: times are `TIMESTAMP WITHOUT TIME ZONE` holding UTC (`now() AT TIME
ZONE 'UTC'`, the transaction's start), and the claim is ONE statement: both
halves lock their head row `FOR UPDATE SKIP LOCKED` in CTEs and an `UPDATE ...
FROM ... RETURNING` marks the lower id.

Job status: the ack and the final fail insert the job's status row
(`queue_job_status`) in their own transaction (a statement more, no commit
more; on PostgreSQL the ack and the row are ONE statement, a data-modifying
CTE, still in autocommit); queued and running jobs are read from `queue_jobs`. Expired status rows
and dispatch marks are deleted by `trim_workflow_rows`, at most
STATUS_TRIM_ROWS per statement, at most once per STATUS_TRIM_INTERVAL per
driver (from `ack`), never per job.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, TextClause, bindparam, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from backends.sql_engine import mark_clean
from backends.sql_errors import connection_error, is_psycopg_error, postgres_state, server_name
from backends.sql_tables import MYSQL_DIALECTS, POSTGRES_DIALECT
from queues.drivers.base import (
    DEFAULT_RETRY_AFTER,
    JOB_ID_HEAD,
    FailedJob,
    FailedStore,
    JobStatus,
    QueueDriver,
    QueueError,
    QueueSizes,
    QueueUnavailable,
    ReservedJob,
    payload_job_name,
    status_reason,
)
from queues.drivers.pg_wakeup import PostgresWaker, channel_for, notifying
from queues.drivers.wakeup import LocalWaker, Waker
from queues.envelope import (
    JOB_ID_PATTERN,
    EnvelopeError,
    checked_delay,
    decode_json,
    validate_queue_name,
)
from support.backoff import Backoff, full_jitter

#: Longest wait, seconds, between two claim attempts of a blocking pop while idle: a
#: job pushed from another machine (no wake-up reaches it, see queues/drivers/wakeup.py)
#: or a delayed job coming due is picked up within it.
BLOCKING_POLL_SECONDS = 0.05
#: Seconds: ceiling of the first poll interval after work; it doubles (full jitter,
#: support/backoff.py) per empty claim up to BLOCKING_POLL_SECONDS.
IDLE_POLL_BASE = 0.002

#: Seconds an idle PostgreSQL worker waits for a NOTIFY before claiming again anyway:
#: the bound on picking up a job whose lease expired (no commit announces that).
NOTIFY_FALLBACK_POLL_SECONDS = 1.0

#: Times one transaction is tried when the server reports a deadlock or lock timeout.
TRANSIENT_ATTEMPTS = 50

#: Seconds of the first retry's backoff ceiling; doubles per retry up to the cap.
TRANSIENT_BACKOFF_SECONDS = 0.005

#: Seconds: the largest backoff ceiling between two retries.
TRANSIENT_BACKOFF_CAP_SECONDS = 0.25

#: MySQL/MariaDB error codes that roll back a transaction and may simply be retried.
MYSQL_TRANSIENT_CODES = frozenset({1213, 1205})  # deadlock, lock wait timeout

#: PostgreSQL SQLSTATEs after which a transaction may simply be retried:
#: serialization failure, deadlock detected, lock not available.
POSTGRES_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03"})

#: PostgreSQL SQLSTATE of "relation ... does not exist".
POSTGRES_MISSING_TABLE_STATE = "42P01"

#: Rows per multi-row INSERT of `bulk` on MySQL/MariaDB (ids follow row order).
BULK_ROWS_PER_STATEMENT = 500

#: Name written into `queue_failed_jobs.connection` for this driver's failures.
CONNECTION_NAME = "database"

#: Ending of a migration's token (`take_for_transfer`): its reservation counted no attempt.
TRANSFER_SUFFIX = ":transfer"

#: Seconds between two trims of expired status rows and dispatch marks (per driver).
STATUS_TRIM_INTERVAL = 60.0

#: Most rows one trim statement deletes (a bounded delete, never a long lock).
STATUS_TRIM_ROWS = 500

#: MySQL/MariaDB "Table ... doesn't exist" and SQLite "no such table".
MISSING_TABLE_CODE = 1146
_SQLITE_MISSING_TABLE = re.compile(r"no such table: (\w+)")
_ATTEMPTS_PREFIX = re.compile(r'^\{"attempts":(-?\d+),')

T = TypeVar("T")

logger = logging.getLogger(__name__)


class _Clock:
    """SQL for "now" and "now + an offset" on one backend, as the database sees it."""

    def __init__(self, dialect: str) -> None:
        self.mysql = dialect in MYSQL_DIALECTS
        self.postgres = dialect == POSTGRES_DIALECT
        if not self.mysql and not self.postgres and dialect != "sqlite":
            raise QueueError(
                f"the database queue supports MySQL/MariaDB, PostgreSQL and SQLite, not {dialect!r}"
            )
        if self.mysql:
            self.now = "NOW(6)"
        elif self.postgres:
            # UTC whatever the session's TimeZone; now() is the transaction's
            # start, one instant for every statement of a claim.
            self.now = "(now() AT TIME ZONE 'UTC')"
        else:
            self.now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"

    def at(self, param: str) -> str:
        """SQL for now plus the offset bound to `:param` (see `offset`)."""
        if self.mysql:
            return f"(NOW(6) + INTERVAL :{param} MICROSECOND)"
        if self.postgres:
            return f"({self.now} + CAST(:{param} AS BIGINT) * INTERVAL '1 microsecond')"
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', :{param})"

    def offset(self, seconds: float) -> int | str:
        """The bound value of an `at()` offset of `seconds` (may be negative)."""
        if self.mysql or self.postgres:
            return round(seconds * 1_000_000)
        return f"{seconds:+.3f} seconds"

    def age(self, column: str) -> str:
        """SQL for the seconds elapsed since the time in `column`."""
        if self.mysql:
            return f"TIMESTAMPDIFF(MICROSECOND, {column}, NOW(6)) / 1000000"
        if self.postgres:
            return f"EXTRACT(EPOCH FROM ({self.now} - {column}))"
        return f"(julianday('now') - julianday({column})) * 86400.0"

    def between(self, start: str, end: str) -> str:
        """SQL for the seconds from the time in column `start` to the one in `end`."""
        if self.mysql:
            return f"TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000"
        if self.postgres:
            return f"EXTRACT(EPOCH FROM ({end} - {start}))"
        return f"(julianday({end}) - julianday({start})) * 86400.0"

    def stored(self, stamp: datetime) -> datetime | str:
        """A naive UTC datetime as this backend stores times (SQLite: its text form)."""
        if self.mysql or self.postgres:
            return stamp
        return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"

    def unix(self, column: str) -> str:
        """SQL for the unix time of `column`."""
        if self.mysql:
            return f"UNIX_TIMESTAMP({column})"
        if self.postgres:  # a TIMESTAMP WITHOUT TIME ZONE's epoch reads it as UTC
            return f"EXTRACT(EPOCH FROM {column})"
        return f"(julianday({column}) - 2440587.5) * 86400.0"


def is_transient(exc: DBAPIError | sqlite3.Error) -> bool:
    """True for errors after which the whole transaction may be retried unchanged."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if is_psycopg_error(orig):  # PostgreSQL: the SQLSTATE says it
        return postgres_state(orig) in POSTGRES_TRANSIENT_STATES
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in MYSQL_TRANSIENT_CODES
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


def missing_table(exc: DBAPIError | sqlite3.Error) -> str | None:
    """The table name when `exc` says a table does not exist, else None."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if postgres_state(orig) == POSTGRES_MISSING_TABLE_STATE:
        found = re.search(r'relation "(?:[^".]*\.)?([^"]+)" does not exist', str(orig))
        return found.group(1) if found else "queue_jobs"
    args = getattr(orig, "args", ())
    if args and args[0] == MISSING_TABLE_CODE:
        found = re.search(r"Table '(?:[^'.]*\.)?([^']+)' doesn't exist", str(args[-1]))
        return found.group(1) if found else "queue_jobs"
    found = _SQLITE_MISSING_TABLE.search(str(orig))
    return found.group(1) if found else None


def run_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in one transaction, retrying it on deadlocks and lock timeouts.

    Raises `QueueError` naming the server when it fails otherwise (or stays locked).
    """
    for attempt in range(TRANSIENT_ATTEMPTS):
        try:
            with engine.connect() as connection:
                with connection.begin():
                    result = work(connection)
                mark_clean(connection)
                return result
        except (DBAPIError, sqlite3.Error) as exc:  # sqlite3's own: from _HotPath
            table = missing_table(exc)
            if table is not None:  # an outage, not the job's fault: it waits for --migrate
                raise QueueUnavailable(
                    f"database {server_name(engine)} has no table {table}: "
                    "run `python main.py --migrate` to create the queue tables"
                ) from None
            if not is_transient(exc) or attempt == TRANSIENT_ATTEMPTS - 1:
                raise connection_error(engine, exc) from None
            time.sleep(
                full_jitter(attempt + 1, TRANSIENT_BACKOFF_SECONDS, TRANSIENT_BACKOFF_CAP_SECONDS)
            )
    raise AssertionError("unreachable")  # pragma: no cover


class _Rows(Protocol):
    """What the hot paths read from a statement: its rows or its row count."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> Sequence[Any]: ...


class _HotPath:
    """Runs the driver's per-job statements (push, claim, ack, release, extend, fail).

    On SQLite they go straight to the sqlite3 cursor, compiled once: SQLAlchemy's
    per-statement work costs more than SQLite's own (measured: pop+ack twice as
    fast). On servers they go through SQLAlchemy, whose disconnect handling
    matters there and whose cost disappears behind the network round trip.
    Transactions, pooling and events stay SQLAlchemy's on both.
    """

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._direct = engine.dialect.name == "sqlite"
        self._compiled: dict[TextClause, tuple[str, tuple[str, ...]]] = {}

    def __call__(
        self, connection: Connection, statement: TextClause, params: dict[str, Any]
    ) -> _Rows:
        if not self._direct:
            return connection.execute(statement, params)
        compiled = self._compiled.get(statement)
        if compiled is None:
            done = statement.compile(dialect=self._dialect)
            compiled = (done.string, tuple(done.positiontup or ()))
            self._compiled[statement] = compiled
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(compiled[0], [params[name] for name in compiled[1]])
        rows: _Rows = cursor
        return rows


def envelope_id(payload: str) -> str:
    """The envelope id of a stored payload, from its fixed prefix ("" if it has none).

    A payload without the prefix is decoded within the envelope limits
    (`queues.envelope.decode_json`), so garbage or deep JSON costs a refusal,
    never a RecursionError.
    """
    match = JOB_ID_HEAD.match(payload)
    if match:
        return match.group(1)
    try:
        decoded = decode_json(payload)
    except EnvelopeError:
        return ""
    job_id = decoded.get("id") if isinstance(decoded, dict) else None
    return job_id if isinstance(job_id, str) else ""


def like_envelope_id(job_id: str) -> str:
    """A LIKE pattern (ESCAPE '!') matching payloads whose envelope id is `job_id`."""
    escaped = re.sub(r"([!%_])", r"!\1", job_id)
    return '{"attempts":%,"id":"' + escaped + '"%'


def with_attempts(payload: str, attempts: int) -> str:
    """The payload with its envelope's leading attempts count set to `attempts`.

    The row keeps the payload as pushed (rewriting a large TEXT at every claim
    would cost I/O); the `attempts` column is the truth and is copied in here.
    A payload that is not an envelope is returned unchanged.
    """
    return _ATTEMPTS_PREFIX.sub(f'{{"attempts":{attempts},', payload, count=1)


def stored_attempts(payload: str) -> int:
    """The attempts count a pushed payload carries in its prefix (0 if none or negative)."""
    match = _ATTEMPTS_PREFIX.match(payload)
    return max(int(match.group(1)), 0) if match else 0


def _is_duplicate_key(exc: BaseException) -> bool:
    """True if `exc` (a QueueError from `run_transaction`) is a unique-key violation."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, IntegrityError | sqlite3.IntegrityError):
            return True
        cause = cause.__cause__ or cause.__context__
    text_ = str(exc).lower()
    return "duplicate entry" in text_ or "unique constraint" in text_ or "duplicate key" in text_


def database_identity(engine: Engine) -> str:
    """What names one database to every process of this machine (the waker's meeting
    place): a SQLite file's real path, or a server's backend, host, port and database."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        return "sqlite:" + os.path.realpath(url.database or ":memory:")
    return f"{url.get_backend_name()}://{url.host}:{url.port}/{url.database}"


def _parse_token(token: str) -> tuple[int, int] | None:
    parts = token.split(":")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


class DatabaseFailedStore(FailedStore):
    """Failed jobs in `queue_failed_jobs`; ids are the table's integer ids as text.

    A lookup by job id (`find`) scans the rows with a LIKE on the payload's
    envelope prefix (no index on it): an operator command, and a non-locking
    read that never holds up writers.
    """

    kind = "database"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        clock = _Clock(engine.dialect.name)
        self._clock = clock
        # PostgreSQL's DBAPI has no lastrowid: the new id comes back by RETURNING.
        returning = " RETURNING id" if clock.postgres else ""
        self._insert = text(
            "INSERT INTO queue_failed_jobs (connection, queue, payload, exception, failed_at) "
            f"VALUES (:connection, :queue, :payload, :exception, {clock.now}){returning}"
        )
        columns = "id, connection, queue, payload, exception, failed_at"
        self._all = text(f"SELECT {columns} FROM queue_failed_jobs ORDER BY id DESC LIMIT :limit")
        self._all_of_queue = text(
            f"SELECT {columns} FROM queue_failed_jobs WHERE queue = :queue "
            "ORDER BY id DESC LIMIT :limit"
        )
        self._get = text(f"SELECT {columns} FROM queue_failed_jobs WHERE id = :id")
        self._forget = text("DELETE FROM queue_failed_jobs WHERE id = :id")
        self._flush_all = text("DELETE FROM queue_failed_jobs")
        self._flush_older = text(
            f"DELETE FROM queue_failed_jobs WHERE failed_at < {clock.at('age')}"
        )
        self._counts = text("SELECT queue, COUNT(*) FROM queue_failed_jobs GROUP BY queue")
        self._of_job = text(
            f"SELECT {columns} FROM queue_failed_jobs WHERE payload LIKE :pattern ESCAPE '!' "
            "ORDER BY id DESC"
        )
        self._oldest = text(
            f"SELECT {columns} FROM queue_failed_jobs WHERE queue = :queue ORDER BY id LIMIT :limit"
        )
        self._remove = text("DELETE FROM queue_failed_jobs WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        self._restore = text(
            "INSERT INTO queue_failed_jobs (connection, queue, payload, exception, failed_at) "
            f"VALUES (:connection, :queue, :payload, :exception, :failed_at){returning}"
        )
        self._queues = text("SELECT DISTINCT queue FROM queue_failed_jobs ORDER BY queue")

    def where(self, queue: str) -> str:
        """Where this store keeps the failed jobs of `queue`."""
        return f"table queue_failed_jobs ({server_name(self.engine)})"

    def add(self, connection: str, queue: str, payload: str, exception: str) -> str:
        """Store one failed job durably; return its id."""
        return run_transaction(
            self.engine, lambda c: self.add_in(c, connection, queue, payload, exception)
        )

    def add_in(
        self, conn: Connection, connection: str, queue: str, payload: str, exception: str
    ) -> str:
        """`add` inside the caller's transaction (used by the driver's atomic `fail`)."""
        result = conn.execute(
            self._insert,
            {"connection": connection, "queue": queue, "payload": payload, "exception": exception},
        )
        return self._new_id(result)

    def all(self, queue: str | None = None, limit: int = 100) -> list[FailedJob]:
        """Failed jobs, newest first, optionally of one queue."""
        params: dict[str, Any]
        if queue is None:
            statement, params = self._all, {"limit": limit}
        else:
            statement, params = self._all_of_queue, {"queue": queue, "limit": limit}
        rows = run_transaction(self.engine, lambda c: c.execute(statement, params).all())
        return [self._row(row) for row in rows]

    def get(self, failed_id: str) -> FailedJob | None:
        """One failed job by id, or None (also for an id that is not a number)."""
        key = _int_or_none(failed_id)
        if key is None:
            return None
        row = run_transaction(self.engine, lambda c: c.execute(self._get, {"id": key}).first())
        return None if row is None else self._row(row)

    def forget(self, failed_id: str) -> bool:
        """Delete one failed job; False when there was none with this id."""
        key = _int_or_none(failed_id)
        if key is None:
            return False
        count = run_transaction(
            self.engine, lambda c: c.execute(self._forget, {"id": key}).rowcount
        )
        return bool(count)

    def flush(self, older_than_days: float | None = None) -> int:
        """Delete all failed jobs, or those failed more than `older_than_days` ago."""
        params: dict[str, Any]
        if older_than_days is None:
            statement, params = self._flush_all, {}
        else:
            offset = self._clock.offset(-older_than_days * 86400)
            statement, params = self._flush_older, {"age": offset}
        return int(run_transaction(self.engine, lambda c: c.execute(statement, params).rowcount))

    def counts(self) -> dict[str, int]:
        """Number of failed jobs per queue name."""
        rows = run_transaction(self.engine, lambda c: c.execute(self._counts).all())
        return {str(queue): int(count) for queue, count in rows}

    def queues(self) -> list[str]:
        """Names of the queues with failed jobs here."""
        rows = run_transaction(self.engine, lambda c: c.execute(self._queues).all())
        return [str(row[0]) for row in rows]

    def find(self, key: str) -> FailedJob | None:
        """The row with id `key`, else the newest failed row of the job with envelope id `key`."""
        found = self.get(key)
        if found is not None or not JOB_ID_PATTERN.fullmatch(key):
            return found
        params = {"pattern": like_envelope_id(key)}
        rows = run_transaction(self.engine, lambda c: c.execute(self._of_job, params).all())
        return next((job for job in map(self._row, rows) if job.job_id == key), None)

    def oldest(self, queue: str, limit: int) -> list[FailedJob]:
        """The oldest `limit` failed jobs of one queue, oldest first."""
        if limit <= 0:
            return []
        params = {"queue": queue, "limit": limit}
        rows = run_transaction(self.engine, lambda c: c.execute(self._oldest, params).all())
        return [self._row(row) for row in rows]

    def remove(self, jobs: Sequence[FailedJob]) -> int:
        """Delete these rows (by id) in one transaction; return how many existed."""
        ids = [key for key in (_int_or_none(job.id) for job in jobs) if key is not None]
        if not ids:
            return 0
        return int(
            run_transaction(self.engine, lambda c: c.execute(self._remove, {"ids": ids}).rowcount)
        )

    def restore(self, job: FailedJob) -> str:
        """Insert a record moved from another store, keeping its connection and failed_at."""
        stamp = job.failed_at
        if stamp.tzinfo is not None:  # the database keeps UTC wall-clock times
            stamp = stamp.astimezone(UTC).replace(tzinfo=None)
        params = {
            "connection": job.connection,
            "queue": job.queue,
            "payload": job.payload,
            "exception": job.exception,
            "failed_at": self._clock.stored(stamp),
        }
        return run_transaction(
            self.engine, lambda c: self._new_id(c.execute(self._restore, params))
        )

    def _new_id(self, result: Any) -> str:
        """The id of the row an INSERT of this store just added."""
        return str(result.scalar_one() if self._clock.postgres else result.lastrowid)

    @staticmethod
    def _row(row: Any) -> FailedJob:
        failed_at = row[5]
        if isinstance(failed_at, str):  # SQLite returns the stored text
            failed_at = datetime.fromisoformat(failed_at)
        return FailedJob(
            id=str(row[0]),
            connection=str(row[1]),
            queue=str(row[2]),
            payload=str(row[3]),
            exception=str(row[4]),
            failed_at=failed_at,
        )


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class DatabaseDriver(QueueDriver):
    """Queue driver over the `queue_jobs` table (see the module docstring for guarantees)."""

    name = CONNECTION_NAME

    def __init__(
        self,
        engine: Engine,
        failed_store: FailedStore,
        retry_after: int = DEFAULT_RETRY_AFTER,
        waker: Waker | None = None,
    ) -> None:
        super().__init__(failed_store, retry_after)
        self.engine = engine
        #: wakes idle workers of this database after a push (default: same machine)
        self.waker = waker or LocalWaker(database_identity(engine))
        self._idle = Backoff(IDLE_POLL_BASE, BLOCKING_POLL_SECONDS)
        clock = _Clock(engine.dialect.name)
        self._clock = clock
        self._mysql = clock.mysql
        self._hot = _HotPath(engine)
        self._checked_queues: set[str] = set()
        # fail() is one transaction when the failed rows live in the same database.
        self._atomic_fail = (
            isinstance(failed_store, DatabaseFailedStore) and failed_store.engine is engine
        )
        now, expiry = clock.now, clock.at("expiry")
        live = f"id = :id AND reservations = :reservations AND reserved_at > {expiry}"
        # FIFO by id, not by available_at: a job pushed earlier stays ahead even
        # when a later one came due first (the spec's `ORDER BY id`); a job
        # released with a delay keeps its id, so once due it is ahead of newer jobs.
        # Two index-served halves instead of one OR: with `(A OR B) ORDER BY id`
        # both servers walk the primary key past every other row (other queues,
        # reserved and delayed jobs); `reserved_at IS NULL` is one range of
        # idx_queue_reserved already in id order, and expired leases are few.
        # Seconds from the start of a reservation (available_at, set by the claim)
        # to its last heartbeat (reserved_at); NULL for a row that is not reserved.
        held = clock.between("available_at", "reserved_at")
        head = f"SELECT id, attempts, reservations, payload, {held} AS held FROM queue_jobs "
        pending = (
            f"{head}WHERE queue = :queue "
            f"AND reserved_at IS NULL AND available_at <= {now} ORDER BY id LIMIT 1"
        )
        expired = (
            f"{head}WHERE queue = :queue "
            f"AND reserved_at <= {expiry} AND available_at <= {now} ORDER BY id LIMIT 1"
        )
        # The expired half checks available_at too: a delayed job leased by a
        # migration that died must not run before it is due (a worker's own
        # reservation is always of a due job, so this never holds one back).
        # A migration also takes jobs whose lease expired (a dead migration's or a
        # dead worker's), so a re-run after the lease finishes the move.
        transferable = f"(reserved_at IS NULL OR reserved_at <= {expiry})"
        self._insert_sql = (
            "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) VALUES "
        )
        push = self._insert_sql + f"(:queue, :payload, :attempts, {clock.at('delay')}, {now})"
        self._push = text(push)
        self._postgres = clock.postgres
        if self._postgres:
            # One round trip: each half locks its head row (SKIP LOCKED; PostgreSQL
            # allows no locking clause inside a UNION, so the halves are CTEs),
            # the lower id is marked, and RETURNING gives the row as it was
            # before the mark (attempts and reservations minus the one added).
            columns = "id, attempts, reservations, payload, held"
            lock = "FOR UPDATE SKIP LOCKED"
            self._claim = text(
                f"WITH pending AS ({pending} {lock}), expired AS ({expired} {lock}), "
                f"pick AS (SELECT {columns} FROM pending UNION ALL "
                f"SELECT {columns} FROM expired ORDER BY id LIMIT 1) "
                f"UPDATE queue_jobs SET reserved_at = {now}, available_at = {now}, "
                "attempts = queue_jobs.attempts + 1, "
                "reservations = queue_jobs.reservations + 1 FROM pick "
                "WHERE queue_jobs.id = pick.id RETURNING queue_jobs.id, "
                "queue_jobs.attempts - 1, queue_jobs.reservations - 1, queue_jobs.payload, "
                "pick.held"
            )
        elif self._mysql:
            # Each half locks its head row, skipping rows other workers hold, and
            # the lower id of the (at most) two is claimed; the other stays locked
            # only until this transaction commits. No outer ORDER BY: it would
            # make the server materialise and sort the union (4x slower).
            self._claim = text(
                f"({pending} FOR UPDATE SKIP LOCKED) UNION ALL ({expired} FOR UPDATE SKIP LOCKED)"
            )
        else:
            # BEGIN IMMEDIATE holds the write lock, so the row chosen is still free.
            self._claim = text(f"SELECT * FROM ({pending}) UNION ALL SELECT * FROM ({expired})")
        # The prefetch's claim: the same halves, each taking up to :limit rows (the
        # lowest ids of the two are claimed, the others stay free after the commit).
        many_pending = pending.replace("LIMIT 1", "LIMIT :limit")
        many_expired = expired.replace("LIMIT 1", "LIMIT :limit")
        if self._mysql:
            self._claim_many = text(
                f"({many_pending} FOR UPDATE SKIP LOCKED) UNION ALL "
                f"({many_expired} FOR UPDATE SKIP LOCKED)"
            )
        else:
            self._claim_many = text(
                f"SELECT * FROM ({many_pending}) UNION ALL SELECT * FROM ({many_expired})"
            )
        # The claim: the row is reserved from now, and available_at records when.
        self._mark = text(
            f"UPDATE queue_jobs SET reserved_at = {now}, available_at = {now}, "
            "attempts = attempts + 1, reservations = reservations + 1 WHERE id = :id"
        )
        # The transfer reads, then marks, inside one transaction: on MySQL the
        # rows are locked (SKIP LOCKED), on SQLite BEGIN IMMEDIATE holds the write
        # lock, so each read `reservations` + 1 is what the mark writes.
        self._transfer_select = text(
            f"SELECT id, attempts, reservations, payload, {clock.unix('available_at')} "
            f"FROM queue_jobs WHERE queue = :queue AND {transferable} ORDER BY id LIMIT :limit"
            + (" FOR UPDATE SKIP LOCKED" if self._mysql or self._postgres else "")
        )
        # No attempt is counted for a move: only the fencing counter grows.
        self._transfer_mark = text(
            "UPDATE queue_jobs SET reservations = reservations + 1, "
            f"reserved_at = {now} WHERE id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        self._ack = text(f"DELETE FROM queue_jobs WHERE {live}")
        release = f"UPDATE queue_jobs SET reserved_at = NULL, available_at = {clock.at('delay')}"
        release_undo = (
            f"{release}, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
            f"WHERE {live}"
        )
        release = f"{release} WHERE {live}"
        # PostgreSQL: what makes a job available also wakes idle workers, in the
        # same statement (queues/drivers/pg_wakeup.py); elsewhere workers poll.
        self._waker: PostgresWaker | None = None
        # Engine of the one-statement operations (push, claim, ack, release,
        # extend): on PostgreSQL in autocommit, where one statement is one
        # atomic transaction and BEGIN and COMMIT would each cost a round trip
        # (psycopg sends them as queries of their own). Same pool.
        self._single = engine
        if self._postgres:
            self._single = engine.execution_options(isolation_level="AUTOCOMMIT")
            push, release, release_undo = map(notifying, (push, release, release_undo))
            self._notify = text("SELECT pg_notify(:channel, CAST(:delay AS TEXT))")
            self._waker = PostgresWaker(engine)
        self._push_notifying = text(push)
        self._release = text(release)
        self._release_undo = text(release_undo)
        self._extend = text(f"UPDATE queue_jobs SET reserved_at = {now} WHERE {live}")
        pending = f"reserved_at IS NULL AND available_at <= {now}"
        self._sizes = text(
            f"SELECT COALESCE(SUM(CASE WHEN {pending} THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN reserved_at IS NULL AND "
            f"available_at > {now} THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN reserved_at IS NOT NULL THEN 1 ELSE 0 END), 0), "
            f"{clock.age(f'MIN(CASE WHEN {pending} THEN created_at END)')} "
            "FROM queue_jobs WHERE queue = :queue"
        )
        self._queues = text("SELECT DISTINCT queue FROM queue_jobs ORDER BY queue")
        self._contains = text(
            "SELECT payload FROM queue_jobs WHERE queue = :queue AND payload LIKE :pattern "
            "ESCAPE '!'"
        )
        self._clear = text("DELETE FROM queue_jobs WHERE queue = :queue")
        status_columns = (
            "INSERT INTO queue_job_status (job_id, queue, job, state, attempts, reason, "
            "finished_at, expires_at) "
        )
        status_values = (
            f":job_id, :status_queue, :job, :state, :attempts, :reason, {now}, "
            f"{clock.at('retention')}"
        )
        self._status_insert = text(f"{status_columns}VALUES ({status_values})")
        # PostgreSQL: the ack and its status row in ONE statement (a data-modifying
        # CTE), run in autocommit like the plain ack: no BEGIN/COMMIT round trips.
        # The INSERT's row count is the DELETE's (1 only if the reservation was live).
        self._ack_with_status = text(
            f"WITH gone AS (DELETE FROM queue_jobs WHERE {live} RETURNING id) "
            f"{status_columns}SELECT {status_values} FROM gone"
        )
        self._status_select = text(
            f"SELECT queue, job, state, attempts, reason, {clock.unix('finished_at')} "
            "FROM queue_job_status WHERE job_id = :job_id ORDER BY id DESC LIMIT 1"
        )
        self._live_select = text(
            f"SELECT queue, attempts, reserved_at, {clock.unix('available_at')}, payload "
            "FROM queue_jobs WHERE payload LIKE :pattern ESCAPE '!' ORDER BY id DESC"
        )
        self._mark_insert = text(
            "INSERT INTO queue_dispatch_marks (job_id, expires_at) "
            f"VALUES (:job_id, {clock.at('retention')})"
        )
        self._trims = tuple(
            (
                text(
                    f"SELECT {key} FROM {table} WHERE expires_at < {now} "
                    f"ORDER BY expires_at LIMIT {STATUS_TRIM_ROWS}"
                ),
                text(f"DELETE FROM {table} WHERE {key} IN :keys").bindparams(
                    bindparam("keys", expanding=True)
                ),
            )
            for table, key in (("queue_job_status", "id"), ("queue_dispatch_marks", "job_id"))
        )
        self._next_trim = 0.0

    # -- adding jobs ------------------------------------------------------

    def _new_job_queue(self, queue: str) -> str:
        """`queue` if it may get new jobs (`validate_queue_name`, checked once per name)."""
        if queue not in self._checked_queues:
            self._checked_queues.add(validate_queue_name(queue))
        return queue

    def push(self, queue: str, payload: str) -> None:
        """Insert a job available now; durable when this returns."""
        self.later(queue, payload, 0.0)

    def later(self, queue: str, payload: str, delay: float) -> None:
        """Insert a job that becomes available `delay` seconds from now (database clock).

        The delay is capped at MAX_DELAY_SECONDS (a non-finite one is refused) and
        the queue name checked like every new job's (`validate_queue_name`).
        """
        delay = checked_delay(delay)
        params = {
            "queue": self._new_job_queue(queue),
            "payload": payload,
            "attempts": stored_attempts(payload),
            "delay": self._clock.offset(delay),
        }
        if self._postgres:
            params["channel"] = channel_for(queue)
        run_transaction(self._single, lambda c: self._hot(c, self._push_notifying, params))
        if delay <= 0 and not self._postgres:
            self.waker.notify(queue)

    def bulk(self, jobs: Sequence[tuple[str, str, float]]) -> None:
        """Insert many jobs in one transaction: all or none, ids in the given order."""
        if not jobs:
            return

        def work(connection: Connection) -> None:
            if not self._mysql:  # sqlite3's executemany is a loop in C: fastest there
                offset = self._clock.offset
                rows = [
                    {
                        "queue": self._new_job_queue(q),
                        "payload": p,
                        "attempts": stored_attempts(p),
                        "delay": offset(checked_delay(d)),
                    }
                    for q, p, d in jobs
                ]
                connection.execute(self._push, rows)
                if self._postgres:  # one wake-up per queue, with its earliest delay
                    for channel, delay in self._earliest(rows).items():
                        connection.execute(self._notify, {"channel": channel, "delay": delay})
                return
            for start in range(0, len(jobs), BULK_ROWS_PER_STATEMENT):
                chunk = jobs[start : start + BULK_ROWS_PER_STATEMENT]
                connection.execute(*self._bulk_statement(chunk))

        run_transaction(self.engine, work)
        for queue in {q for q, _, d in jobs if d <= 0}:
            self.waker.notify(queue)

    @staticmethod
    def _earliest(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The smallest delay of each queue's rows, keyed by its wake-up channel."""
        earliest: dict[str, Any] = {}
        for row in rows:
            channel = channel_for(row["queue"])
            if channel not in earliest or row["delay"] < earliest[channel]:
                earliest[channel] = row["delay"]
        return earliest

    def _bulk_statement(
        self, chunk: Sequence[tuple[str, str, float]]
    ) -> tuple[TextClause, dict[str, Any]]:
        rows: list[str] = []
        params: dict[str, Any] = {}
        for index, (queue, payload, delay) in enumerate(chunk):
            rows.append(
                f"(:q{index}, :p{index}, :a{index}, {self._clock.at(f'd{index}')}, "
                f"{self._clock.now})"
            )
            params[f"q{index}"] = self._new_job_queue(queue)
            params[f"p{index}"] = payload
            params[f"a{index}"] = stored_attempts(payload)
            params[f"d{index}"] = self._clock.offset(checked_delay(delay))
        return text(self._insert_sql + ", ".join(rows)), params

    # -- claiming ---------------------------------------------------------

    def pop(self, queues: Sequence[str], block: float = 0.0) -> ReservedJob | None:
        """Reserve the oldest available job of the first queue (in the given order) that has one.

        Expired reservations of due jobs count as available (their attempts
        were counted when they were reserved). With `block > 0`, polls every
        `BLOCKING_POLL_SECONDS` until a job is claimed or `block` seconds pass; on
        PostgreSQL it waits for a NOTIFY instead, claiming again at least every
        `NOTIFY_FALLBACK_POLL_SECONDS` (expired leases, delayed jobs).
        """
        waker = self._waker
        if waker is None:
            return self._blocking(queues, block, lambda: self._claim_once(queues))
        deadline = time.monotonic() + block
        waker.drain()
        while True:
            job = self._claim_once(queues)
            remaining = deadline - time.monotonic()
            if job is not None or remaining <= 0:
                return job
            waker.wait(queues, min(NOTIFY_FALLBACK_POLL_SECONDS, remaining))

    def _claim_once(self, queues: Sequence[str]) -> ReservedJob | None:
        expiry = self._clock.offset(-self.retry_after)

        def work(connection: Connection) -> ReservedJob | None:
            for queue in queues:
                rows = self._hot(
                    connection, self._claim, {"queue": queue, "expiry": expiry}
                ).fetchall()
                if rows and self._postgres:  # the claim's UPDATE already marked it
                    return self._reserved(queue, rows[0])
                if rows:
                    return self._mark_claimed(connection, queue, min(rows, key=lambda r: int(r[0])))
            return None

        # PostgreSQL: each queue's claim is one statement, atomic in autocommit.
        return run_transaction(self._single, work)

    def pop_many(self, queues: Sequence[str], count: int, block: float = 0.0) -> list[ReservedJob]:
        """Claim up to `count` rows in ONE transaction (a worker's prefetch), each its own lease.

        The rows are the `count` lowest ids that `count` pops would claim one by
        one (due pending and expired reservations, the first queue before the
        next), each marked reserved with one attempt counted and its own fencing
        token (`<row id>:<reservations>`). Waits like `pop` when none is due.
        """
        if count <= 1 or self._postgres:
            # PostgreSQL: one row per claim statement (see the module doc).
            job = self.pop(queues, block)
            return [] if job is None else [job]
        return self._blocking(queues, block, lambda: self._claim_many_once(queues, count))

    def _blocking(self, queues: Sequence[str], block: float, claim: Callable[[], T]) -> T:
        """`claim()` until it finds work or `block` seconds pass, waiting in between on
        the waker (woken by a push on this machine) and at most an adaptive poll
        interval: IDLE_POLL_BASE right after work, backing off (full jitter) to
        BLOCKING_POLL_SECONDS while idle, for pushes from other machines and
        delayed jobs coming due."""
        found = claim()
        if found or block <= 0:
            if found:
                self._idle.reset()
            return found
        deadline = time.monotonic() + block
        with self.waker.listen(queues) as listener:
            while True:
                found = claim()  # again, now that a notify cannot be missed
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    if found:
                        self._idle.reset()
                    return found
                listener.wait(min(self._idle.next_delay(), remaining))

    def _claim_many_once(self, queues: Sequence[str], count: int) -> list[ReservedJob]:
        expiry = self._clock.offset(-self.retry_after)

        def work(connection: Connection) -> list[ReservedJob]:
            claimed: list[ReservedJob] = []
            for queue in queues:
                wanted = count - len(claimed)
                if wanted <= 0:
                    break
                params = {"queue": queue, "expiry": expiry, "limit": wanted}
                rows = self._hot(connection, self._claim_many, params).fetchall()
                chosen = sorted(rows, key=lambda r: int(r[0]))[:wanted]
                claimed += [self._mark_claimed(connection, queue, row) for row in chosen]
            return claimed

        return run_transaction(self.engine, work)

    def ack_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Delete every finished job in ONE transaction, each fenced and given its `done`
        status row as `ack` does."""
        verdicts = self._fenced_many(jobs, self._ack_in)
        self._maybe_trim(any(verdicts))
        return verdicts

    def extend_many(self, jobs: Sequence[ReservedJob]) -> list[bool]:
        """Renew every lease in ONE transaction; each renewal fenced like `extend`."""
        return self._fenced_many(
            jobs, lambda connection, _job, params: self._renewed_in(connection, params)
        )

    def _renewed_in(self, connection: Connection, params: dict[str, Any]) -> bool:
        return self._hot(connection, self._extend, params).rowcount == 1

    def _fenced_many(
        self,
        jobs: Sequence[ReservedJob],
        settle: Callable[[Connection, ReservedJob, dict[str, Any]], bool],
    ) -> list[bool]:
        """Settle every job in ONE transaction, each fenced on its own token."""

        def work(connection: Connection) -> list[bool]:
            verdicts = []
            for job in jobs:
                fence = _parse_token(job.token)
                verdicts.append(
                    fence is not None and settle(connection, job, self._fence_params(fence))
                )
            return verdicts

        return run_transaction(self.engine, work) if jobs else []

    def _mark_claimed(self, connection: Connection, queue: str, row: Any) -> ReservedJob:
        """Reserve the chosen row (locked by the claim's SELECT, or BEGIN IMMEDIATE)."""
        self._hot(connection, self._mark, {"id": int(row[0])})
        return self._reserved(queue, row)

    def _reserved(self, queue: str, row: Any) -> ReservedJob:
        """The job of a claimed row, given as it was before the claim marked it."""
        row_id, attempts, reservations = int(row[0]), int(row[1]) + 1, int(row[2]) + 1
        payload = str(row[3])
        # held = last heartbeat - reservation start; the lease then ran retry_after more.
        held = None if row[4] is None else max(float(row[4]), 0.0) + self.retry_after
        return ReservedJob(
            id=envelope_id(payload) or f"malformed-{row_id}",
            queue=queue,
            payload=with_attempts(payload, attempts),
            attempts=attempts,
            token=f"{row_id}:{reservations}",
            abandoned_after=held,
        )

    # -- finishing (fenced) ---------------------------------------------------

    def _fenced(self, statement: TextClause, job: ReservedJob, **extra: Any) -> bool:
        fence = _parse_token(job.token)
        if fence is None:
            return False
        params = {
            "id": fence[0],
            "reservations": fence[1],
            "expiry": self._clock.offset(-self.retry_after),
            **extra,
        }
        count = run_transaction(self._single, lambda c: self._hot(c, statement, params).rowcount)
        return count == 1

    def ack(self, job: ReservedJob) -> bool:
        """Delete the job if this reservation is still live; else change nothing, False.

        The job's `done` status row is inserted in the same transaction.
        """
        fence = _parse_token(job.token)
        if fence is None:
            return False
        params = self._fence_params(fence)
        engine = self._single if self._postgres else self.engine
        acked = run_transaction(engine, lambda c: self._ack_in(c, job, params))
        self._maybe_trim(acked)
        return acked

    def _ack_in(self, connection: Connection, job: ReservedJob, params: dict[str, Any]) -> bool:
        """Delete one finished job (fenced by `params`) and insert its `done` status row,
        inside the caller's transaction; on PostgreSQL both are one statement."""
        status = self._status_params(job, "done")
        if status is None:
            return self._hot(connection, self._ack, params).rowcount == 1
        if self._postgres:
            return self._hot(connection, self._ack_with_status, params | status).rowcount == 1
        if self._hot(connection, self._ack, params).rowcount != 1:
            return False
        self._hot(connection, self._status_insert, status)
        return True

    def _maybe_trim(self, acked: bool) -> None:
        """After an ack, trim expired status rows if STATUS_TRIM_INTERVAL has passed."""
        if acked and time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + STATUS_TRIM_INTERVAL
            try:
                self.trim_workflow_rows()
            except QueueError as exc:  # the ack stands; the next trim tries again
                logger.warning("cannot delete expired job statuses: %s", exc)

    def _fence_params(self, fence: tuple[int, int]) -> dict[str, Any]:
        return {
            "id": fence[0],
            "reservations": fence[1],
            "expiry": self._clock.offset(-self.retry_after),
        }

    def _status_params(
        self, job: ReservedJob, state: str, exception: str | None = None
    ) -> dict[str, Any] | None:
        """The status row of a final settle; None for a migration's reservation (it moves
        on) and when JOB_STATUS_RETENTION is 0."""
        if job.token.endswith(TRANSFER_SUFFIX) or self.status_retention <= 0:
            return None
        return {
            "job_id": job.id,
            "status_queue": job.queue,
            "job": payload_job_name(job.payload),
            "state": state,
            "attempts": job.attempts,
            "reason": None if exception is None else status_reason(exception),
            "retention": self._clock.offset(self.status_retention),
        }

    def trim_workflow_rows(self) -> int:
        """Delete expired status rows and dispatch marks, STATUS_TRIM_ROWS per statement.

        Each table is read once (its oldest expired keys) and those rows are
        deleted by key: bounded, and the same SQL on every dialect. Returns the
        number deleted; rows left over go at the next trim.
        """
        deleted = 0
        for select, delete in self._trims:

            def work(
                connection: Connection, select: TextClause = select, delete: TextClause = delete
            ) -> int:
                keys = [row[0] for row in connection.execute(select).all()]
                if not keys:
                    return 0
                return int(connection.execute(delete, {"keys": keys}).rowcount)

            deleted += run_transaction(self.engine, work)
        return deleted

    def release(self, job: ReservedJob, delay: float = 0.0, *, undo_attempt: bool = False) -> bool:
        """Make the job available again after `delay` seconds; fenced like `ack`.

        With `undo_attempt` the same fenced UPDATE also takes back the attempt
        this reservation counted (never below 0); a migration's reservation
        counted none, so its release gives nothing back. The delay is capped at
        MAX_DELAY_SECONDS (a non-finite one is refused).
        """
        undo = undo_attempt and not job.token.endswith(TRANSFER_SUFFIX)
        statement = self._release_undo if undo else self._release
        delay = checked_delay(delay)
        extra: dict[str, Any] = {"delay": self._clock.offset(delay)}
        if self._postgres:
            extra["channel"] = channel_for(job.queue)
        released = self._fenced(statement, job, **extra)
        if released and delay <= 0 and not self._postgres:
            self.waker.notify(job.queue)
        return released

    def extend(self, job: ReservedJob) -> bool:
        """Renew the lease to `retry_after` seconds from now; fenced like `ack`."""
        return self._fenced(self._extend, job)

    def fail(self, job: ReservedJob, exception: str) -> bool:
        """Move the job to the failed store; fenced like `ack`.

        With a `DatabaseFailedStore` on the same engine the delete and the insert
        are one transaction. Otherwise the failed entry is written first and
        removed again if the fenced delete is refused, so a job is never in
        neither place.
        """
        fence = _parse_token(job.token)
        if fence is None:
            return False
        params = self._fence_params(fence)
        status = self._status_params(job, "failed", exception)
        store = self.failed_store

        def work(connection: Connection) -> bool:
            if self._hot(connection, self._ack, params).rowcount != 1:
                return False
            if status is not None:
                self._hot(connection, self._status_insert, status)
            if self._atomic_fail:
                assert isinstance(store, DatabaseFailedStore)
                store.add_in(connection, self.name, job.queue, job.payload, exception)
            return True

        if self._atomic_fail:
            return run_transaction(self.engine, work)
        failed_id = self.failed_store.add(self.name, job.queue, job.payload, exception)
        deleted = run_transaction(self.engine, work)
        if not deleted:
            self.failed_store.forget(failed_id)
            return False
        return True

    # -- inspection and maintenance --------------------------------------------

    def sizes(self, queue: str) -> QueueSizes:
        """Counts per state from live rows; expired reservations count as reserved."""
        row = run_transaction(self.engine, lambda c: c.execute(self._sizes, {"queue": queue}).one())
        age = None if row[3] is None else max(float(row[3]), 0.0)
        return QueueSizes(
            pending=int(row[0]),
            delayed=int(row[1]),
            reserved=int(row[2]),
            failed=self.failed_store.counts().get(queue, 0),
            oldest_pending_age=age,
        )

    def queues(self) -> list[str]:
        """Names of queues holding any pending, delayed or reserved job, sorted."""
        rows = run_transaction(self.engine, lambda c: c.execute(self._queues).all())
        return [str(row[0]) for row in rows]

    def take_for_transfer(self, queue: str, limit: int) -> list[ReservedJob]:
        """Reserve up to `limit` pending, delayed and lease-expired jobs, oldest first.

        Each job is reported with the row's attempts as they are, the count it
        should carry into the target: the move counts none, and an expired
        holder's attempt was counted when it claimed. The take adds one to the
        row's `reservations`, like any reservation, so its token
        `"{id}:{reservations}:transfer"` differs from every earlier one: a
        worker cut off past its lease (not dead) can no longer ack, release,
        extend or fail the row, whatever `release(undo_attempt=True)` did to
        `attempts` meanwhile. After the transfer lease expires, a worker's claim
        or a re-run's take adds one again and so fences out the dead migration.
        """
        if limit <= 0:
            return []
        params = {
            "queue": queue,
            "limit": limit,
            "expiry": self._clock.offset(-self.retry_after),
        }

        def work(connection: Connection) -> list[Any]:
            rows = list(connection.execute(self._transfer_select, params).all())
            if rows:
                connection.execute(self._transfer_mark, {"ids": [int(r[0]) for r in rows]})
            return rows

        rows = sorted(run_transaction(self.engine, work), key=lambda r: int(r[0]))
        return [
            ReservedJob(
                id=envelope_id(str(payload)),
                queue=queue,
                payload=with_attempts(str(payload), int(attempts)),
                attempts=int(attempts),
                token=f"{int(job_id)}:{int(reservations) + 1}{TRANSFER_SUFFIX}",
                available_at=float(available_at),
            )
            for job_id, attempts, reservations, payload, available_at in rows
        ]

    def contains(self, queue: str, job_id: str) -> bool:
        """True if a pending, delayed or reserved job of `queue` has this envelope id.

        A LIKE over the queue's rows (no index holds envelope ids): a
        non-locking read, never holding up the workers.
        """
        pattern = like_envelope_id(job_id)
        rows = run_transaction(
            self.engine,
            lambda c: c.execute(self._contains, {"queue": queue, "pattern": pattern}).all(),
        )
        return any(envelope_id(str(row[0])) == job_id for row in rows)

    def dispatch_once(self, queue: str, payload: str, delay: float = 0.0) -> bool:
        """Insert the job and its dispatch mark in one transaction, unless the mark exists.

        The mark's primary key is the job id: a second dispatch of the same
        workflow step violates it, its transaction rolls back, and False is
        returned. The mark lives JOB_STATUS_RETENTION seconds.
        """
        job_id = envelope_id(payload)
        if not job_id:
            raise ValueError("dispatch_once needs a job envelope with an id")
        job = {
            "queue": self._new_job_queue(queue),
            "payload": payload,
            "attempts": stored_attempts(payload),
            "delay": self._clock.offset(checked_delay(delay)),
        }
        mark = {"job_id": job_id, "retention": self._clock.offset(self.workflow_retention)}
        if self._postgres:
            job["channel"] = channel_for(queue)  # wakes a LISTENing worker (pg_wakeup.py)

        def work(connection: Connection) -> None:
            connection.execute(self._mark_insert, mark)
            connection.execute(self._push_notifying, job)

        try:
            run_transaction(self.engine, work)
        except QueueError as exc:
            if _is_duplicate_key(exc):
                return False
            raise
        return True

    def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status: its live row in `queue_jobs` if it has one, else its newest
        status row. The live lookup is a LIKE on payloads (no index holds envelope
        ids): an operator's read, never taking a lock."""
        pattern = like_envelope_id(job_id)

        def work(connection: Connection) -> tuple[list[Any], Any]:
            live = connection.execute(self._live_select, {"pattern": pattern}).all()
            final = connection.execute(self._status_select, {"job_id": job_id}).first()
            return list(live), final

        live, final = run_transaction(self.engine, work)
        for queue, attempts, reserved_at, available_at, payload in live:
            if envelope_id(str(payload)) != job_id:
                continue
            if reserved_at is None:
                return JobStatus(job_id, "queued", str(queue), self.name, attempts=int(attempts))
            return JobStatus(
                job_id,
                "running",
                str(queue),
                self.name,
                job=payload_job_name(str(payload)),
                attempts=int(attempts),
                started_at=float(available_at),
            )
        if final is None:
            return None
        queue, job, state, attempts, reason, finished_at = final
        return JobStatus(
            job_id,
            str(state),
            str(queue),
            self.name,
            job=None if job is None else str(job),
            attempts=int(attempts),
            finished_at=float(finished_at),
            reason=None if reason is None else str(reason),
        )

    def clear(self, queue: str) -> int:
        """Delete every job of `queue` (any state); return how many were deleted."""
        return int(
            run_transaction(
                self.engine, lambda c: c.execute(self._clear, {"queue": queue}).rowcount
            )
        )

    def close(self) -> None:
        """Drop the engine's pooled connections without closing them over the wire.

        The engine may be shared (and, after fork, its sockets belong to the
        parent), so nothing is sent to the server; the sockets close when freed.
        The PostgreSQL wake-up connection is this process's own and is closed.
        """
        if self._waker is not None:
            self._waker.close()
        self.engine.dispose(close=False)
