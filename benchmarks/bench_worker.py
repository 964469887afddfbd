"""End-to-end worker throughput, as a user runs it, against raw baselines in the same run.

Each scenario fills a queue with N no-op jobs, starts `python main.py --queue-work`
as separate processes (the real CLI, the real settings), and times the drain
from the first job taken to an empty queue (pending + reserved), polled from
here. Baselines, in this process and the same run:

* Redis: raw redis-py reliable-queue cycle (LMOVE to a processing list + LREM)
  and raw LPOP, over N pre-filled entries;
* SQLite: raw sqlite3 claim (BEGIN IMMEDIATE, SELECT + UPDATE, COMMIT) + DELETE;
* MariaDB: raw PyMySQL claim (SELECT ... FOR UPDATE SKIP LOCKED + UPDATE,
  COMMIT) + DELETE.

Also: 2 worker processes against 1, `--concurrency 8` on jobs that sleep 5 ms
against 1 thread, idle pickup latency (p50/p99) per driver, and Dramatiq as a
peer (installed into its own venv under /tmp by this benchmark, never a project
dependency; the row is skipped with the reason when it cannot be installed).

Environment: BENCH_JOBS (default 10000), BENCH_REDIS_DB (default 9, the test
database: the benchmark FLUSHes it), BENCH_MARIADB_DATABASE (default
routemq_bench, created if missing), BENCH_PEER_VENV, BENCH_ONLY (comma list
of redis, sqlite, mariadb, latency, peer).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import BenchResult
from queues.envelope import Envelope

#: Project root: where `main.py` lives.
ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REDIS_PORT, MARIADB_PORT = 6379, 3306
#: Jobs per drain (override with BENCH_JOBS).
JOBS = int(os.environ.get("BENCH_JOBS", "10000"))
#: Redis database the workers use; FLUSHed before each scenario.
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "9"))
MARIADB_DATABASE = os.environ.get("BENCH_MARIADB_DATABASE", "routemq_bench")
#: Where the Dramatiq peer venv is created (once; reused by later runs).
PEER_VENV = Path(os.environ.get("BENCH_PEER_VENV", "/tmp/routemq-bench-peer"))
QUEUE = "bench"
#: Seconds between two looks at the queue while a drain runs.
POLL_SECONDS = 0.002
#: Longest drain waited for, seconds, before the scenario is called failed.
DRAIN_LIMIT = 600.0
#: Idle pickups measured per driver, and the idle pause before each, seconds.
PICKUPS = 60
PICKUP_IDLE = (0.02, 0.15)
#: Jobs of the 5 ms rows (one thread drains them in about 10 s).
SLEEP_JOBS = min(JOBS, 2000)
#: Threads of the `--concurrency` and peer rows.
THREADS = 8


def _only(name: str) -> bool:
    wanted = os.environ.get("BENCH_ONLY")
    return not wanted or name in wanted.split(",")


def _payloads(job: str, count: int, **data: Any) -> list[str]:
    text = Envelope(job=job, data=data, queue=QUEUE, id="ID").to_json()
    return [text.replace('"id":"ID"', f'"id":"{uuid.uuid4().hex}"', 1) for _ in range(count)]


def _env(connection: str, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "QUEUE_"))}
    env.update(
        ENABLE_REDIS="true",
        REDIS_HOST=HOST,
        REDIS_PORT=str(REDIS_PORT),
        REDIS_DB=str(REDIS_DB),
        QUEUE_CONNECTION=connection,
        JOBS_PACKAGE="benchmarks.worker_jobs",
        PYTHONPATH=str(ROOT),
    )
    env.pop("METRICS_PORT", None)
    if db_url:
        env["DB_URL"] = db_url
    return env


def _start_workers(
    connection: str, env: dict[str, str], processes: int, extra: Sequence[str] = ()
) -> list[subprocess.Popen[bytes]]:
    argv = [sys.executable, "main.py", "--queue-work", "--connection", connection]
    argv += ["--queue", QUEUE, "--stop-when-empty", "--sleep", "1", *extra]
    return [
        subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]


def _drain(remaining: Callable[[], int], workers: list[subprocess.Popen[bytes]]) -> float:
    """Jobs per second from the first job taken to an empty queue; waits for the workers."""
    total = remaining()
    deadline = time.monotonic() + DRAIN_LIMIT
    try:
        while True:
            left = remaining()
            if left < total:
                started, taken_from = time.perf_counter(), left
                break
            _check(workers, deadline, remaining)
            time.sleep(POLL_SECONDS)
        while remaining() > 0:
            _check(workers, deadline, remaining)
            time.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
    finally:
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return taken_from / elapsed if elapsed > 0 else 0.0


def _check(
    workers: list[subprocess.Popen[bytes]], deadline: float, remaining: Callable[[], int]
) -> None:
    if time.monotonic() > deadline:
        raise RuntimeError(f"the workers did not drain the queue within {DRAIN_LIMIT:g} s")
    if all(w.poll() is not None for w in workers) and remaining() > 0:
        codes = [w.returncode for w in workers]
        raise RuntimeError(f"every worker exited (codes {codes}) before the queue was empty")


def _pickups(
    connection: str, env: dict[str, str], push: Callable[[str], None], folder: Path
) -> tuple[float, float]:
    """p50 and p99 milliseconds from a push into an idle queue to the job's start."""
    out = folder / f"stamps-{connection}-{uuid.uuid4().hex[:6]}.txt"
    argv = [sys.executable, "main.py", "--queue-work", "--connection", connection]
    argv += ["--queue", QUEUE, "--sleep", "3"]
    worker = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    latencies: list[float] = []
    try:
        payloads = _payloads("BenchStamp", PICKUPS + 1, out=str(out), seq=0)
        for seq, payload in enumerate(payloads):
            payload = payload.replace('"seq":0', f'"seq":{seq}')
            pushed = time.time()
            push(payload)
            deadline = time.monotonic() + 30
            while True:
                lines = out.read_text(encoding="ascii").splitlines() if out.exists() else []
                if len(lines) > seq:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"{connection} worker did not pick job {seq} up")
                time.sleep(0.001)
            if seq > 0:  # the first pickup includes the worker's start
                latencies.append((float(lines[seq].split()[1]) - pushed) * 1000)
            # A random pause: a fixed one could lock in phase with a polling worker.
            time.sleep(random.uniform(*PICKUP_IDLE))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


