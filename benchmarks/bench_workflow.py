"""Workflow primitives against raw redis-py in the same run, and the worker's per-job hooks.

* rate-limit pass (`RedisCoordinator.take`, one Lua call) vs a raw INCR (one round trip);
* claim + release of a lock (two Lua calls) vs raw SET NX PX + DEL;
* dispatch of a unique job (claim + push) vs a plain dispatch (push), both on the driver;
* the worker's per-job hooks for a job without middleware or unique lock
  (`run_job` + `lifecycle.job_finished`) vs calling `handle()` directly: the cost
  every job pays for the features (no round trip).
Runs on the test database (9) under a private key prefix, deleted afterwards.
"""

from __future__ import annotations

import uuid

from benchmarks.bench_redis_queue import _cleanup, _client
from benchmarks.common import BenchResult, ops_per_sec
from queues import lifecycle
from queues.coordination import RedisCoordinator
from queues.dispatcher import dispatch
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from queues.job import Job
from queues.job_middleware import run_job
from queues.registry import JobRegistry

#: Operations per timed run (each figure is the best of three runs).
COUNT = 2000
#: Calls per timed run of the in-process hook figures.
HOOK_COUNT = 200_000


class BenchJob(Job):
    """A job that does nothing (registered by hand, never run by a worker)."""

    def unique_id(self) -> str:
        """Each job its own id, so every unique dispatch claims and pushes."""
        return str(self.n)

    def handle(self) -> None:
        return None


def run() -> list[BenchResult]:
    """Measure the primitives and hooks with same-run baselines."""
    client = _client()
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    coordinator = RedisCoordinator(client, prefix=f"{prefix}coord:")
    driver = RedisDriver(client, RedisFailedStore(client, f"{prefix}queue:"), 90,
                         prefix=f"{prefix}queue:")  # fmt: skip
    registry = JobRegistry("benchmarks")
    registry.register(BenchJob)
    counter = iter(range(10**9))
    results: list[BenchResult] = []
    try:
        raw_incr = ops_per_sec(lambda: client.incr(f"{prefix}raw"), COUNT)
        take = ops_per_sec(lambda: coordinator.take("bench", 10**6, 60.0), COUNT)
        results.append(BenchResult("rate-limit take (sliding window)", take, "raw INCR", raw_incr))

        def raw_lock() -> None:
            client.set(f"{prefix}rawlock", "t", nx=True, px=10_000)
            client.delete(f"{prefix}rawlock")

        def lock() -> None:
            coordinator.claim("lock", "t", 10.0)
            coordinator.release("lock", "t")

        results.append(
            BenchResult(
                "claim + release (fenced)",
                ops_per_sec(lock, COUNT),
                "raw SET NX PX + DEL",
                ops_per_sec(raw_lock, COUNT),
            )
        )

        def plain() -> None:
            dispatch(BenchJob(n=next(counter)), connection=driver, registry=registry)

        def unique() -> None:
            dispatch(BenchJob(n=next(counter)), connection=driver, registry=registry,
                     unique_for=60)  # fmt: skip

        results.append(
            BenchResult(
                "dispatch unique job (claim + push)",
                ops_per_sec(unique, COUNT),
                "dispatch plain job (push)",
                ops_per_sec(plain, COUNT),
            )
        )

        job = BenchJob(n=1)
        envelope = Envelope(job="BenchJob", data={"n": 1})

        def hooked() -> None:
            run_job(job, lambda j: j.handle(), driver)
            lifecycle.job_finished(driver, envelope, "succeeded")

        results.append(
            BenchResult(
                "worker hooks per job (no middleware)",
                ops_per_sec(hooked, HOOK_COUNT),
                "job.handle() alone",
                ops_per_sec(job.handle, HOOK_COUNT),
            )
        )
    finally:
        _cleanup(client, prefix)
        client.close()
    return results
