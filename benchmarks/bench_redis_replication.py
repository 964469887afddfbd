"""The cost of REDIS_WAIT_REPLICAS: a push that waits for one replica, against one that does not.

Starts its own master and replica (`redis-server` on free loopback ports, no
persistence), so the shared server is untouched and the replica link is
loopback: the figures show WAIT's own cost (one replication round trip per
dispatch), not a network's. Baselines in the same run: the driver's push
without WAIT, and a raw RPUSH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis

from benchmarks.common import BenchResult, ops_per_sec
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope

#: Pushes per timed run (each figure is the best of three runs).
COUNT = 2000
#: Seconds the master and replica may take to start and link.
START_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(folder: str, *extra: str) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    port = _free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder),
            *("--save", "", "--appendonly", "no", *extra),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            client.ping()
            return process, client
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise ConnectionError("a private redis-server did not start") from None
            time.sleep(0.05)


def _payloads() -> Iterator[str]:
    text = Envelope(job="bench.noop", data={"device": "d-1", "value": 21.5}, id="ID").to_json()
    return iter([text.replace('"id":"ID"', f'"id":"{n:08d}"') for n in range(8 * COUNT)])


def run() -> list[BenchResult]:
    """Push with WAIT 1 vs without, and vs raw RPUSH, on a private master + replica."""
    if shutil.which("redis-server") is None:
        raise ConnectionError("redis-server is not on PATH")
    with tempfile.TemporaryDirectory() as master_dir, tempfile.TemporaryDirectory() as copy_dir:
        master_process, master = _start(master_dir)
        port = master.connection_pool.connection_kwargs["port"]
        replica_process, replica = _start(copy_dir, "--replicaof", "127.0.0.1", str(port))
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while replica.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise ConnectionError("the private replica did not link to its master")
                time.sleep(0.05)
            plain = RedisDriver(master, RedisFailedStore(master))
            waiting = RedisDriver(master, RedisFailedStore(master), wait_replicas=1)
            payloads = _payloads()
            with_wait = ops_per_sec(lambda: waiting.push("bench", next(payloads)), COUNT)
            without = ops_per_sec(lambda: plain.push("bench", next(payloads)), COUNT)
            raw = ops_per_sec(lambda: master.rpush("raw", "x"), COUNT)
            return [
                BenchResult(
                    "redis push, REDIS_WAIT_REPLICAS=1", with_wait, "push, no WAIT", without
                ),
                BenchResult("redis push, REDIS_WAIT_REPLICAS=1", with_wait, "raw RPUSH", raw),
            ]
        finally:
            for client in (master, replica):
                client.close()
            for process in (replica_process, master_process):
                process.kill()
                process.wait()
