"""Child process of the race and crash tests, for any queue driver.

Run as `python -m tests.driver_race_child --driver NAME --mode MODE ...` from the
project root. It connects to the SAME state the parent test prepared (it never
clears anything) and appends one line per event to `--out`, flushed at once so
a SIGKILL loses nothing already written:

* `work`: pop and ack jobs of `--queue` until a pop waiting `--idle` seconds
  finds nothing; writes `<job id> <attempts>` per acked job. A reservation the
  driver marks as a second copy of a running job (`duplicate_of`) is failed,
  as a worker does, and its job id written to `<out>.dup`.
* `hold`: pop one job, write `<job id> <attempts>`, then sleep until killed
  (the crash test SIGKILLs it mid-job).

`--start-at` (unix time) makes every child start popping at the same instant.
A refused ack or any exception ends the child with a non-zero status and a
line on stderr. Drivers: `redis` (test db 9), `redis-cluster` (the
parent's shared cluster, tests/redis_topology.py), `mariadb` and `postgres`
(test databases), `sqlite` (file
`queue.db` in `--state-dir`, as tests/driver_factories.py lays it out); `--url`
points mariadb/sqlite at another database.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Project root: children run with it as working directory so `tests` imports.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Seconds a `hold` child sleeps; far longer than any test waits before killing it.
HOLD_SECONDS = 300.0


def connect_driver(name: str, state_dir: Path, retry_after: int, url: str | None = None) -> Any:
    """A driver of kind `name` on the parent's existing state (nothing is cleared).

    `url` points a SQL driver at another database than the shared test one.
    """
    from tests.conftest import MARIADB_URL, POSTGRES_URL, REDIS_HOST, REDIS_PORT, REDIS_TEST_DB

    if name == "redis":
        import redis

        from queues.drivers.redis import RedisDriver, RedisFailedStore

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
        return RedisDriver(client, RedisFailedStore(client), retry_after)
    if name == "redis-cluster":
        import os

        from redis.cluster import RedisCluster

        from queues.drivers.redis import RedisDriver, RedisFailedStore
        from tests.redis_topology import CLUSTER_SEED_VARIABLE

        host, port = os.environ[CLUSTER_SEED_VARIABLE].rsplit(":", 1)
        cluster = RedisCluster(host=host, port=int(port))
        return RedisDriver(cluster, RedisFailedStore(cluster), retry_after)  # type: ignore[arg-type]

    from backends.sql_engine import engine_from_url
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore

    # engine_from_url: the same WAL, busy-timeout and isolation settings as the app.
    if url is not None:
        engine = engine_from_url(url, create_sqlite_tables=False)
    elif name == "mariadb":
        engine = engine_from_url(MARIADB_URL, create_sqlite_tables=False)
    elif name == "postgres":
        engine = engine_from_url(POSTGRES_URL, create_sqlite_tables=False)
    elif name == "sqlite":
        engine = engine_from_url(f"sqlite:///{state_dir / 'queue.db'}", create_sqlite_tables=False)
    else:
        raise SystemExit(f"unknown driver {name!r}: use redis, mariadb, postgres or sqlite")
    return DatabaseDriver(engine, DatabaseFailedStore(engine), retry_after)


def spawn(
    driver: str, mode: str, out: Path, state_dir: Path, **options: object
) -> subprocess.Popen[bytes]:
    """Start one child; `options` map to flags (`retry_after=2` -> `--retry-after 2`)."""
    command = [sys.executable, "-m", "tests.driver_race_child", "--driver", driver]
    command += ["--mode", mode, "--out", str(out), "--state-dir", str(state_dir)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.PIPE)


def read_handled(outs: list[Path]) -> list[tuple[str, int]]:
    """Every `(job id, attempts)` line the children wrote, in file order."""
    handled: list[tuple[str, int]] = []
    for path in outs:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                job_id, attempts = line.split()
                handled.append((job_id, int(attempts)))
    return handled


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one child; exit status 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--mode", choices=("work", "hold"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("."))
    parser.add_argument("--queue", default="default")
    parser.add_argument("--retry-after", type=int, default=90)
    parser.add_argument("--idle", type=float, default=0.5)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--url", help="SQLAlchemy URL of the SQL drivers' database")
    args = parser.parse_args(argv)

    driver = connect_driver(args.driver, args.state_dir, args.retry_after, args.url)
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    with args.out.open("a", encoding="utf-8") as out:
        if args.mode == "hold":
            job = driver.pop([args.queue], block=10)
            if job is None:
                return 1
            out.write(f"{job.id} {job.attempts}\n")
            out.flush()
            time.sleep(HOLD_SECONDS)
            return 0
        while (job := driver.pop([args.queue], block=args.idle)) is not None:
            if job.duplicate_of is not None:
                if not driver.fail(job, f"DuplicateJob: {job.duplicate_of}"):
                    print(f"fail refused for duplicate of {job.duplicate_of}", file=sys.stderr)
                    return 2
                with args.out.with_suffix(".dup").open("a", encoding="utf-8") as dups:
                    dups.write(f"{job.duplicate_of}\n")
                continue
            if not driver.ack(job):
                print(f"ack refused for job {job.id}", file=sys.stderr)
                return 2
            out.write(f"{job.id} {job.attempts}\n")
            out.flush()
    driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
