"""What a Redis Cluster costs the driver: the same calls on a 3-master cluster and on one server.

Starts a private cluster (three masters, three replicas) and a private single
server on free loopback ports (tests/redis_topology.py), so the shared server
is untouched. Rows: push, push+pop+ack, a pop over two queues in different
slots (one script per queue on a cluster), and a push with
REDIS_WAIT_REPLICAS=1 on the cluster (WAIT is a second call there), each
against the same call on the single server in the same run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from benchmarks.common import BenchResult, ops_per_sec
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope

#: Operations per timed run (each figure is the best of three runs).
COUNT = 1000


def _payloads() -> Iterator[str]:
    text = Envelope(job="bench.noop", data={"device": "d-1", "value": 21.5}, id="ID").to_json()
    return iter([text.replace('"id":"ID"', f'"id":"{n:08d}"') for n in range(30 * COUNT)])


def _rows(driver: RedisDriver, payloads: Iterator[str]) -> list[float]:
    def cycle() -> None:
        driver.push("bench", next(payloads))
        job = driver.pop(["bench"])
        assert job is not None and driver.ack(job)

    def two_queue_cycle() -> None:
        driver.push("bench", next(payloads))
        job = driver.pop(["empty", "bench"])  # "empty" is looked at first, in vain
        assert job is not None and driver.ack(job)

    return [
        ops_per_sec(lambda: driver.push("bench", next(payloads)), COUNT),
        ops_per_sec(cycle, COUNT),
        ops_per_sec(two_queue_cycle, COUNT),
    ]


def run() -> list[BenchResult]:
    """Cluster against single-server figures of the same driver calls."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise ConnectionError("redis-server and redis-cli are not on PATH")
    from tests.redis_topology import Cluster, RedisProcess

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    cluster = Cluster(folder / "cluster")
    single = RedisProcess(folder / "single", [])
    try:
        seed = cluster.seed
        cluster_client = RedisCluster(host=seed.host, port=seed.port)
        single_client = redis.Redis(host=single.host, port=single.port)
        on_cluster = RedisDriver(cluster_client, RedisFailedStore(cluster_client))  # type: ignore[arg-type]
        on_single = RedisDriver(single_client, RedisFailedStore(single_client))
        payloads = _payloads()
        clustered = _rows(on_cluster, payloads)
        plain = _rows(on_single, payloads)
        waiting = RedisDriver(cluster_client, RedisFailedStore(cluster_client), wait_replicas=1)  # type: ignore[arg-type]
        wait_push = ops_per_sec(lambda: waiting.push("bench", next(payloads)), COUNT)
        names = ("push", "push+pop+ack", "push+pop(2 queues)+ack")
        results = [
            BenchResult(f"cluster {name}", ours, f"one server {name}", base)
            for name, ours, base in zip(names, clustered, plain, strict=True)
        ]
        results.append(
            BenchResult(
                "cluster push, REDIS_WAIT_REPLICAS=1", wait_push, "cluster push", clustered[0]
            )
        )
        cluster_client.close()
        single_client.close()
        return results
    finally:
        cluster.stop_all()
        single.kill()
        shutil.rmtree(folder, ignore_errors=True)
