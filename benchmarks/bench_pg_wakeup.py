"""Idle pickup latency on PostgreSQL: LISTEN/NOTIFY against polling and against Redis.

End to end across two processes: this process dispatches jobs one at a time
(`driver.push`, `JOB_SPACING` apart, each carrying the time just before its
push), and a worker process (benchmarks/pickup_worker.py) sits in a blocking
`pop` and writes when it got each job. Two latencies per job: from the push's
start (so including the push's own durable commit) and from the moment the
push returned (the commit is durable and the job available; what remains is
the wake-up and the worker's claim, itself a durable commit on PostgreSQL).
Figures, measured in the same run:

* PostgreSQL with LISTEN/NOTIFY wake-ups (the driver as shipped);
* PostgreSQL with its waker removed: the idle worker polls every
  `BLOCKING_POLL_SECONDS`, as on MariaDB and SQLite;
* Redis (BLPOP wake-ups), the baseline the issue asks PostgreSQL to match.

Also the claims an idle worker sends in `IDLE_SECONDS` (the polling load).
Run alone: `python -m benchmarks bench_pg_wakeup`.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backends.sql_engine import engine_from_url
from backends.sql_tables import create_tables, drop_tables
from benchmarks.bench_redis_queue import BENCH_DB
from benchmarks.common import BenchResult
from benchmarks.pickup_worker import IDLE_SECONDS
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
BENCH_DATABASE = "bench_pg_wakeup"
POSTGRES_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{BENCH_DATABASE}"
#: Redis database of the baseline, flushed: the one bench_redis_queue.py flushes too.
#: BENCH_REDIS_DB overrides it where db 9 belongs to someone else's running suite.
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', BENCH_DB)}"

#: Jobs timed per figure, and seconds between two pushes (the worker is idle at each).
LATENCY_JOBS, JOB_SPACING = 200, 0.02

#: Seconds the worker may take to start, or to finish after the last job.
WORKER_TIMEOUT = 60.0

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _ensure_database() -> None:
    import psycopg

    with psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if connection.execute(query, (BENCH_DATABASE,)).fetchone() is None:
            connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")


def _wait_for(path: Path, prefix: str, worker: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + WORKER_TIMEOUT
    while True:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(prefix):
                    return line
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the pickup worker did not write {prefix!r}")
        time.sleep(0.01)


def measure(kind: str) -> tuple[list[float], list[float], int]:
    """Latencies (ms) of LATENCY_JOBS idle pickups by a `kind` worker from each push's start
    and from its return (sorted), and the claims the worker sent while idle."""
    if kind == "redis":
        import redis

        from queues.drivers.redis import RedisDriver, RedisFailedStore

        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        pusher: object = RedisDriver(client, RedisFailedStore(client))
        url = REDIS_URL
    else:
        engine = engine_from_url(POSTGRES_URL)
        drop_tables(engine)
        create_tables(engine)
        pusher = DatabaseDriver(engine, DatabaseFailedStore(engine))
        url = POSTGRES_URL
    push = pusher.push  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "pickups.txt"
        worker = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pickup_worker", kind, url, str(out)],
            cwd=PROJECT_ROOT,
        )
        try:
            _wait_for(out, "ready", worker)
            idle = int(_wait_for(out, "idle-claims", worker).split()[1])
            time.sleep(0.2)  # the worker is back in its blocking pop
            pushed: dict[str, tuple[float, float]] = {}
            for _ in range(LATENCY_JOBS):
                envelope = Envelope(job="bench.noop", data={})
                started = time.time()
                push("bench", envelope.to_json())
                pushed[envelope.id] = (started, time.time())
                time.sleep(JOB_SPACING)
            push("bench", Envelope(job="bench.noop", data={"stop": True}).to_json())
            worker.wait(WORKER_TIMEOUT)
        finally:
            worker.kill()
            worker.wait()
        fields = [line.split() for line in out.read_text().splitlines()]
        picks = {row[0]: float(row[1]) for row in fields if len(row) == 2 and row[0] in pushed}
    pusher.close()  # type: ignore[attr-defined]
    if len(picks) != LATENCY_JOBS:
        raise RuntimeError(f"{kind}: {len(picks)} of {LATENCY_JOBS} jobs picked up")
    from_start = sorted((picks[i] - pushed[i][0]) * 1000 for i in picks)
    from_commit = sorted((picks[i] - pushed[i][1]) * 1000 for i in picks)
    return from_start, from_commit, idle


def _percentile(samples: list[float], fraction: float) -> float:
    return samples[min(int(len(samples) * fraction), len(samples) - 1)]


def run() -> list[BenchResult]:
    """Print the pickup latencies; return them as rates (pickups/s at the p50) with ratios."""
    if not _port_open(POSTGRES_HOST, POSTGRES_PORT):
        raise ConnectionError(f"PostgreSQL is not reachable on {POSTGRES_HOST}:{POSTGRES_PORT}")
    if not _port_open("127.0.0.1", 6379):
        raise ConnectionError("Redis is not reachable on 127.0.0.1:6379")
    _ensure_database()
    figures = {}
    for kind in ("redis", "postgres", "postgres-poll"):
        from_start, from_commit, idle = measure(kind)
        p50, p99 = statistics.median(from_start), _percentile(from_start, 0.99)
        c50, c99 = statistics.median(from_commit), _percentile(from_commit, 0.99)
        figures[kind] = p50
        load = "" if kind == "redis" else f"; idle claims {idle} in {IDLE_SECONDS:.0f} s"
        print(f"   idle pickup {kind:<14} from push start p50 {p50:6.2f} ms p99 {p99:6.2f} ms; "
              f"from commit p50 {c50:6.2f} ms p99 {c99:6.2f} ms{load}", flush=True)  # fmt: skip
    return [
        BenchResult(
            "idle pickup postgres NOTIFY (1/p50)",
            1000 / figures["postgres"],
            "idle pickup redis BLPOP (1/p50)",
            1000 / figures["redis"],
        ),
        BenchResult(
            "idle pickup postgres NOTIFY (1/p50)",
            1000 / figures["postgres"],
            "idle pickup postgres polling (1/p50)",
            1000 / figures["postgres-poll"],
        ),
    ]


def main() -> int:
    """Run this benchmark alone: `python -m benchmarks.bench_pg_wakeup`."""
    for result in run():
        print("   " + result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
