"""REDIS_WAIT_REPLICAS: a dispatch returns only once N replicas hold the job.

Against a private master with one replica (tests/redis_topology.py); the shared
Redis is not touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backends.errors import BackendUnavailableError
from config.settings import ConfigError, load_settings
from queues import connections
from queues.drivers.redis import RedisDriver, RedisFailedStore
from queues.envelope import Envelope
from tests.redis_topology import Replicated


def _payload(job_id: str) -> str:
    return Envelope(job="t.noop", data={"n": job_id}, id=job_id).to_json()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    topology = Replicated(tmp_path_factory.mktemp("wait"), replicas=1)
    yield topology
    topology.stop_all()


@pytest.fixture
def master(pair: Replicated) -> Iterator[redis.Redis]:
    client = redis.Redis(host=pair.master.host, port=pair.master.port, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def _driver(client: redis.Redis, replicas: int, timeout_ms: int = 1000) -> RedisDriver:
    return RedisDriver(
        client, RedisFailedStore(client), wait_replicas=replicas, wait_timeout_ms=timeout_ms
    )


def test_push_returns_with_the_job_already_on_the_replica(
    pair: Replicated, master: redis.Redis
) -> None:
    driver = _driver(master, 1)
    replica = pair.replicas[0].client()
    for n in range(20):
        driver.push("emails", _payload(f"job-{n}"))
        # No wait, no poll: WAIT returned, so the replica has applied the write.
        assert replica.llen("routemq:queue:emails") == n + 1
    driver.later("emails", _payload("later-1"), 60)
    assert replica.zcard("routemq:queue:emails:delayed") == 1
    driver.bulk([("emails", _payload("bulk-1"), 0.0), ("sms", _payload("bulk-2"), 0.0)])
    assert replica.llen("routemq:queue:sms") == 1
    replica.close()


def test_fewer_replicas_than_asked_raise_an_outage_naming_the_setting(
    master: redis.Redis,
) -> None:
    driver = _driver(master, 2, timeout_ms=50)
    with pytest.raises(BackendUnavailableError, match="only 1 of REDIS_WAIT_REPLICAS=2") as info:
        driver.push("emails", _payload("job-1"))
    assert "REDIS_WAIT_TIMEOUT_MS=50" in str(info.value)
    # The job is on the master; dispatching the same job again adds no second copy.
    assert master.llen("routemq:queue:emails") == 1
    with pytest.raises(BackendUnavailableError):
        driver.push("emails", _payload("job-1"))
    assert master.llen("routemq:queue:emails") == 1


def test_a_flushed_script_cache_is_reloaded(master: redis.Redis) -> None:
    driver = _driver(master, 1)
    driver.push("emails", _payload("job-1"))
    master.script_flush()
    driver.push("emails", _payload("job-2"))
    assert master.llen("routemq:queue:emails") == 2


def test_without_replicas_asked_no_wait_is_sent(master: redis.Redis) -> None:
    driver = _driver(master, 0)
    master.config_resetstat()
    driver.push("emails", _payload("job-1"))
    stats = master.info("commandstats")
    assert "cmdstat_wait" not in stats
    assert master.llen("routemq:queue:emails") == 1


def test_settings_reach_the_driver(pair: Replicated, master: redis.Redis) -> None:
    env = {
        "ENABLE_REDIS": "true",
        "QUEUE_CONNECTION": "redis",
        "REDIS_HOST": pair.master.host,
        "REDIS_PORT": str(pair.master.port),
        "REDIS_WAIT_REPLICAS": "1",
        "REDIS_WAIT_TIMEOUT_MS": "250",
    }
    with connections.configured(load_settings(env, dotenv_path=None)):
        driver = connections.get_driver("redis")
        assert isinstance(driver, RedisDriver)
        assert (driver.wait_replicas, driver.wait_timeout_ms) == (1, 250)
        driver.push("emails", _payload("job-1"))
        stats = master.info("commandstats")
        assert int(stats["cmdstat_wait"]["calls"]) >= 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_WAIT_REPLICAS": "-1"}, "REDIS_WAIT_REPLICAS must be at least 0, got -1"),
        ({"REDIS_WAIT_REPLICAS": "two"}, "REDIS_WAIT_REPLICAS must be an integer, got 'two'"),
        ({"REDIS_WAIT_TIMEOUT_MS": "0"}, "REDIS_WAIT_TIMEOUT_MS must be at least 1, got 0"),
    ],
)
def test_bad_wait_settings_stop_the_start_with_one_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, dotenv_path=None)