# -- Redis ------------------------------------------------------------------


def _redis() -> redis.Redis:
    client = redis.Redis(host=HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise ConnectionError(f"Redis at {HOST}:{REDIS_PORT} is unreachable: {exc}") from None
    return client


def _redis_fill(client: redis.Redis, job: str, count: int) -> Callable[[], int]:
    from queues.drivers.redis import RedisDriver, RedisFailedStore

    client.flushdb()
    driver = RedisDriver(client, RedisFailedStore(client), 90)
    payloads = _payloads(job, count)
    for start in range(0, count, 1000):
        driver.bulk([(QUEUE, p, 0.0) for p in payloads[start : start + 1000]])
    keys = driver.keys(QUEUE)

    def remaining() -> int:
        pipe = client.pipeline(transaction=False)
        pipe.llen(keys.pending)
        pipe.llen(keys.reserved)
        return sum(int(n) for n in pipe.execute())

    return remaining


def _redis_worker_rate(
    client: redis.Redis,
    processes: int = 1,
    extra: Sequence[str] = (),
    job: str = "BenchNoop",
    count: int = JOBS,
) -> float:
    remaining = _redis_fill(client, job, count)
    return _drain(remaining, _start_workers("redis", _env("redis"), processes, extra))


def _raw_redis(client: redis.Redis, reliable: bool, processes: int = 1) -> float:
    """Raw loops draining N pre-filled entries; with `processes` > 1, that many
    processes drain the same list (the machine's own scaling, for the 2-process row)."""
    client.flushdb()
    payload = _payloads("BenchNoop", 1)[0]
    pipe = client.pipeline(transaction=False)
    for _ in range(JOBS):
        pipe.rpush("raw", payload)
    pipe.execute()
    if processes == 1:
        started = time.perf_counter()
        done = _raw_drain(REDIS_DB, reliable)
        return done / (time.perf_counter() - started)
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    with context.Pool(processes) as pool:
        done = sum(pool.starmap(_raw_drain, [(REDIS_DB, reliable)] * processes))
    return done / (time.perf_counter() - started)


def _raw_drain(db: int, reliable: bool) -> int:
    client = redis.Redis(host=HOST, port=REDIS_PORT, db=db)
    done = 0
    while True:
        if reliable:
            taken = client.lmove("raw", "raw:processing", "LEFT", "RIGHT")
            if taken is None:
                break
            client.lrem("raw:processing", 1, taken)  # type: ignore[arg-type]
        elif client.lpop("raw") is None:
            break
        done += 1
    client.close()
    return done


def _redis_rows(folder: Path) -> list[BenchResult]:
    client = _redis()
    try:
        reliable = _raw_redis(client, reliable=True)
        reliable_two = _raw_redis(client, reliable=True, processes=2)
        lpop = _raw_redis(client, reliable=False)
        one = _redis_worker_rate(client)
        two = _redis_worker_rate(client, processes=2)
        results = [
            BenchResult("redis worker, 1 process", one, "raw LMOVE+LREM (reliable)", reliable),
            BenchResult("redis worker, 1 process", one, "raw LPOP", lpop),
            BenchResult("redis worker, 2 processes", two, "redis worker, 1 process", one),
            BenchResult("raw reliable, 2 processes", reliable_two, "raw reliable, 1", reliable),
        ]
        if _has_flag("--concurrency"):
            sleepy_one = _redis_worker_rate(client, job="BenchSleep", count=SLEEP_JOBS)
            sleepy_many = _redis_worker_rate(
                client, extra=("--concurrency", str(THREADS)), job="BenchSleep", count=SLEEP_JOBS
            )
            results.append(
                BenchResult(
                    f"redis worker 5 ms jobs, --concurrency {THREADS}",
                    sleepy_many,
                    "5 ms jobs, 1 thread",
                    sleepy_one,
                )
            )
        else:
            print("   (no --concurrency flag: the threads row is skipped)")
        return results
    finally:
        client.flushdb()
        client.close()


def _has_flag(flag: str) -> bool:
    from cli import _all_options

    return any(option.flag == flag for option in _all_options())


# -- SQL --------------------------------------------------------------------


def _sql_fill(url: str, job: str, count: int) -> Callable[[], int]:
    from sqlalchemy import text

    from backends.sql_engine import engine_from_url
    from backends.sql_tables import create_tables, drop_tables
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore

    engine = engine_from_url(url, create_sqlite_tables=False)
    drop_tables(engine)
    create_tables(engine)
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine), 90)
    payloads = _payloads(job, count)
    for start in range(0, count, 1000):
        driver.bulk([(QUEUE, p, 0.0) for p in payloads[start : start + 1000]])
    count_sql = text("SELECT COUNT(*) FROM queue_jobs WHERE queue = :queue")

    def remaining() -> int:
        with engine.connect() as connection:
            value = connection.execute(count_sql, {"queue": QUEUE}).scalar_one()
            connection.rollback()
        return int(value)

    return remaining


