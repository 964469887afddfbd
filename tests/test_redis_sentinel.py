"""Redis Sentinel: clients find the master through the sentinels and follow a failover.

A private master with two replicas and three `redis-server --sentinel` on free
loopback ports (tests/redis_topology.py). Two replicas, not one: with
REDIS_WAIT_REPLICAS=1 the promoted replica needs a replica of its own, or no
dispatch could be acknowledged after the failover until the old master returns.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.redis_client import address, build_redis
from config.settings import ConfigError, load_settings
from queues import connections
from queues.drivers.redis import RedisDriver
from queues.envelope import Envelope
from tests.jobs_fixture.support import PROJECT_ROOT, main_env
from tests.redis_topology import SENTINEL_MASTER, Replicated, wait_until

#: Jobs the dispatching process queues across the failover.
JOB_COUNT = 600
#: Acknowledged dispatches before the master is killed.
KILL_AFTER = 150
#: Seconds a lease lasts in the failover test (an ack lost with the master re-runs its job).
RETRY_AFTER = 5
#: Seconds from the kill until dispatch must be acknowledged again: down-after (1 s),
#: the election and promotion, and the clients' backoff, on a loaded machine.
FAILOVER_BOUND = 30.0


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    made = Replicated(tmp_path_factory.mktemp("sentinel"), replicas=2, sentinels=3)
    yield made
    made.stop_all()


def _env(topology: Replicated, tmp_path: Path, **extra: str) -> dict[str, str]:
    return main_env(
        "redis",
        tmp_path,
        REDIS_HOST="192.0.2.1",  # never used: the sentinels name the master
        REDIS_PORT="1",
        REDIS_DB="0",
        REDIS_SENTINELS=topology.sentinel_addresses,
        REDIS_SENTINEL_MASTER=SENTINEL_MASTER,
        **extra,
    )


def _master_address(topology: Replicated) -> tuple[str, int]:
    """The master's address as the first sentinel reports it."""
    client = topology.sentinels[0].client()
    reply = client.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
    client.close()
    assert isinstance(reply, tuple), f"the sentinels know no master {SENTINEL_MASTER}"
    return str(reply[0]), int(reply[1])


def _lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def test_the_client_talks_to_the_master_the_sentinels_name(
    topology: Replicated, tmp_path: Path
) -> None:
    settings = load_settings(_env(topology, tmp_path), dotenv_path=None)
    client = build_redis(settings)
    master = _master_address(topology)
    assert client.info("replication")["role"] == "master"
    assert int(client.info("server")["tcp_port"]) == int(master[1])
    assert f"master '{SENTINEL_MASTER}' of sentinels" in address(client)
    with connections.configured(settings):
        driver = connections.get_driver("redis")
        assert isinstance(driver, RedisDriver)
        driver.push("emails", Envelope(job="t.noop", data={}, id="j-1").to_json())
        job = driver.pop(["emails"])
        assert job is not None and driver.ack(job)
    client.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "a:1"}, "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER needs REDIS_SENTINELS"),
        (
            {"REDIS_SENTINELS": "a:1,b", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS must be host:port pairs separated by commas .* got 'b'",
        ),
        (
            {"REDIS_SENTINELS": "a:99999", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS must be host:port pairs",
        ),
        (
            {"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_CLUSTER": "true"},
            "REDIS_CLUSTER and REDIS_SENTINELS exclude each other",
        ),
    ],
)
def test_bad_sentinel_settings_stop_the_start_with_one_line(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, dotenv_path=None)


def test_sentinel_addresses_are_parsed() -> None:
    settings = load_settings(
        {"REDIS_SENTINELS": " 10.0.0.1:26379, [::1]:26380 ,", "REDIS_SENTINEL_MASTER": "m"},
        dotenv_path=None,
    )
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380))


@pytest.mark.slow
def test_master_killed_under_load_loses_no_acknowledged_job(
    topology: Replicated, tmp_path: Path
) -> None:
    env = _env(topology, tmp_path, REDIS_WAIT_REPLICAS="1", QUEUE_RETRY_AFTER=str(RETRY_AFTER))
    runs, acked = tmp_path / "runs", tmp_path / "acked"
    old_master = topology.master
    worker_log, dispatch_log = (
        (tmp_path / "worker.log").open("w"),
        (tmp_path / "dispatch.log").open("w"),
    )
    worker = subprocess.Popen(
        [sys.executable, "main.py", "--queue-work", "--connection", "redis", "--sleep", "0.1"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "tests.ha_dispatch_child", str(runs), str(acked), str(JOB_COUNT)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=dispatch_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: len(_lines(acked)) >= KILL_AFTER, "dispatches before the kill", 60)
        before = len(_lines(acked))
        old_master.kill()
        killed_at = time.monotonic()
        wait_until(lambda: len(_lines(acked)) > before + 10, "dispatch after the failover", 60)
        resumed_after = time.monotonic() - killed_at
        assert dispatcher.wait(120) == 0, (tmp_path / "dispatch.log").read_text()[-3000:]
        wait_until(
            lambda: set(_lines(runs)) >= set(range(JOB_COUNT)),
            "every acknowledged job to run",
            RETRY_AFTER * 4 + 60,
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        for process in (dispatcher, worker):
            if process.poll() is None:
                process.terminate()
                process.wait(20)
    assert sorted(_lines(acked)) == list(range(JOB_COUNT))
    ran = _lines(runs)
    assert set(ran) == set(range(JOB_COUNT)), "an acknowledged job was lost in the failover"
    assert resumed_after < FAILOVER_BOUND
    assert _master_address(topology)[1] != old_master.port
    print(
        f"dispatch resumed {resumed_after:.1f} s after the kill; "
        f"{len(ran) - JOB_COUNT} duplicate runs of {JOB_COUNT}"
    )
