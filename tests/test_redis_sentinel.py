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
from core.message import Message
from core.router import Router
from queues import connections, dispatch
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from queues.outbox import DispatchOutbox
from tests.conftest import MQTT_HOST, MQTT_PORT, need_service
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import PROJECT_ROOT, main_env, registry
from tests.mqtt_helpers import make_settings, running_runtime, unique_prefix
from tests.redis_topology import SENTINEL_MASTER, Replicated, wait_until
from tests.test_intake_outages import CountingPublisher

#: Jobs the dispatching process queues across the failover.
JOB_COUNT = 600
#: Acknowledged dispatches before the master is killed.
KILL_AFTER = 150
#: MQTT messages the app's intake turns into jobs across the failover, and their rate (/s).
MESSAGE_COUNT, MESSAGE_RATE = 400, 80
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
    """A dispatching process, a worker process and an app (MQTT intake, outbox) run
    against the master the sentinels name when it is SIGKILLed: all follow the
    failover by themselves, and every acknowledged job (dispatch returned, or the
    broker acknowledged the message) runs."""
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    env = _env(topology, tmp_path, REDIS_WAIT_REPLICAS="1", QUEUE_RETRY_AFTER=str(RETRY_AFTER))
    runs, acked, app_runs = tmp_path / "runs", tmp_path / "acked", tmp_path / "app_runs"
    old_master = topology.master
    worker_log = (tmp_path / "worker.log").open("w")
    dispatch_log = (tmp_path / "dispatch.log").open("w")
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
    # The app: the MQTT intake dispatching through the outbox, as `--run` does.
    client = build_redis(load_settings(env, dotenv_path=None))
    driver = RedisDriver(client, RedisFailedStore(client), wait_replicas=1)
    loaded = registry()
    prefix = unique_prefix("sentinel")
    router = Router()

    def enqueue(message: Message) -> None:
        value = int(message.params["n"])
        dispatch(jobs.RecordJob(path=str(app_runs), value=value), connection=driver,
                 registry=loaded)  # fmt: skip

    router.on(f"{prefix}/r/{{n}}", enqueue, qos=1)
    settings = make_settings(MQTT_HOST, MQTT_PORT, mqtt_dead_letter_topic=f"{prefix}/dead")
    try:
        with running_runtime(
            settings, router, router.subscriptions("g"), outbox=DispatchOutbox()
        ) as runtime:
            publisher = CountingPublisher(MQTT_HOST, MQTT_PORT)
            try:
                streaming = publisher.stream(f"{prefix}/r", MESSAGE_COUNT, rate=MESSAGE_RATE)
                wait_until(
                    lambda: len(_lines(acked)) >= KILL_AFTER, "dispatches before the kill", 60
                )
                before = len(_lines(acked))
                old_master.kill()
                killed_at = time.monotonic()
                wait_until(
                    lambda: len(_lines(acked)) > before + 10, "dispatch after the failover", 60
                )
                resumed_after = time.monotonic() - killed_at
                assert dispatcher.wait(120) == 0, (tmp_path / "dispatch.log").read_text()[-3000:]
                streaming.join(60)
                wait_until(lambda: len(publisher.acked) == MESSAGE_COUNT, "the broker's acks", 60)
                wait_until(
                    lambda: (
                        set(_lines(runs)) >= set(range(JOB_COUNT))
                        and set(_lines(app_runs)) >= publisher.acked
                    ),
                    "every acknowledged job to run",
                    RETRY_AFTER * 4 + 60,
                )
            finally:
                publisher.close()
            assert runtime.dead_lettered == 0
            assert runtime.stats.outage_retries > 0, "the app never met the failover"
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        client.close()
        for process in (dispatcher, worker):
            if process.poll() is None:
                process.terminate()
                process.wait(20)
    assert sorted(_lines(acked)) == list(range(JOB_COUNT))
    ran = _lines(runs)
    assert set(ran) == set(range(JOB_COUNT)), "an acknowledged dispatch was lost in the failover"
    assert set(_lines(app_runs)) == set(range(MESSAGE_COUNT)), "an MQTT message's job was lost"
    assert resumed_after < FAILOVER_BOUND
    assert _master_address(topology)[1] != old_master.port
    print(
        f"dispatch resumed {resumed_after:.1f} s after the kill; "
        f"{len(ran) - JOB_COUNT} duplicate runs of {JOB_COUNT} dispatches, "
        f"{len(_lines(app_runs)) - MESSAGE_COUNT} of {MESSAGE_COUNT} MQTT messages"
    )