def _sql_worker_rate(url: str, processes: int = 1, extra: Sequence[str] = ()) -> float:
    remaining = _sql_fill(url, "BenchNoop", JOBS)
    return _drain(remaining, _start_workers("database", _env("database", url), processes, extra))


def _raw_sqlite(path: Path) -> float:
    """sqlite3 with the driver's pragmas: one claim transaction + one delete per job."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT, payload TEXT, attempts INT, "
        "reserved_at REAL, available_at REAL)"
    )
    db.execute("CREATE INDEX jobs_queue ON jobs (queue, reserved_at)")
    payload = _payloads("BenchNoop", 1)[0]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO jobs (queue, payload, attempts, available_at) VALUES (?, ?, 0, 0)",
        [(QUEUE, payload)] * JOBS,
    )
    db.execute("COMMIT")
    started = time.perf_counter()
    done = 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute(
            "SELECT id, payload FROM jobs WHERE queue = ? AND reserved_at IS NULL "
            "AND available_at <= ? ORDER BY id LIMIT 1",
            (QUEUE, time.time()),
        ).fetchone()
        if row is None:
            db.execute("COMMIT")
            break
        db.execute(
            "UPDATE jobs SET reserved_at = ?, attempts = attempts + 1 WHERE id = ?",
            (time.time(), row[0]),
        )
        db.execute("COMMIT")
        db.execute("DELETE FROM jobs WHERE id = ?", (row[0],))
        done += 1
    rate = done / (time.perf_counter() - started)
    db.close()
    return rate


def _raw_mariadb() -> float:
    """PyMySQL: one claim transaction (FOR UPDATE SKIP LOCKED) + one delete per job."""
    import pymysql

    db = pymysql.connect(host=HOST, port=MARIADB_PORT, user="root", database=MARIADB_DATABASE)
    cursor = db.cursor()
    cursor.execute("DROP TABLE IF EXISTS raw_jobs")
    cursor.execute(
        "CREATE TABLE raw_jobs (id BIGINT AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(255), "
        "payload LONGTEXT, attempts INT, reserved_at DOUBLE NULL, available_at DOUBLE, "
        "KEY raw_queue (queue, reserved_at)) ENGINE=InnoDB"
    )
    payload = _payloads("BenchNoop", 1)[0]
    cursor.executemany(
        "INSERT INTO raw_jobs (queue, payload, attempts, available_at) VALUES (%s, %s, 0, 0)",
        [(QUEUE, payload)] * JOBS,
    )
    db.commit()
    started = time.perf_counter()
    done = 0
    while True:
        cursor.execute(
            "SELECT id, payload FROM raw_jobs WHERE queue = %s AND reserved_at IS NULL "
            "AND available_at <= %s ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (QUEUE, time.time()),
        )
        row = cursor.fetchone()
        if row is None:
            db.commit()
            break
        cursor.execute(
            "UPDATE raw_jobs SET reserved_at = %s, attempts = attempts + 1 WHERE id = %s",
            (time.time(), row[0]),
        )
        db.commit()
        cursor.execute("DELETE FROM raw_jobs WHERE id = %s", (row[0],))
        db.commit()
        done += 1
    rate = done / (time.perf_counter() - started)
    cursor.execute("DROP TABLE raw_jobs")
    db.close()
    return rate


def _mariadb_url() -> str:
    import pymysql

    try:
        db = pymysql.connect(host=HOST, port=MARIADB_PORT, user="root")
    except pymysql.err.OperationalError as exc:
        raise ConnectionError(f"MariaDB at {HOST}:{MARIADB_PORT} is unreachable: {exc}") from None
    with db.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{MARIADB_DATABASE}`")
    db.close()
    return f"mysql+pymysql://root@{HOST}:{MARIADB_PORT}/{MARIADB_DATABASE}?charset=utf8mb4"


def _sql_rows(folder: Path) -> list[BenchResult]:
    results: list[BenchResult] = []
    if _only("sqlite"):
        url = f"sqlite:///{folder / 'queue.db'}"
        raw = _raw_sqlite(folder / "raw.db")
        ours = _sql_worker_rate(url)
        results.append(
            BenchResult("sqlite worker, 1 process", ours, "raw sqlite3 claim+delete", raw)
        )
    if _only("mariadb"):
        try:
            url = _mariadb_url()
        except ConnectionError as exc:
            print(f"   mariadb rows skipped: {exc}")
            return results
        raw = _raw_mariadb()
        ours = _sql_worker_rate(url)
        results.append(
            BenchResult("mariadb worker, 1 process", ours, "raw PyMySQL claim+delete", raw)
        )
    return results


def _latency_rows(folder: Path) -> None:
    """Print idle pickup p50/p99 per driver (latencies are not ratios: printed, not returned)."""
    from backends.sql_engine import engine_from_url
    from backends.sql_tables import create_tables, drop_tables
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
    from queues.drivers.redis import RedisDriver, RedisFailedStore

    client = _redis()
    client.flushdb()
    redis_driver = RedisDriver(client, RedisFailedStore(client), 90)
    targets: list[tuple[str, str, dict[str, str], Callable[[str], None]]] = [
        ("redis", "redis", _env("redis"), lambda p: redis_driver.push(QUEUE, p))
    ]
    urls = [("sqlite", f"sqlite:///{folder / 'pickup.db'}")]
    try:
        urls.append(("mariadb", _mariadb_url()))
    except ConnectionError as exc:
        print(f"   mariadb pickup skipped: {exc}")
    for name, url in urls:
        engine = engine_from_url(url, create_sqlite_tables=False)
        drop_tables(engine)
        create_tables(engine)
        driver = DatabaseDriver(engine, DatabaseFailedStore(engine), 90)
        targets.append((name, "database", _env("database", url), _pusher(driver)))
    for name, connection, env, push in targets:
        p50, p99 = _pickups(connection, env, push, folder)
        print(f"   idle pickup {name:<8} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms", flush=True)
    client.flushdb()
    client.close()


def _pusher(driver: Any) -> Callable[[str], None]:
    return lambda payload: driver.push(QUEUE, payload)


# -- Dramatiq peer ------------------------------------------------------------

PEER_MODULE = """
import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(host={host!r}, port={port}, db={db})
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop():
    pass
