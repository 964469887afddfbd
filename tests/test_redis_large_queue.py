"""Operator commands on a 200,000-job Redis queue never hold Redis for long.

The queue is built with pipelined raw commands (as fast as Redis takes them);
then `contains`, `--queue-migrate` into that queue, `--queue-retry all` into it,
and the failed-store commands (find, forget, flush) over a large failed list
run while another client PINGs Redis every few milliseconds: no PING may wait
PING_LIMIT or more. (A latency bound against the real server, not a benchmark:
the old scripts loaded the whole queue into Lua on each call, ~1 s per call.)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from tests.conftest import REDIS_HOST, REDIS_PORT, REDIS_TEST_DB
from tests.driver_factories import make_driver
from tests.jobs_fixture.support import main_env, run_main

#: Jobs in the large queue.
JOBS = 200_000
#: Failed records in the large failed list.
FAILED = 50_000
#: Longest a concurrent PING may wait, seconds.
PING_LIMIT = 0.050
#: Values per pipelined RPUSH while building.
BUILD_CHUNK = 5_000
#: Seconds between two PINGs of the watcher.
PING_EVERY = 0.002
QUEUE = "big"


class PingWatch(threading.Thread):
    """PINGs Redis on its own connection until stopped; keeps the slowest round trip."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
        self.slowest = 0.0
        self.pings = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.perf_counter()
            self.client.ping()
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.pings += 1
            time.sleep(PING_EVERY)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.client.close()
        return self.slowest


def job_text(n: int) -> str:
    return (
        f'{{"attempts":0,"id":"big-{n}","job":"RecordJob","queue":"{QUEUE}",'
        f'"data":{{"path":"/dev/null","value":{n}}},"max_tries":1,"timeout":null,'
        '"backoff":0,"retry_until":null,"created_at":1700000000.0}'
    )


def failed_text(n: int) -> str:
    return json.dumps(
        {
            "id": f"failed-{n}",
            "connection": "redis",
            "queue": "graveyard",
            "payload": job_text(n).replace("big-", "dead-"),
            "exception": "RuntimeError: boom",
            "failed_at": 1700000000.0 + n,
        },
        separators=(",", ":"),
    )


def build(client: redis.Redis) -> None:
    """200,000 pending jobs (indexed) and 50,000 failed records, pipelined in chunks."""
    pipe = client.pipeline(transaction=False)
    for start in range(0, JOBS, BUILD_CHUNK):
        numbers = range(start, min(start + BUILD_CHUNK, JOBS))
        pipe.rpush(f"routemq:queue:{QUEUE}", *(job_text(n) for n in numbers))
        pipe.hset(f"routemq:queue:{QUEUE}:ids", mapping={f"big-{n}": "q" for n in numbers})
        pipe.execute()
    for start in range(0, FAILED, BUILD_CHUNK):
        numbers = range(start, min(start + BUILD_CHUNK, FAILED))
        pipe.rpush("routemq:queue:failed:graveyard", *(failed_text(n) for n in numbers))
        pipe.execute()
    client.sadd("routemq:queues", QUEUE)
    client.sadd("routemq:queues:failed", "graveyard")


@pytest.mark.slow
def test_operator_commands_on_a_200k_job_queue_keep_redis_responsive(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    client = redis_client
    build(client)
    driver = RedisDriver(client, RedisFailedStore(client))
    source = make_driver("sqlite", tmp_path)  # --queue-migrate's source, shares no Redis state
    client.sadd("routemq:queues", QUEUE)  # make_driver("sqlite") did not flush Redis
    moving = [Envelope(job="RecordJob", data={"path": "/dev/null", "value": i}, queue=QUEUE)
              for i in range(100)]  # fmt: skip
    for job in moving:
        source.push(QUEUE, job.to_json())
    retrying = [Envelope(job="RecordJob", data={"path": "/dev/null", "value": i}, queue=QUEUE)
                for i in range(100)]  # fmt: skip
    for job in retrying:
        driver.failed_store.add("redis", QUEUE, job.to_json(), "RuntimeError: boom")
    env = main_env("redis", tmp_path)

    watch = PingWatch()
    watch.start()
    try:
        started = time.monotonic()
        for n in range(0, JOBS, JOBS // 50):
            assert driver.contains(QUEUE, f"big-{n}")
            assert not driver.contains(QUEUE, f"missing-{uuid.uuid4().hex}")
        contains_time = time.monotonic() - started

        migrated = run_main(
            ["--queue-migrate", "--from", "database", "--to", "redis", "--queue", QUEUE], env, 120
        )
        assert migrated.returncode == 0, migrated.stderr
        retried = run_main(["--queue-retry", "all", "--queue", QUEUE], env, 120)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == "retried 100 failed job(s)"

        shown = run_main(["--queue-failed-show", "dead-10"], env, 120)  # a job id, oldest end
        assert shown.returncode == 0 and "failed-10" in shown.stdout, shown.stderr
        forgot = run_main(["--queue-forget", "dead-10"], env, 120)
        assert forgot.returncode == 0, forgot.stderr
        flushed = run_main(["--queue-flush", "--older-than", "1"], env, 120)
        assert flushed.stdout.strip() == f"deleted {FAILED - 1} failed job(s) older than 1 days"
    finally:
        slowest = watch.stop()
        source.close()
    assert watch.pings > 100
    print(f"slowest PING {slowest * 1000:.1f} ms over {watch.pings} PINGs")
    assert slowest < PING_LIMIT, f"a PING waited {slowest * 1000:.1f} ms"
    assert contains_time < 5, f"100 contains calls took {contains_time:.1f} s"
    assert client.llen(f"routemq:queue:{QUEUE}") == JOBS + len(moving) + len(retrying)
    assert client.llen("routemq:queue:failed:graveyard") == 0
