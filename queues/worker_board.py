"""Where worker processes say they are alive and what they run, and hear `--queue-restart`.

Each worker writes its state (name, pid, host, connection, queues, the job it
runs now, jobs done per queue) every `REPORT_INTERVAL` seconds from a
background thread, never on the per-job path, and reads the restart marker in
the same round trip. The dashboard lists the workers whose last report is
younger than `STALE_AFTER` seconds; older entries (a worker killed with -9) are
removed when listed. The board lives on the worker's own connection:

* Redis: the Hash `routemq:workers` (worker id -> JSON state with `seen`) and
  the key `routemq:workers:restart` (unix time of the last restart request).
* SQL: the table `queue_workers` (backends/sql_tables.py), with the restart
  request in the row `*restart`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from typing import Any

import redis
from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.exc import DBAPIError

from backends.redis_client import redis_errors
from backends.sql_errors import connection_error
from backends.sql_tables import Base
from queues.drivers.base import QueueDriver

#: Seconds between two reports of one worker.
REPORT_INTERVAL = 2.0
#: Seconds after its last report when a worker counts as gone.
STALE_AFTER = 5 * REPORT_INTERVAL
#: Redis Hash of the workers' states.
REDIS_WORKERS_KEY = "routemq:workers"
#: Redis key holding the unix time of the last `--queue-restart`.
REDIS_RESTART_KEY = "routemq:workers:restart"
#: `queue_workers` row holding the last `--queue-restart` (worker ids never start with '*').
RESTART_ROW = "*restart"

State = dict[str, Any]


class WorkerBoard(ABC):
    """The live workers of one connection and its restart marker."""

    @abstractmethod
    def report(self, worker_id: str, state: State) -> float | None:
        """Store `state` as `worker_id`'s, seen now; return the restart marker (None: never)."""

    @abstractmethod
    def remove(self, worker_id: str) -> None:
        """Take a stopping worker off the board."""

    @abstractmethod
    def workers(self) -> list[State]:
        """The states of the live workers, oldest first; stale entries are removed."""

    @abstractmethod
    def request_restart(self) -> float:
        """Ask every worker to exit after its current job; return the marker written."""

    @abstractmethod
    def restart_marker(self) -> float | None:
        """The time of the last restart request, or None."""


def _live(entries: list[State], now: float) -> tuple[list[State], list[str]]:
    """(live states oldest first, ids of stale ones)."""
    live = [e for e in entries if now - float(e.get("seen", 0)) <= STALE_AFTER]
    stale = [str(e.get("id")) for e in entries if now - float(e.get("seen", 0)) > STALE_AFTER]
    return sorted(live, key=lambda e: float(e.get("started_at", 0))), stale


class RedisWorkerBoard(WorkerBoard):
    """The board in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def report(self, worker_id: str, state: State) -> float | None:
        """One round trip: HSET the state, GET the restart marker."""
        entry = json.dumps({**state, "id": worker_id, "seen": time.time()})
        with redis_errors(self.client):
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(REDIS_WORKERS_KEY, worker_id, entry)
            pipe.get(REDIS_RESTART_KEY)
            _, marker = pipe.execute()
        return None if marker is None else float(marker)

    def remove(self, worker_id: str) -> None:
        """HDEL the worker."""
        with redis_errors(self.client):
            self.client.hdel(REDIS_WORKERS_KEY, worker_id)

    def workers(self) -> list[State]:
        """HGETALL, dropping (and HDEL-ing) stale entries."""
        with redis_errors(self.client):
            raw = self.client.hgetall(REDIS_WORKERS_KEY)
        entries = [json.loads(value) for value in raw.values()]
        live, stale = _live(entries, time.time())
        if stale:
            with redis_errors(self.client):
                self.client.hdel(REDIS_WORKERS_KEY, *stale)
        return live

    def request_restart(self) -> float:
        """SET the marker to now."""
        now = time.time()
        with redis_errors(self.client):
            self.client.set(REDIS_RESTART_KEY, repr(now))
        return now

    def restart_marker(self) -> float | None:
        """GET the marker."""
        with redis_errors(self.client):
            marker = self.client.get(REDIS_RESTART_KEY)
        return None if marker is None else float(marker)


class DatabaseWorkerBoard(WorkerBoard):
    """The board in the `queue_workers` table (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._table = Base.metadata.tables["queue_workers"]

    def _run(self, work: Any) -> Any:
        try:
            with self.engine.begin() as connection:
                return work(connection)
        except DBAPIError as exc:
            raise connection_error(self.engine, exc) from None

    def _upsert(self, connection: Connection, row_id: str, state: str, seen: float) -> None:
        table = self._table
        changed = connection.execute(
            update(table).where(table.c.id == row_id).values(state=state, seen_at=seen)
        )
        if changed.rowcount == 0:
            connection.execute(table.insert().values(id=row_id, state=state, seen_at=seen))

    def report(self, worker_id: str, state: State) -> float | None:
        """One transaction: UPDATE (or INSERT) the row, read the restart row."""
        now = time.time()
        entry = json.dumps({**state, "id": worker_id, "seen": now})

        def work(connection: Connection) -> float | None:
            self._upsert(connection, worker_id, entry, now)
            return self._marker(connection)

        marker: float | None = self._run(work)
        return marker

    def _marker(self, connection: Connection) -> float | None:
        table = self._table
        value = connection.execute(
            select(table.c.seen_at).where(table.c.id == RESTART_ROW)
        ).scalar()
        return None if value is None else float(value)

    def remove(self, worker_id: str) -> None:
        """DELETE the worker's row."""
        table = self._table
        self._run(lambda c: c.execute(delete(table).where(table.c.id == worker_id)))

    def workers(self) -> list[State]:
        """Every worker row, dropping (and deleting) stale ones."""
        table = self._table
        rows = self._run(
            lambda c: c.execute(select(table.c.state).where(table.c.id != RESTART_ROW)).all()
        )
        live, stale = _live([json.loads(row[0]) for row in rows], time.time())
        if stale:
            self._run(lambda c: c.execute(delete(table).where(table.c.id.in_(stale))))
        return live

    def request_restart(self) -> float:
        """Write the restart row with now."""
        now = time.time()
        self._run(lambda c: self._upsert(c, RESTART_ROW, "{}", now))
        return now

    def restart_marker(self) -> float | None:
        """Read the restart row."""
        marker: float | None = self._run(self._marker)
        return marker


def board_of(driver: QueueDriver) -> WorkerBoard:
    """The worker board on the connection of `driver`."""
    from queues.drivers.redis import RedisDriver

    if isinstance(driver, RedisDriver):
        return RedisWorkerBoard(driver.client)
    engine = getattr(driver, "engine", None)
    if engine is None:
        raise ValueError(f"the {driver.name} connection has no worker board")
    return DatabaseWorkerBoard(engine)
