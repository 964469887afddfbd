"""Coordination primitives shared by unique jobs, message dedupe, rate limits, overlap
locks and the scheduler: one atomic step each, on Redis or SQL.

* `claim(name, token, ttl)`: take a named lock for `token` unless a live holder has
  it; returns the holder after the call (`token` itself when it won). A claim
  expires after `ttl` seconds, so a crashed holder never blocks for ever.
* `release(name, token)` / `extend(name, token, ttl)`: only by the holder (fenced
  by its token); a stale holder changes nothing.
* `take(name, limit, per)`: one pass of a sliding-window rate limit: at most
  `limit` passes in ANY interval of `per` seconds, across processes and machines;
  returns 0 when this call passed, else the seconds until a pass frees up.

Redis: one Lua script per step (queues/drivers/redis_scripts/coordination/), one
key per call (`routemq:coord:{name}`), timed by the server clock. SQL: the
`queue_locks` table (backends/sql_tables.py), one transaction per step, timed by
the database clock; a claim is a unique-key INSERT (the loser reads the holder),
a rate limit is `limit` slot rows of which a pass takes a free one under a row
lock (`FOR UPDATE SKIP LOCKED`; SQLite serialises writers with BEGIN IMMEDIATE).
Dialect-neutral SQLAlchemy Core apart from the one "now" expression per backend.

`coordinator_for(target)` picks the store of a dispatch target: the Redis
driver's client, the database driver's engine, or a process-local store for the
`sync` connection and a test's fake queue.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from backends.sql_tables import MYSQL_DIALECTS, QueueLock
from queues.drivers.redis import SCRIPTS_DIR, script_source

#: Prefix of every coordination key in Redis (one key per claim or rate limit).
REDIS_PREFIX = "routemq:coord:"
#: Folder of the coordination scripts (not loaded by the queue driver).
COORDINATION_SCRIPTS = SCRIPTS_DIR / "coordination"
#: Longest coordination name, characters (the SQL key column, minus the slot suffix).
MAX_NAME_LENGTH = 180
#: Most slots (passes per window) a SQL rate limit keeps as rows.
MAX_SQL_RATE_LIMIT = 10_000
#: Times a SQL claim is tried when its holder vanished between the INSERT and the read.
CLAIM_ATTEMPTS = 5
#: Seconds: the shortest wait a refused rate-limit pass reports.
MIN_WAIT = 0.001

_TABLE: Table = QueueLock.__table__  # type: ignore[assignment]


class Coordinator(ABC):
    """The atomic primitives (see the module docstring) over one backing store."""

    @abstractmethod
    def claim(self, name: str, token: str, ttl: float) -> str:
        """Hold `name` for `token` for `ttl` seconds unless held; return the holder."""

    @abstractmethod
    def release(self, name: str, token: str) -> bool:
        """Free `name` if `token` holds it; False (no change) otherwise."""

    @abstractmethod
    def extend(self, name: str, token: str, ttl: float) -> bool:
        """Make `token`'s claim on `name` last `ttl` seconds from now; False if not held."""

    @abstractmethod
    def take(self, name: str, limit: int, per: float) -> float:
        """One pass of the limit `name`: 0.0 if granted, else seconds to wait (> 0)."""


def check_name(name: str) -> str:
    """`name` if usable as a coordination key; ValueError naming it otherwise."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"coordination key {name!r} must be a non-empty string of at most "
            f"{MAX_NAME_LENGTH} characters; hash a longer one"
        )
    return name


def check_ttl(ttl: float, what: str = "ttl") -> float:
    """`ttl` if finite and > 0; ValueError naming `what` otherwise."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"{what} must be seconds > 0, got {ttl!r}")
    return float(ttl)


