"""Database queue throughput vs raw SQL on the same server, in the same run.

For MariaDB, PostgreSQL and SQLite: single-job push (one transaction each), bulk push, and a
pop+ack cycle, each against the same statements written by hand over the raw
DBAPI (PyMySQL / psycopg / sqlite3) with the same commits, so the ratio is the cost of the
driver (SQLAlchemy, fencing, retries, pool pre-ping) and nothing else.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.sql_engine import engine_from_url
from backends.sql_tables import create_tables, drop_tables
from benchmarks.common import BenchResult, ops_per_sec
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope

#: Server of the MariaDB figures and the private database they write to.
MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306
BENCH_DATABASE = "bench_database_queue"
MARIADB_URL = f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{BENCH_DATABASE}"

#: Jobs per timed round of single pushes and of pop+ack cycles.
ROUND_JOBS = 1000
#: Jobs per bulk call in the bulk figure.
BULK_JOBS = 1000

PAYLOAD = Envelope(job="bench.noop", data={"device": "sensor-1", "value": 21.5}).to_json()

MYSQL_PUSH = (
    "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
    "VALUES (%s, %s, 0, NOW(6), NOW(6))"
)
MYSQL_CLAIM = (
    "SELECT id, attempts, payload FROM queue_jobs WHERE queue = %s AND reserved_at IS NULL "
    "AND available_at <= NOW(6) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
MYSQL_MARK = "UPDATE queue_jobs SET reserved_at = NOW(6), attempts = attempts + 1 WHERE id = %s"
MYSQL_DELETE = "DELETE FROM queue_jobs WHERE id = %s"

#: PostgreSQL: the same statements over raw psycopg (the driver's push also NOTIFYs).
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
POSTGRES_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{BENCH_DATABASE}"
PG_NOW = "(now() AT TIME ZONE 'UTC')"
PG_PUSH = (
    "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
    f"VALUES (%s, %s, 0, {PG_NOW}, {PG_NOW})"
)
PG_CLAIM = (
    "SELECT id, attempts, payload FROM queue_jobs WHERE queue = %s AND reserved_at IS NULL "
    f"AND available_at <= {PG_NOW} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
PG_MARK = f"UPDATE queue_jobs SET reserved_at = {PG_NOW}, attempts = attempts + 1 WHERE id = %s"
PG_DELETE = "DELETE FROM queue_jobs WHERE id = %s"

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
SQLITE_PUSH = (
    "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
    f"VALUES (?, ?, 0, {SQLITE_NOW}, {SQLITE_NOW})"
)
SQLITE_CLAIM = (
    "SELECT id, attempts, payload FROM queue_jobs WHERE queue = ? AND reserved_at IS NULL "
    f"AND available_at <= {SQLITE_NOW} ORDER BY id LIMIT 1"
)
SQLITE_MARK = (
    f"UPDATE queue_jobs SET reserved_at = {SQLITE_NOW}, attempts = attempts + 1 WHERE id = ?"
)
SQLITE_DELETE = "DELETE FROM queue_jobs WHERE id = ?"


def _drain_rate(fill: Callable[[int], None], cycle: Callable[[], bool]) -> float:
    """Best-of-three rate of `cycle` (pop+ack) over freshly filled jobs."""
    best = 0.0
    for _ in range(3):
        fill(ROUND_JOBS)
        start = time.perf_counter()
        for _ in range(ROUND_JOBS):
            if not cycle():
                raise RuntimeError("a pop+ack cycle found no job: the benchmark state is wrong")
        elapsed = time.perf_counter() - start
        best = max(best, ROUND_JOBS / elapsed)
    return best


def _bulk_rate(operation: Callable[[], object]) -> float:
    return ops_per_sec(operation, 3) * BULK_JOBS


def _driver_cycle(driver: DatabaseDriver) -> Callable[[], bool]:
    def cycle() -> bool:
        job = driver.pop(["default"])
        return job is not None and driver.ack(job)

    return cycle


def _driver_results(label: str, driver: DatabaseDriver, raw: dict[str, Any]) -> list[BenchResult]:
    rows = [("default", PAYLOAD, 0.0)] * BULK_JOBS
    results = [
        BenchResult(
            f"database push ({label})",
            ops_per_sec(lambda: driver.push("default", PAYLOAD), ROUND_JOBS),
            f"raw INSERT+COMMIT ({label})",
            ops_per_sec(raw["push"], ROUND_JOBS),
        ),
        BenchResult(
            f"database bulk x{BULK_JOBS} ({label}) jobs",
            _bulk_rate(lambda: driver.bulk(rows)),
            f"raw executemany ({label}) jobs",
            _bulk_rate(raw["bulk"]),
        ),
    ]
    driver.clear("default")
    fill = lambda count: driver.bulk([("default", PAYLOAD, 0.0)] * count)  # noqa: E731
    ours = _drain_rate(fill, _driver_cycle(driver))
    theirs = _drain_rate(fill, raw["cycle"])
    results.append(
        BenchResult(
            f"database pop+ack ({label})",
            ours,
            f"raw claim+DELETE ({label})",
            theirs,
        )
    )
    driver.clear("default")
    return results


def _mariadb_raw(raw: Any) -> dict[str, Callable[[], object]]:
    """Push, bulk and pop+ack written by hand over one raw PyMySQL connection."""
    with raw.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    raw.commit()

    def push() -> None:
        with raw.cursor() as cursor:
            cursor.execute(MYSQL_PUSH, ("default", PAYLOAD))
        raw.commit()

    def bulk() -> None:
        with raw.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [("default", PAYLOAD, 0, "2000-01-01", "2000-01-01")] * BULK_JOBS,
            )
        raw.commit()

    def cycle() -> bool:
        with raw.cursor() as cursor:
            cursor.execute(MYSQL_CLAIM, ("default",))
            row = cursor.fetchone()
            if row is None:
                raw.rollback()
                return False
            cursor.execute(MYSQL_MARK, (row[0],))
            raw.commit()
            cursor.execute(MYSQL_DELETE, (row[0],))
            raw.commit()
        return True

    return {"push": push, "bulk": bulk, "cycle": cycle}


def _mariadb() -> list[BenchResult]:
    import pymysql

    try:
        server = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root")
    except pymysql.err.OperationalError as exc:
        raise ConnectionError(f"MariaDB is not reachable on {MARIADB_HOST}:{MARIADB_PORT}") from exc
    with server.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {BENCH_DATABASE}")
    server.close()
    results: list[BenchResult] = []
    for pre_ping in (True, False):
        engine = engine_from_url(MARIADB_URL, pool_pre_ping=pre_ping)
        drop_tables(engine)
        create_tables(engine)
        driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
        raw = pymysql.connect(
            host=MARIADB_HOST, port=MARIADB_PORT, user="root", database=BENCH_DATABASE
        )
        label = "mariadb" if pre_ping else "mariadb, no pre-ping"
        results += _driver_results(label, driver, _mariadb_raw(raw))
        raw.close()
        drop_tables(engine)
        engine.dispose()
    return results


def _sqlite() -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "queue.db"
        engine = engine_from_url(f"sqlite:///{path}")
        driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("PRAGMA journal_mode = WAL")
        raw.execute("PRAGMA synchronous = NORMAL")

        def push() -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute(SQLITE_PUSH, ("default", PAYLOAD))
            raw.execute("COMMIT")

        def bulk() -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany(SQLITE_PUSH, [("default", PAYLOAD)] * BULK_JOBS)
            raw.execute("COMMIT")

        def cycle() -> bool:
            raw.execute("BEGIN IMMEDIATE")
            row = raw.execute(SQLITE_CLAIM, ("default",)).fetchone()
            if row is None:
                raw.execute("ROLLBACK")
                return False
            raw.execute(SQLITE_MARK, (row[0],))
            raw.execute("COMMIT")
            raw.execute("BEGIN IMMEDIATE")
            raw.execute(SQLITE_DELETE, (row[0],))
            raw.execute("COMMIT")
            return True

        results = _driver_results("sqlite", driver, {"push": push, "bulk": bulk, "cycle": cycle})
        raw.close()
        engine.dispose()
    return results


def _postgres() -> list[BenchResult]:
    import psycopg

    try:
        server = psycopg.connect(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", autocommit=True
        )
    except psycopg.OperationalError as exc:
        raise ConnectionError(
            f"PostgreSQL is not reachable on {POSTGRES_HOST}:{POSTGRES_PORT}"
        ) from exc
    query = "SELECT 1 FROM pg_database WHERE datname = %s"
    if server.execute(query, (BENCH_DATABASE,)).fetchone() is None:
        server.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    server.close()
    engine = engine_from_url(POSTGRES_URL)
    drop_tables(engine)
    create_tables(engine)
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    raw = psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname=BENCH_DATABASE
    )

    def push() -> None:
        raw.execute(PG_PUSH, ("default", PAYLOAD))
        raw.commit()

    def bulk() -> None:
        with raw.cursor() as cursor:
            cursor.executemany(PG_PUSH, [("default", PAYLOAD)] * BULK_JOBS)
        raw.commit()

    def cycle() -> bool:
        row = raw.execute(PG_CLAIM, ("default",)).fetchone()
        if row is None:
            raw.rollback()
            return False
        raw.execute(PG_MARK, (row[0],))
        raw.commit()
        raw.execute(PG_DELETE, (row[0],))
        raw.commit()
        return True

    results = _driver_results("postgres", driver, {"push": push, "bulk": bulk, "cycle": cycle})
    raw.close()
    drop_tables(engine)
    engine.dispose()
    return results


def run() -> list[BenchResult]:
    """Every figure of this module; raises ConnectionError when MariaDB or PostgreSQL is absent."""
    results = _sqlite()
    return results + _postgres() + _mariadb()