"""

PEER_FILL = """
import sys
sys.path.insert(0, {folder!r})
from bench_peer import broker, noop
for _ in range({count}):
    noop.send()
"""


def _peer_python() -> Path | str:
    """The peer venv's python, creating it (and installing Dramatiq) on first use."""
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run([python, "-c", "import dramatiq, redis"], capture_output=True)
        if check.returncode == 0:
            return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "dramatiq[redis]"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"cannot install dramatiq[redis] into {PEER_VENV}: {exc}"
    return python


def _peer_rows(folder: Path) -> list[BenchResult]:
    python = _peer_python()
    if isinstance(python, str):
        print(f"   dramatiq peer skipped: {python}")
        return []
    client = _redis()
    client.flushdb()
    (folder / "bench_peer.py").write_text(
        PEER_MODULE.format(host=HOST, port=REDIS_PORT, db=REDIS_DB), encoding="utf-8"
    )
    fill = PEER_FILL.format(folder=str(folder), count=JOBS)
    subprocess.run([python, "-c", fill], check=True, cwd=folder)

    def remaining() -> int:
        return int(client.hlen("dramatiq:bench.msgs"))

    argv = [str(python), "-m", "dramatiq", "bench_peer", "-p", "1", "-t", str(THREADS)]
    peer = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        total = remaining()
        deadline = time.monotonic() + DRAIN_LIMIT
        while remaining() >= total and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        started, taken_from = time.perf_counter(), remaining()
        while remaining() > 0 and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        dramatiq_rate = taken_from / (time.perf_counter() - started)
    finally:
        peer.terminate()
        peer.wait(timeout=60)
    extra: tuple[str, ...] = ()
    label = "redis worker, 1 process x 1 thread"
    if _has_flag("--concurrency"):
        extra = ("--concurrency", str(THREADS))
        label = f"redis worker, 1 process x {THREADS} threads"
    ours = _redis_worker_rate(client, extra=extra)
    client.flushdb()
    client.close()
    return [BenchResult(label, ours, f"dramatiq 1 process x {THREADS} threads", dramatiq_rate)]


def run() -> list[BenchResult]:
    """Every scenario the environment selects (BENCH_ONLY), each with its baseline."""
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="routemq-bench-worker-") as tmp:
        folder = Path(tmp)
        if _only("redis"):
            results += _redis_rows(folder)
        if _only("sqlite") or _only("mariadb"):
            results += _sql_rows(folder)
        if _only("latency"):
            _latency_rows(folder)
        if _only("peer"):
            results += _peer_rows(folder)
    return results
