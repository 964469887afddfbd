"""Where a batch's progress lives: the Redis or SQL store beside the queue driver.

A batch (queues/workflows.py) is recorded before its jobs are queued; each of
its jobs, when it finishes for good (acked, or failed after its last attempt),
is counted once by `BatchStore.finish`, one atomic step that adds the job id
to the batch's finished set, reports whether it was new, and lowers `pending`
only then. Whoever's step brings `pending` to 0 learns it from that same step.

Batch keys span queues, so batch accounting is its own call (only jobs of a
batch pay it), never part of a queue's script:

* Redis: `routemq:batch:{<id>}` (Hash: total, pending, done, failed,
  callbacks, name, created_at, finished_at) and `routemq:batch:{<id>}:jobs`
  (Set of finished job ids), one cluster slot per batch (the braces); both
  expire JOB_STATUS_RETENTION seconds after the last job finished
  (batch_create.lua, batch_finish.lua). `routemq:batches` (Sorted Set id ->
  created_at) lists batches for the dashboard; ids whose state expired are
  dropped from it when it is read.
* SQL: `queue_batches` (one row per batch, locked FOR UPDATE while a job is
  counted) and `queue_batch_jobs` (primary key batch id + job id). Finished
  batches past their `expires_at` are deleted in bounded batches when a new
  batch is created.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from backends.sql_tables import QueueBatch, QueueBatchJob
from queues.drivers.base import QueueDriver

#: Key prefix of a batch's Redis keys (its id goes in braces: one cluster slot).
BATCH_PREFIX = "routemq:batch:"
#: Sorted Set of batch ids by creation time (the dashboard's list).
BATCH_INDEX_KEY = "routemq:batches"
#: Seconds an unfinished batch stays in the Redis list of batches (30 days).
BATCH_INDEX_HORIZON = 30 * 24 * 3600
#: Most expired batches one SQL trim deletes.
BATCH_TRIM_ROWS = 500
#: The SQL tables of batches (Core tables of backends/sql_tables.py).
BATCHES = cast(Table, QueueBatch.__table__)
BATCH_JOBS = cast(Table, QueueBatchJob.__table__)
#: Outcomes a finished job is counted as.
OUTCOMES = ("done", "failed")


@dataclass(frozen=True)
class BatchState:
    """A batch's progress: `pending` jobs still to finish, `done` and `failed` ones."""

    id: str
    total: int
    pending: int
    done: int
    failed: int
    created_at: float | None = None  #: unix time
    finished_at: float | None = None  #: unix time the last job finished; None while pending
    name: str | None = None
    #: callback name ("then", "catch", "finally") -> its envelope as a dict
    callbacks: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data (CLI --json, the dashboard's API)."""
        return {
            "id": self.id,
            "name": self.name,
            "total": self.total,
            "pending": self.pending,
            "done": self.done,
            "failed": self.failed,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "callbacks": sorted(self.callbacks),
        }


@dataclass(frozen=True)
class Finished:
    """What `BatchStore.finish` did: `new` is False when the job had been counted already."""

    new: bool
    pending: int
    done: int
    failed: int


class BatchStore(ABC):
    """The progress of batches on one backend."""

    def __init__(self, retention: int) -> None:
        self.retention = retention

    @abstractmethod
    def create(
        self, batch_id: str, total: int, callbacks: dict[str, Any], name: str | None
    ) -> bool:
        """Record a new batch of `total` jobs; False (no change) if it exists already."""

    @abstractmethod
    def finish(self, batch_id: str, job_id: str, outcome: str) -> Finished | None:
        """Count one finished job once (atomic); None if the batch is unknown (expired)."""

    @abstractmethod
    def get(self, batch_id: str) -> BatchState | None:
        """The batch's state, or None if unknown."""

    @abstractmethod
    def recent(self, limit: int = 50) -> list[BatchState]:
        """The newest batches first, at most `limit`."""


class RedisBatchStore(BatchStore):
    """Batches in Redis (see the module docstring for the keys)."""

    def __init__(self, client: Any, retention: int) -> None:
        from queues.drivers.redis import load_scripts

        super().__init__(retention)
        self.client = client
        self._scripts = load_scripts(client)

    @staticmethod
    def keys(batch_id: str) -> tuple[str, str]:
        """The state hash and finished set of one batch (one cluster slot)."""
        state = f"{BATCH_PREFIX}{{{batch_id}}}"
        return state, f"{state}:jobs"

    def create(
        self, batch_id: str, total: int, callbacks: dict[str, Any], name: str | None
    ) -> bool:
        """Write the state (batch_create.lua), then list it (its own call: another slot)."""
        created = self._scripts["batch_create"](
            keys=list(self.keys(batch_id)), args=[total, json.dumps(callbacks), name or ""]
        )
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(BATCH_INDEX_KEY, {batch_id: now})
        pipe.zremrangebyscore(BATCH_INDEX_KEY, "-inf", now - BATCH_INDEX_HORIZON)
        pipe.execute()
        return bool(created)

    def finish(self, batch_id: str, job_id: str, outcome: str) -> Finished | None:
        """Count the job once (batch_finish.lua)."""
        reply = self._scripts["batch_finish"](
            keys=list(self.keys(batch_id)), args=[job_id, outcome, self.retention]
        )
        if int(reply[0]) < 0:
            return None
        return Finished(bool(int(reply[0])), int(reply[1]), int(reply[2]), int(reply[3]))

    def get(self, batch_id: str) -> BatchState | None:
        """The state hash as a BatchState."""
        return _redis_state(batch_id, self.client.hgetall(self.keys(batch_id)[0]))

    def recent(self, limit: int = 50) -> list[BatchState]:
        """The newest listed batches; ids whose state expired are unlisted."""
        ids = [_text(i) for i in self.client.zrevrange(BATCH_INDEX_KEY, 0, limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys(batch_id)[0])
        states = [_redis_state(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True)]
        gone = [i for i, state in zip(ids, states, strict=True) if state is None]
        if gone:
            self.client.zrem(BATCH_INDEX_KEY, *gone)
        return [state for state in states if state is not None]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _redis_state(batch_id: str, raw: dict[Any, Any]) -> BatchState | None:
    if not raw:
        return None
    data = {_text(k): _text(v) for k, v in raw.items()}
    finished = data.get("finished_at")
    return BatchState(
        id=batch_id,
        total=int(data["total"]),
        pending=int(data["pending"]),
        done=int(data["done"]),
        failed=int(data["failed"]),
        created_at=float(data["created_at"]) if data.get("created_at") else None,
        finished_at=float(finished) if finished else None,
        name=data.get("name") or None,
        callbacks=json.loads(data.get("callbacks") or "{}"),
    )


class DatabaseBatchStore(BatchStore):
    """Batches in `queue_batches` / `queue_batch_jobs` (dialect-neutral SQLAlchemy Core)."""

    def __init__(self, engine: Engine, retention: int) -> None:
        super().__init__(retention)
        self.engine = engine

    def _run(self, work: Any) -> Any:
        from queues.drivers.database import run_transaction

        return run_transaction(self.engine, work)

    def create(
        self, batch_id: str, total: int, callbacks: dict[str, Any], name: str | None
    ) -> bool:
        """Insert the batch row (and trim expired batches, bounded); False if it exists."""
        batches = BATCHES
        now = time.time()

        def work(connection: Connection) -> bool:
            self._trim(connection, now)
            exists = connection.execute(
                select(batches.c.id).where(batches.c.id == batch_id)
            ).first()
            if exists is not None:
                return False
            connection.execute(
                insert(batches).values(
                    id=batch_id,
                    name=name,
                    total=total,
                    pending=total,
                    done=0,
                    failed=0,
                    callbacks=json.dumps(callbacks),
                    created_at=now,
                )
            )
            return True

        return bool(self._run(work))

    def _trim(self, connection: Connection, now: float) -> None:
        batches, jobs = BATCHES, BATCH_JOBS
        expired = [
            row[0]
            for row in connection.execute(
                select(batches.c.id)
                .where(batches.c.expires_at < now)
                .order_by(batches.c.expires_at)
                .limit(BATCH_TRIM_ROWS)
            )
        ]
        if expired:
            connection.execute(delete(jobs).where(jobs.c.batch_id.in_(expired)))
            connection.execute(delete(batches).where(batches.c.id.in_(expired)))

    def finish(self, batch_id: str, job_id: str, outcome: str) -> Finished | None:
        """Lock the batch row, insert the job's row unless there is one, count it once.

        The counters are written as read under the row lock plus this job, so
        concurrent finishes of one batch take turns (FOR UPDATE; SQLite's
        BEGIN IMMEDIATE). The statements are built once (`_FINISH`).
        """
        lock_row, seen, add_job, write = _FINISH
        keys = {"b_id": batch_id, "j_id": job_id}

        def work(connection: Connection) -> Finished | None:
            row = connection.execute(lock_row, keys).first()
            if row is None:
                return None
            if connection.execute(seen, keys).scalar_one():
                return Finished(False, int(row[0]), int(row[1]), int(row[2]))
            connection.execute(add_job, keys | {"o": outcome})
            pending = int(row[0]) - 1
            done = int(row[1]) + (outcome == "done")
            failed = int(row[2]) + (outcome == "failed")
            now = time.time() if pending <= 0 else None
            values = {"p": pending, "d": done, "f": failed, "at": now}
            values["exp"] = None if now is None else now + self.retention
            connection.execute(write, keys | values)
            return Finished(True, pending, done, failed)

        result: Finished | None = self._run(work)
        return result

    def get(self, batch_id: str) -> BatchState | None:
        """The batch row as a BatchState."""
        batches = BATCHES
        row = self._run(
            lambda c: c.execute(select(batches).where(batches.c.id == batch_id)).first()
        )
        return None if row is None else _sql_state(row)

    def recent(self, limit: int = 50) -> list[BatchState]:
        """The newest batch rows."""
        batches = BATCHES
        rows = self._run(
            lambda c: c.execute(
                select(batches).order_by(batches.c.created_at.desc()).limit(limit)
            ).all()
        )
        return [_sql_state(row) for row in rows]


#: The statements of `DatabaseBatchStore.finish`, built once: lock the batch row,
#: is the job counted, count the job, write the counters.
_FINISH = (
    select(BATCHES.c.pending, BATCHES.c.done, BATCHES.c.failed)
    .where(BATCHES.c.id == bindparam("b_id"))
    .with_for_update(),
    select(func.count())
    .select_from(BATCH_JOBS)
    .where(BATCH_JOBS.c.batch_id == bindparam("b_id"), BATCH_JOBS.c.job_id == bindparam("j_id")),
    insert(BATCH_JOBS).values(
        batch_id=bindparam("b_id"), job_id=bindparam("j_id"), outcome=bindparam("o")
    ),
    update(BATCHES)
    .where(BATCHES.c.id == bindparam("b_id"))
    .values(
        pending=bindparam("p"),
        done=bindparam("d"),
        failed=bindparam("f"),
        finished_at=bindparam("at"),
        expires_at=bindparam("exp"),
    ),
)


def _sql_state(row: Any) -> BatchState:
    data = row._mapping
    return BatchState(
        id=str(data["id"]),
        total=int(data["total"]),
        pending=int(data["pending"]),
        done=int(data["done"]),
        failed=int(data["failed"]),
        created_at=data["created_at"],
        finished_at=data["finished_at"],
        name=data["name"],
        callbacks=json.loads(data["callbacks"]),
    )


def batch_store_for(driver: QueueDriver) -> BatchStore:
    """The batch store on the same backend (and connection) as `driver`."""
    from queues.drivers.database import DatabaseDriver
    from queues.drivers.redis import RedisDriver

    if isinstance(driver, RedisDriver):
        return RedisBatchStore(driver.client, driver.workflow_retention)
    if isinstance(driver, DatabaseDriver):
        return DatabaseBatchStore(driver.engine, driver.workflow_retention)
    raise ValueError(f"the {driver.name} connection cannot hold batches: use redis or database")
