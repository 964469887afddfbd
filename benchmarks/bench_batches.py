"""Chains and batches: the worker's before-settle hook on a plain job, and batch accounting.

* The hook runs before every settle; on a plain job it must cost next to
  nothing. Baseline: reading the envelope's id prefix (`JOB_ID_HEAD`), the
  per-job string work the drivers already do.
* Counting a finished batch job (`BatchStore.finish`, one atomic step) on Redis
  against the same writes sent raw (MULTI: SADD + two HINCRBY), and on SQLite
  against the same statements over raw sqlite3 with the same commit.

Redis figures use test database 9 under private keys, deleted afterwards.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from pathlib import Path

import redis

from backends.sql_engine import engine_from_url
from backends.sql_tables import create_tables
from benchmarks.common import BenchResult, ops_per_sec
from queues.batches import DatabaseBatchStore, RedisBatchStore
from queues.drivers.base import JOB_ID_HEAD, ReservedJob
from queues.envelope import Envelope
from queues.workflows import before_settle

HOST, PORT, BENCH_DB = "127.0.0.1", 6379, 9
#: Calls per timed run (best of three).
COUNT = 2000


def _hook() -> BenchResult:
    payload = Envelope(job="bench.noop", data={"device": "d-1", "value": 21.5}).to_json()
    job = ReservedJob("id", "bench", payload, 1, "token")
    hook = ops_per_sec(lambda: before_settle(None, job, "ack"), 50 * COUNT)  # type: ignore[arg-type]
    head = ops_per_sec(lambda: JOB_ID_HEAD.match(payload), 50 * COUNT)
    return BenchResult("outcome hook, plain job", hook, "JOB_ID_HEAD.match", head)


def _redis() -> BenchResult:
    client = redis.Redis(host=HOST, port=PORT, db=BENCH_DB)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise ConnectionError(f"Redis at {HOST}:{PORT} is unreachable: {exc}") from None
    store = RedisBatchStore(client, 3600)
    batch_id = f"bench-{uuid.uuid4().hex[:8]}"
    raw_state, raw_jobs = f"bench:{batch_id}:raw", f"bench:{batch_id}:raw:jobs"
    store.create(batch_id, 10 * COUNT, {}, None)
    numbers = iter(range(10 * COUNT))
    raw_numbers = iter(range(10 * COUNT))

    def raw() -> None:
        pipe = client.pipeline(transaction=True)
        pipe.sadd(raw_jobs, str(next(raw_numbers)))
        pipe.hincrby(raw_state, "pending", -1)
        pipe.hincrby(raw_state, "done", 1)
        pipe.execute()

    try:
        ours = ops_per_sec(lambda: store.finish(batch_id, str(next(numbers)), "done"), COUNT)
        base = ops_per_sec(raw, COUNT)
    finally:
        client.delete(*store.keys(batch_id), raw_state, raw_jobs)
        client.zrem("routemq:batches", batch_id)
        client.close()
    return BenchResult("redis batch finish", ours, "raw MULTI SADD+2 HINCRBY", base)


def _sqlite() -> BenchResult:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        engine = engine_from_url(f"sqlite:///{path}", create_sqlite_tables=False)
        create_tables(engine)
        store = DatabaseBatchStore(engine, 3600)
        store.create("ours", 10 * COUNT, {}, None)
        store.create("raw", 10 * COUNT, {}, None)
        numbers = iter(range(10 * COUNT))
        raw_numbers = iter(range(10 * COUNT))
        connection = sqlite3.connect(path, isolation_level=None)

        def raw() -> None:
            job_id = str(next(raw_numbers))
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("SELECT pending FROM queue_batches WHERE id = 'raw'").fetchone()
            connection.execute(
                "SELECT COUNT(*) FROM queue_batch_jobs WHERE batch_id = 'raw' AND job_id = ?",
                (job_id,),
            ).fetchone()
            connection.execute(
                "INSERT INTO queue_batch_jobs (batch_id, job_id, outcome) "
                "VALUES ('raw', ?, 'done')",
                (job_id,),
            )
            connection.execute(
                "UPDATE queue_batches SET pending = pending - 1, done = done + 1 WHERE id = 'raw'"
            )
            connection.execute("COMMIT")

        ours = ops_per_sec(lambda: store.finish("ours", str(next(numbers)), "done"), COUNT // 4)
        base = ops_per_sec(raw, COUNT // 4)
        connection.close()
        engine.dispose()
    return BenchResult("sqlite batch finish", ours, "raw sqlite3 same statements", base)


def run() -> list[BenchResult]:
    """Every figure of this module; raises ConnectionError when Redis is absent."""
    return [_hook(), _sqlite(), _redis()]
