"""Redis driver throughput against raw redis-py commands in the same run.

Baselines are the bare commands a hand-written queue would send: RPUSH for a
push, RPUSH + LPOP for a push-and-take (no lease, no crash safety), and
RPUSH + LMOVE + LREM (the classic "reliable queue" with a processing list).
Runs on the test database (9) under a private key prefix, deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import redis

from benchmarks.common import BenchResult, ops_per_sec
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope

HOST, PORT = "127.0.0.1", 6379
#: Redis database the benchmark writes to (the test database).
BENCH_DB = 9
#: Operations per timed run (each figure is the best of three runs).
COUNT = 2000
#: Jobs per bulk call in the bulk benchmark.
BULK_SIZE = 100


def _client() -> redis.Redis:
    client = redis.Redis(host=HOST, port=PORT, db=BENCH_DB)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise ConnectionError(f"Redis at {HOST}:{PORT} is unreachable: {exc}") from None
    return client


def _cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    keys += list(client.scan_iter(match=f"{prefix.rstrip(':')}s*", count=1000))
    if keys:
        client.delete(*keys)


def _payloads() -> Iterator[str]:
    """Envelopes with distinct ids, made ahead of the timing (the driver adds a job
    whose id is already queued only once, so a repeated payload would add nothing)."""
    text = Envelope(job="bench.noop", data={"device": "d-1", "value": 21.5}, id="ID").to_json()
    return iter([text.replace('"id":"ID"', f'"id":"{n:08d}"') for n in range(10 * COUNT)])


def run() -> list[BenchResult]:
    """Measure push, push+pop+ack and bulk throughput with same-run raw baselines."""
    client = _client()
    prefix = f"bench:{uuid.uuid4().hex[:8]}:queue:"
    driver = RedisDriver(client, RedisFailedStore(client, prefix), 90, prefix=prefix)
    payloads = _payloads()
    payload = next(payloads)
    raw_key, raw_reserved = f"{prefix}raw", f"{prefix}raw:reserved"
    try:
        results: list[BenchResult] = []

        push = ops_per_sec(lambda: driver.push("bench", next(payloads)), COUNT)
        raw_push = ops_per_sec(lambda: client.rpush(raw_key, payload), COUNT)
        results.append(BenchResult("redis driver push", push, "raw RPUSH", raw_push))
        _cleanup(client, prefix)

        def cycle() -> None:
            driver.push("bench", next(payloads))
            job = driver.pop(["bench"])
            assert job is not None and driver.ack(job)

        def raw_cycle() -> None:
            client.rpush(raw_key, payload)
            client.lpop(raw_key)

        def reliable_cycle() -> None:
            client.rpush(raw_key, payload)
            taken = client.lmove(raw_key, raw_reserved, "LEFT", "RIGHT")
            if taken is not None:  # None only if another process flushed db 9 meanwhile
                client.lrem(raw_reserved, 1, taken)  # type: ignore[arg-type]

        full = ops_per_sec(cycle, COUNT)
        raw_full = ops_per_sec(raw_cycle, COUNT)
        reliable = ops_per_sec(reliable_cycle, COUNT)
        results.append(BenchResult("redis driver push+pop+ack", full, "raw RPUSH+LPOP", raw_full))
        results.append(
            BenchResult("redis driver push+pop+ack", full, "raw RPUSH+LMOVE+LREM", reliable)
        )
        _cleanup(client, prefix)

        batches = iter(
            [
                [("bench", next(payloads), 0.0) for _ in range(BULK_SIZE)]
                for _ in range(3 * COUNT // BULK_SIZE)
            ]
        )

        def raw_bulk() -> None:
            pipe = client.pipeline(transaction=True)
            for _ in range(BULK_SIZE):
                pipe.rpush(raw_key, payload)
            pipe.execute()

        bulk = ops_per_sec(lambda: driver.bulk(next(batches)), COUNT // BULK_SIZE) * BULK_SIZE
        raw = ops_per_sec(raw_bulk, COUNT // BULK_SIZE) * BULK_SIZE
        results.append(
            BenchResult(f"redis driver bulk({BULK_SIZE}) jobs", bulk, "raw MULTI RPUSH jobs", raw)
        )
        return results
    finally:
        _cleanup(client, prefix)
        client.close()
