"""Worker process of benchmarks/bench_pg_wakeup.py: blocking pops, one line per job.

`python -m benchmarks.pickup_worker KIND URL OUT`: KIND is `postgres` (LISTEN/
NOTIFY wake-ups), `postgres-poll` (the same driver with its waker removed, so an
idle pop polls every BLOCKING_POLL_SECONDS like MariaDB and SQLite) or `redis`
(URL is then a redis:// URL). For each job it appends `<job id> <picked up
at>` (unix time, taken when `pop` returned) to OUT and acks it; a job
whose data has `"stop": true` ends the process. Before the first job it idles
IDLE_SECONDS and writes `idle-claims <n>`: the claims it sent while nothing
happened (database kinds only).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

#: Seconds the worker idles before the timed jobs, counting its claims.
IDLE_SECONDS = 3.0

#: Seconds of each blocking pop.
BLOCK_SECONDS = 5.0


def _driver(kind: str, url: str) -> Any:
    if kind == "redis":
        import redis

        from queues.drivers.redis import RedisDriver, RedisFailedStore

        client = redis.Redis.from_url(url)
        return RedisDriver(client, RedisFailedStore(client))
    from backends.sql_engine import engine_from_url
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore

    engine = engine_from_url(url)
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    if kind == "postgres-poll":
        driver._waker = None
    return driver


def main() -> int:
    """Run the worker loop (see the module docstring)."""
    kind, url, out = sys.argv[1:4]
    driver = _driver(kind, url)
    claims = 0
    if kind != "redis":
        claim = driver._claim_once

        def counted(queues: Any) -> Any:
            nonlocal claims
            claims += 1
            return claim(queues)

        driver._claim_once = counted
    with open(out, "a", buffering=1) as lines:
        lines.write("ready\n")
        started = time.monotonic()
        driver.pop(["bench"], block=IDLE_SECONDS)  # the queue is empty: a pure idle wait
        lines.write(f"idle-claims {claims} {time.monotonic() - started:.3f}\n")
        while True:
            job = driver.pop(["bench"], block=BLOCK_SECONDS)
            if job is None:
                continue
            picked = time.time()
            driver.ack(job)
            if json.loads(job.payload)["data"].get("stop"):
                return 0
            lines.write(f"{job.id} {picked:.6f}\n")


if __name__ == "__main__":
    sys.exit(main())