def check_limit(limit: int, per: float) -> None:
    """ValueError naming the bad value unless `limit` >= 1 and `per` > 0."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"rate limit must be an integer >= 1, got {limit!r}")
    check_ttl(per, "rate limit period (per)")


class RedisCoordinator(Coordinator):
    """The primitives as Lua scripts on one Redis client (server clock, one key per call)."""

    def __init__(self, client: Any, prefix: str = REDIS_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._scripts = {
            path.stem: client.register_script(script_source(path))
            for path in sorted(COORDINATION_SCRIPTS.glob("*.lua"))
        }

    def key(self, name: str) -> str:
        """The Redis key of coordination name `name`."""
        return f"{self.prefix}{check_name(name)}"

    def claim(self, name: str, token: str, ttl: float) -> str:
        millis = max(math.ceil(check_ttl(ttl) * 1000), 1)
        holder = self._scripts["claim"](keys=[self.key(name)], args=[token, millis])
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    def release(self, name: str, token: str) -> bool:
        return bool(self._scripts["release"](keys=[self.key(name)], args=[token]))

    def extend(self, name: str, token: str, ttl: float) -> bool:
        millis = max(math.ceil(check_ttl(ttl) * 1000), 1)
        return bool(self._scripts["extend"](keys=[self.key(name)], args=[token, millis]))

    def take(self, name: str, limit: int, per: float) -> float:
        check_limit(limit, per)
        micros = max(round(per * 1_000_000), 1)
        wait = self._scripts["rate_take"](
            keys=[self.key(f"rate:{name}")], args=[limit, micros, uuid.uuid4().hex]
        )
        return 0.0 if int(wait) == 0 else max(int(wait) / 1_000_000, MIN_WAIT)


def _now_sql(dialect: str) -> str:
    """SQL for the database clock as unix seconds (fractional), per backend."""
    if dialect in MYSQL_DIALECTS:
        return "UNIX_TIMESTAMP(NOW(6))"
    if dialect == "postgresql":
        return "EXTRACT(EPOCH FROM clock_timestamp())"
    return "((julianday('now') - 2440587.5) * 86400.0)"


class SqlCoordinator(Coordinator):
    """The primitives as transactions on the `queue_locks` table (database clock)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._now: ColumnElement[float] = literal_column(_now_sql(engine.dialect.name))

    def _run(self, work: Any) -> Any:
        # Late import: the database driver's retry of deadlocks and lock timeouts.
        from queues.drivers.database import run_transaction

        return run_transaction(self.engine, work)

    def claim(self, name: str, token: str, ttl: float) -> str:
        check_name(name)
        seconds = check_ttl(ttl)
        table = _TABLE
        live = and_(table.c.name == name, table.c.expires_at > self._now)

        def work(connection: Connection) -> str | None:
            connection.execute(
                delete(table).where(table.c.name == name, table.c.expires_at <= self._now)
            )
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(table).values(
                            name=name, scope=name, holder=token, expires_at=self._now + seconds
                        )
                    )
                return token
            except IntegrityError:
                holder = connection.execute(select(table.c.holder).where(live)).scalar()
                return None if holder is None else str(holder)

        for _ in range(CLAIM_ATTEMPTS):
            holder = self._run(work)
            if holder is not None:
                return str(holder)
        raise RuntimeError(f"coordination key {name!r}: claim kept racing; try again")

    def release(self, name: str, token: str) -> bool:
        table = _TABLE
        statement = delete(table).where(table.c.name == name, table.c.holder == token)
        return bool(self._run(lambda c: c.execute(statement).rowcount))

    def extend(self, name: str, token: str, ttl: float) -> bool:
        seconds = check_ttl(ttl)
        table = _TABLE
        statement = (
            update(table)
            .where(table.c.name == name, table.c.holder == token, table.c.expires_at > self._now)
            .values(expires_at=self._now + seconds)
        )
        return bool(self._run(lambda c: c.execute(statement).rowcount))

    def take(self, name: str, limit: int, per: float) -> float:
        check_limit(limit, per)
        if limit > MAX_SQL_RATE_LIMIT:
            raise ValueError(
                f"rate limit {name!r}: {limit} passes per window is more than the SQL store "
                f"keeps ({MAX_SQL_RATE_LIMIT}); use Redis or a shorter period"
            )
        scope = f"rate:{check_name(name)}"
        table = _TABLE
        free_slot = (
            select(table.c.name)
            .where(table.c.scope == scope, table.c.expires_at <= self._now)
            .order_by(table.c.expires_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        state = select(func.count(), func.min(table.c.expires_at) - self._now).where(
            table.c.scope == scope
        )

        def work(connection: Connection) -> float | None:
            slot = connection.execute(free_slot).scalar()
            if slot is not None:
                connection.execute(
                    update(table).where(table.c.name == slot).values(expires_at=self._now + per)
                )
                return 0.0
            count, soonest = connection.execute(state).one()
            if count >= limit:
                return max(float(soonest or 0.0), MIN_WAIT)
            # First passes of this limit: make its slots, taking the first one.
            rows = [
                {"name": f"{scope}#{index}", "scope": scope, "holder": "", "expires_at": 0.0}
                for index in range(count, limit)
            ]
            try:
                with connection.begin_nested():
                    connection.execute(insert(table), rows)
            except IntegrityError:
                return None  # another process made them meanwhile: look again
            first = update(table).where(table.c.name == rows[0]["name"])
            connection.execute(first.values(expires_at=self._now + per))
            return 0.0

        for _ in range(CLAIM_ATTEMPTS):
            wait = self._run(work)
            if wait is not None:
                return float(wait)
        return MIN_WAIT


class LocalCoordinator(Coordinator):
    """The primitives in this process's memory: for the `sync` connection and fake queues."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, tuple[str, float]] = {}
        self._passes: dict[str, list[float]] = {}

    def claim(self, name: str, token: str, ttl: float) -> str:
        seconds = check_ttl(ttl)
        now = time.monotonic()
        with self._lock:
            held = self._claims.get(check_name(name))
            if held is not None and held[1] > now:
                return held[0]
            self._claims[name] = (token, now + seconds)
            return token

    def release(self, name: str, token: str) -> bool:
        with self._lock:
            held = self._claims.get(name)
            if held is None or held[0] != token:
                return False
            del self._claims[name]
            return True

    def extend(self, name: str, token: str, ttl: float) -> bool:
        seconds = check_ttl(ttl)
        now = time.monotonic()
        with self._lock:
            held = self._claims.get(name)
            if held is None or held[0] != token or held[1] <= now:
                return False
            self._claims[name] = (token, now + seconds)
            return True

    def take(self, name: str, limit: int, per: float) -> float:
        check_limit(limit, per)
        now = time.monotonic()
        with self._lock:
            passes = [t for t in self._passes.get(name, []) if t > now - per]
            if len(passes) < limit:
                passes.append(now)
                self._passes[name] = passes
                return 0.0
            self._passes[name] = passes
            return max(passes[0] + per - now, MIN_WAIT)


_local = LocalCoordinator()
_by_store: weakref.WeakKeyDictionary[Any, Coordinator] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def coordinator_for(target: Any) -> Coordinator:
    """The coordinator beside a dispatch target: a driver's Redis client or SQL engine
    (one per client or engine, cached), else the process-local one."""
    store = getattr(target, "client", None) or getattr(target, "engine", None)
    if store is None:
        return _local
    with _by_store_lock:
        found = _by_store.get(store)
        if found is None:
            found = (
                RedisCoordinator(store)
                if store is getattr(target, "client", None)
                else (SqlCoordinator(store))
            )
            _by_store[store] = found
        return found


def default_coordinator(connection: str | None = None) -> Coordinator:
    """The coordinator of queue connection `connection` (default QUEUE_CONNECTION);
    the process-local one for the `sync` connection."""
    from queues import connections

    name = connection or connections.current_settings().queue_connection
    if name == "sync":
        return _local
    return coordinator_for(connections.get_driver(name))
