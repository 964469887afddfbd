"""Redis Cluster: every key of a queue in one slot, and a master failover survived.

The contract suite runs against a cluster too (`redis-cluster` in
tests/driver_factories.py); these tests hold what is particular to a cluster:
the braced key names an operator types, REDIS_CLUSTER reaching the one Redis
factory, WAIT on the slot's master, and a master killed under load.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from backends.redis_client import address, is_cluster
from config.settings import ConfigError, load_settings
from queues import connections
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from tests.jobs_fixture.support import PROJECT_ROOT, main_env
from tests.redis_topology import Cluster, shared_cluster, wait_until

#: Jobs the dispatching process queues across the failover.
JOB_COUNT = 600
#: Acknowledged dispatches before the master is killed.
KILL_AFTER = 150
#: Seconds a lease lasts in the failover test (a reservation lost with the master re-runs).
RETRY_AFTER = 5
#: Seconds from the kill until dispatch must be acknowledged again: the node timeout
#: (1 s), the replica's election, and the clients' backoff, on a loaded machine.
FAILOVER_BOUND = 30.0


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    seed = shared_cluster().seed
    client = RedisCluster(host=seed.host, port=seed.port, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def _env(cluster: Cluster, tmp_path: Path, **extra: str) -> dict[str, str]:
    return main_env(
        "redis",
        tmp_path,
        REDIS_HOST=cluster.seed.host,
        REDIS_PORT=str(cluster.seed.port),
        REDIS_DB="0",
        REDIS_CLUSTER="true",
        **extra,
    )


def _payload(job_id: str) -> str:
    return Envelope(job="t.noop", data={}, id=job_id).to_json()


def test_every_key_of_a_queue_carries_its_name_as_hash_tag(
    cluster: RedisCluster,
) -> None:
    driver = RedisDriver(cluster, RedisFailedStore(cluster))  # type: ignore[arg-type]
    driver.push("emails", _payload("a"))
    driver.later("emails", _payload("b"), 60)
    driver.push("emails", _payload("c"))
    job = driver.pop(["emails"])
    assert job is not None
    assert driver.fail(job, "boom")
    job = driver.pop(["emails"])
    assert job is not None
    # The operator's commands of the README, cluster form.
    assert cluster.llen("routemq:queue:{emails}") == 0
    assert cluster.zcard("routemq:queue:{emails}:delayed") == 1
    assert cluster.llen("routemq:queue:{emails}:reserved") == 1
    assert cluster.llen("routemq:queue:failed:{emails}") == 1
    assert cluster.smembers("routemq:queues") == {"emails"}
    assert cluster.smembers("routemq:queues:failed") == {"emails"}
    keys = [k for node in cluster.get_primaries() for k in cluster.keys(target_nodes=node)]
    queue_keys = [str(k) for k in keys if str(k).startswith("routemq:queue:")]
    assert queue_keys and all("{emails}" in k for k in queue_keys), queue_keys
    slots = {cluster.keyslot(k) for k in queue_keys}
    assert slots == {cluster.keyslot("emails")}, "a queue's keys span slots"


def test_queues_in_different_slots_pop_in_priority_order(cluster: RedisCluster) -> None:
    driver = RedisDriver(cluster, RedisFailedStore(cluster))  # type: ignore[arg-type]
    names = ["high", "low", "bulk"]
    assert len({cluster.keyslot(n) for n in names}) == 3
    driver.bulk([("low", _payload("l1"), 0.0), ("high", _payload("h1"), 0.0)])
    driver.push("bulk", _payload("b1"))
    popped = []
    while (job := driver.pop(names)) is not None:
        popped.append(job.id)
        assert driver.ack(job)
    assert popped == ["h1", "l1", "b1"]
    assert driver.queues() == []


def test_a_blocking_pop_on_several_queues_is_woken_by_a_push_to_any(
    cluster: RedisCluster,
) -> None:
    driver = RedisDriver(cluster, RedisFailedStore(cluster))  # type: ignore[arg-type]
    other = RedisDriver(cluster, RedisFailedStore(cluster))  # type: ignore[arg-type]
    started = time.monotonic()
    timer = threading.Timer(0.3, lambda: other.push("low", _payload("x")))
    timer.start()
    job = driver.pop(["high", "low"], block=10)
    timer.join()
    assert job is not None and job.id == "x"
    assert time.monotonic() - started < 5


def test_redis_cluster_setting_builds_a_cluster_client(tmp_path: Path) -> None:
    topology = shared_cluster()
    settings = load_settings(_env(topology, tmp_path), dotenv_path=None)
    with connections.configured(settings):
        driver = connections.get_driver("redis")
        assert isinstance(driver, RedisDriver) and is_cluster(driver.client)
        assert address(driver.client).startswith("cluster ")
        driver.push("emails", _payload("a"))
        job = driver.pop(["emails"])
        assert job is not None and driver.ack(job)


def test_wait_replicas_goes_to_the_master_of_the_jobs_slot(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    driver = RedisDriver(cluster, RedisFailedStore(cluster), wait_replicas=1)  # type: ignore[arg-type]
    topology = shared_cluster()
    master = topology.master_of("routemq:queue:{emails}")
    for n in range(10):
        driver.push("emails", _payload(f"j{n}"))
    replica = next(
        node
        for node in topology.nodes
        if node.process is not None
        and node.client().info("replication").get("master_port") == master.port
    )
    client = redis.Redis(host=replica.host, port=replica.port)
    client.execute_command("READONLY")
    assert client.llen("routemq:queue:{emails}") == 10
    client.close()
    too_many = RedisDriver(cluster, RedisFailedStore(cluster), wait_replicas=2, wait_timeout_ms=50)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="only 1 of REDIS_WAIT_REPLICAS=2"):
        too_many.push("emails", _payload("j-more"))


def test_cluster_needs_database_zero() -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER=true needs REDIS_DB=0"):
        load_settings({"REDIS_CLUSTER": "true", "REDIS_DB": "3"}, dotenv_path=None)


def _lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


@pytest.mark.slow
@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_master_killed_mid_load_its_replica_takes_over_and_work_goes_on(
    tmp_path: Path, wait_replicas: int
) -> None:
    """Without WAIT, only jobs acknowledged just before the kill may be lost. With
    REDIS_WAIT_REPLICAS=1 none is: dispatch to the dead master's slots waits (as an
    outage) until the killed node is back as the new master's replica."""
    topology = Cluster(tmp_path / "cluster")
    try:
        env = _env(
            topology,
            tmp_path,
            QUEUE_RETRY_AFTER=str(RETRY_AFTER),
            REDIS_WAIT_REPLICAS=str(wait_replicas),
        )
        # The RecordJob queue ("default") lives on this master: kill it.
        victim = topology.master_of("routemq:queue:{default}")
        runs, acked = tmp_path / "runs", tmp_path / "acked"
        worker_log = (tmp_path / "worker.log").open("w")
        dispatch_log = (tmp_path / "dispatch.log").open("w")
        command = [sys.executable, "main.py", "--queue-work", "--connection", "redis"]
        worker = subprocess.Popen(
            [*command, "--sleep", "0.1"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "tests.ha_dispatch_child", str(runs), str(acked),
             str(JOB_COUNT)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=dispatch_log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: len(_lines(acked)) >= KILL_AFTER, "dispatches before the kill", 60)
            before = len(_lines(acked))
            victim.kill()
            killed_at = time.monotonic()
            if wait_replicas:
                wait_until(
                    lambda: topology.master_of("routemq:queue:{default}") is not victim,
                    "the replica to take over",
                )
                victim.start()  # back as the new master's replica: WAIT 1 can succeed again
            wait_until(lambda: len(_lines(acked)) > before + 10, "dispatch after failover", 60)
            resumed_after = time.monotonic() - killed_at
            assert dispatcher.wait(120) == 0, (tmp_path / "dispatch.log").read_text()[-3000:]
            after_failover = set(_lines(acked)[before + 10 :])
            wait_until(
                lambda: set(_lines(runs)) >= after_failover,
                "every job dispatched after the failover to run",
                RETRY_AFTER * 4 + 60,
            )
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            for process in (dispatcher, worker):
                if process.poll() is None:
                    process.terminate()
                    process.wait(20)
        assert resumed_after < FAILOVER_BOUND
        assert sorted(_lines(acked)) == list(range(JOB_COUNT))
        new_master = topology.master_of("routemq:queue:{default}")
        assert new_master is not victim, "the replica did not take over"
        lost = set(range(JOB_COUNT)) - set(_lines(runs))
        # Replication is asynchronous: only jobs acknowledged just before the kill may be
        # lost (README "Scaling out"); everything dispatched after the failover ran.
        assert all(value < before + 10 for value in lost), sorted(lost)
        if wait_replicas:
            assert not lost, f"acknowledged jobs lost despite REDIS_WAIT_REPLICAS=1: {lost}"
        print(
            f"dispatch resumed {resumed_after:.1f} s after the kill; "
            f"{len(lost)} acknowledged jobs lost with the master "
            f"(REDIS_WAIT_REPLICAS={wait_replicas})"
        )
    finally:
        topology.stop_all()
