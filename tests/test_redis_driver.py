"""Redis-only promises: the seed's key layout, real-process races, crashes, restarts.

Checked with raw redis-py commands (the monitoring commands of the seed) and
with child processes (tests/driver_race_child.py) racing on the shared test
database. Server restarts use a private redis-server on a free port.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backends import redis_client
from backends.redis_client import build_redis, get_redis
from config.settings import Settings
from queues.drivers.base import QueueError, ReservedJob
from queues.drivers.redis import (
    NOTIFY_CAP,
    POP_RECEIPT_TTL,
    SCRIPTS_DIR,
    SETTLE_RECEIPT_TTL,
    RedisDriver,
    RedisFailedStore,
    blpop_timeout,
    parse_version,
    script_source,
)
from queues.envelope import Envelope, validate_queue_name
from tests.conftest import REDIS_HOST, REDIS_PORT, REDIS_TEST_DB, need_service, port_open
from tests.driver_race_child import read_handled, spawn

#: Seconds a child process may take before the test gives up on it.
CHILD_TIMEOUT = 60.0


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def driver(client: redis.Redis) -> RedisDriver:
    return RedisDriver(client, RedisFailedStore(client), retry_after=90)


def envelope(queue: str = "default", **data: object) -> Envelope:
    return Envelope(job="tests.noop", data=dict(data), queue=queue)


def recorded(job: ReservedJob) -> bytes:
    """What the reservations hash holds for `job`: its token, then the :reserved entry."""
    return f"{job.token}:{job.payload}".encode()


def ids_of(raw_payloads: list[bytes | str]) -> list[str]:
    return [json.loads(raw)["id"] for raw in raw_payloads]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        assert child.wait(timeout=CHILD_TIMEOUT) == 0, f"child {child.args!r} failed"


def test_seed_keys_have_the_seed_types_and_monitoring_commands_tell_the_truth(
    driver: RedisDriver, client: redis.Redis
) -> None:
    pending = [envelope() for _ in range(3)]
    for env in pending:
        driver.push("default", env.to_json())
    driver.later("default", envelope().to_json(), 60)
    driver.later("default", envelope().to_json(), 120)
    assert client.type("routemq:queue:default") == b"list"
    assert client.type("routemq:queue:default:delayed") == b"zset"
    assert client.llen("routemq:queue:default") == 3
    assert client.zcard("routemq:queue:default:delayed") == 2
    assert ids_of(client.lrange("routemq:queue:default", 0, 9)) == [e.id for e in pending]

    job = driver.pop(["default"])
    assert job is not None and job.id == pending[0].id
    assert client.type("routemq:queue:default:reserved") == b"list"
    assert client.llen("routemq:queue:default") == 2
    assert client.lrange("routemq:queue:default:reserved", 0, -1) == [job.payload.encode()]
    assert ids_of(client.lrange("routemq:queue:default", 0, 9)) == [e.id for e in pending[1:]]

    assert driver.fail(job, "RuntimeError: broken")
    assert client.llen("routemq:queue:default:reserved") == 0
    assert client.type("routemq:queue:failed:default") == b"list"
    [raw] = client.lrange("routemq:queue:failed:default", 0, -1)
    record = json.loads(raw)
    assert record["connection"] == "redis" and record["queue"] == "default"
    assert record["payload"] == job.payload and record["exception"] == "RuntimeError: broken"
    assert isinstance(record["failed_at"], float)

    second = driver.pop(["default"])
    assert second is not None and driver.ack(second)
    assert client.llen("routemq:queue:default") == 1
    assert client.llen("routemq:queue:default:reserved") == 0
    assert client.zcard("routemq:queue:default:leases") == 0
    assert client.hlen("routemq:queue:default:reservations") == 0


def test_payload_with_empty_lists_and_huge_numbers_round_trips_byte_for_byte(
    driver: RedisDriver, client: redis.Redis
) -> None:
    job_id = str(uuid.uuid4())
    tail = (
        f'"id":"{job_id}","job":"x","queue":"default","data":{{"a":[],"b":{{}},'
        '"n":123456789012345678901234567890,"f":1.00000000000000000001,'
        '"s":"\\u00e9 \\" ] }"},"max_tries":3,"created_at":1700000000.123456}'
    )
    driver.push("default", '{"attempts":0,' + tail)
    first = driver.pop(["default"])
    assert first is not None and first.payload == '{"attempts":1,' + tail
    assert driver.release(first)
    assert client.lrange("routemq:queue:default", 0, -1) == [('{"attempts":1,' + tail).encode()]
    second = driver.pop(["default"])
    assert second is not None and second.payload == '{"attempts":2,' + tail
    assert driver.release(second, 30)
    assert client.zrange("routemq:queue:default:delayed", 0, -1) == [
        ('{"attempts":2,' + tail).encode()
    ]


def test_attempts_beyond_nine_rewrite_the_whole_number(driver: RedisDriver) -> None:
    env = envelope()
    env.attempts = 9
    driver.push("default", env.to_json())
    job = driver.pop(["default"])
    assert job is not None and job.attempts == 10
    env.attempts = 10
    assert job.payload == env.to_json()


def test_stale_ack_keeps_the_new_owners_reserved_entry(client: redis.Redis) -> None:
    driver = RedisDriver(client, RedisFailedStore(client), retry_after=1)
    driver.push("default", envelope().to_json())
    stale = driver.pop(["default"])
    assert stale is not None
    time.sleep(1.1)
    owner = driver.pop(["default"])
    assert owner is not None and owner.attempts == 2
    assert not driver.ack(stale)
    assert not driver.release(stale)
    assert client.lrange("routemq:queue:default:reserved", 0, -1) == [owner.payload.encode()]
    assert client.hget("routemq:queue:default:reservations", owner.id) == recorded(owner)
    assert client.llen("routemq:queue:default") == 0


def test_expired_migration_lease_puts_a_delayed_job_back_into_delayed(
    client: redis.Redis,
) -> None:
    driver = RedisDriver(client, RedisFailedStore(client), retry_after=1)
    env = envelope()
    driver.later("default", env.to_json(), 60)
    [taken] = driver.take_for_transfer("default", 5)
    assert taken.id == env.id and taken.attempts == 0
    time.sleep(1.1)
    assert driver.pop(["default"]) is None, "a job due in a minute must not run early"
    assert client.zcard("routemq:queue:default:delayed") == 1
    assert client.llen("routemq:queue:default:reserved") == 0


def test_notify_list_stays_bounded_and_goes_when_the_queue_drains(
    driver: RedisDriver, client: redis.Redis
) -> None:
    driver.bulk([("default", envelope().to_json(), 0.0) for _ in range(NOTIFY_CAP + 50)])
    driver.push("default", envelope().to_json())
    assert client.llen("routemq:queue:default:notify") <= NOTIFY_CAP
    while (job := driver.pop(["default"])) is not None:
        driver.ack(job)
    assert not client.exists("routemq:queue:default:notify")


def test_malformed_payload_is_refused_at_push(driver: RedisDriver) -> None:
    with pytest.raises(ValueError, match="not a job envelope"):
        driver.push("default", '{"id":"x","attempts":0}')
    with pytest.raises(ValueError, match="not a job envelope"):
        driver.bulk([("default", "[]", 0.0)])
    assert driver.sizes("default").pending == 0


def test_a_hand_written_payload_is_failed_and_does_not_block_the_queue(
    client: redis.Redis, driver: RedisDriver
) -> None:
    client.rpush("routemq:queue:default", "hello from redis-cli")
    good = envelope()
    driver.push("default", good.to_json())

    odd = driver.pop(["default"])
    assert odd is not None and odd.payload == "hello from redis-cli"
    assert odd.id.startswith("malformed-")
    assert driver.fail(odd, "EnvelopeError: payload is not valid JSON")
    nxt = driver.pop(["default"])
    assert nxt is not None and nxt.id == good.id
    assert driver.ack(nxt)

    raw = client.lindex("routemq:queue:failed:default", 0)
    assert raw is not None
    failed = json.loads(raw)
    assert failed["payload"] == "hello from redis-cli"
    assert "EnvelopeError" in failed["exception"]
    assert driver.sizes("default").reserved == 0


def test_queues_lists_only_queues_that_hold_jobs(driver: RedisDriver) -> None:
    driver.push("emails", envelope("emails").to_json())
    driver.later("reports", envelope("reports").to_json(), 60)
    driver.push("gone", envelope("gone").to_json())
    job = driver.pop(["gone"])
    assert job is not None and driver.ack(job)
    assert driver.queues() == ["emails", "reports"]


@pytest.mark.slow
def test_eight_processes_handle_five_thousand_jobs_exactly_once(
    driver: RedisDriver, tmp_path: Path
) -> None:
    envs = [envelope(n=i) for i in range(5000)]
    driver.bulk([("default", env.to_json(), 0.0) for env in envs])
    outs = [tmp_path / f"worker{i}.txt" for i in range(8)]
    start_at = time.time() + 1.5
    children = [spawn("redis", "work", out, tmp_path, start_at=start_at, idle=0.5) for out in outs]
    wait_children(children)
    handled = read_handled(outs)
    counts = Counter(job_id for job_id, _ in handled)
    assert len(handled) == 5000, f"{len(handled)} handled, duplicates: {counts.most_common(3)}"
    assert set(counts) == {env.id for env in envs}
    assert all(attempts == 1 for _, attempts in handled)
    assert sum(1 for out in outs if out.exists() and out.stat().st_size) > 1
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)


@pytest.mark.slow
def test_processes_migrating_the_same_due_delayed_jobs_never_duplicate_them(
    driver: RedisDriver, client: redis.Redis, tmp_path: Path
) -> None:
    envs = [envelope(n=i) for i in range(1500)]
    driver.bulk([("default", env.to_json(), 0.5) for env in envs])
    assert client.zcard("routemq:queue:default:delayed") == 1500
    outs = [tmp_path / f"migrator{i}.txt" for i in range(4)]
    start_at = time.time() + 1.5  # all due by then: every child starts by migrating
    children = [spawn("redis", "work", out, tmp_path, start_at=start_at, idle=0.5) for out in outs]
    wait_children(children)
    handled = [job_id for job_id, _ in read_handled(outs)]
    assert len(handled) == len(set(handled)) == 1500
    assert set(handled) == {env.id for env in envs}
    assert client.zcard("routemq:queue:default:delayed") == 0
    assert client.llen("routemq:queue:default") == 0


@pytest.mark.slow
def test_job_of_a_worker_killed_mid_job_returns_after_its_lease(
    client: redis.Redis, tmp_path: Path
) -> None:
    driver = RedisDriver(client, RedisFailedStore(client), retry_after=2)
    envs = [envelope(n=i) for i in range(20)]
    for env in envs:
        driver.push("default", env.to_json())
    out = tmp_path / "holder.txt"
    child = spawn("redis", "hold", out, tmp_path, retry_after=2)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not read_handled([out]) and time.monotonic() < deadline:
        time.sleep(0.02)
    [(held_id, held_attempts)] = read_handled([out])
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=CHILD_TIMEOUT)
    assert held_id == envs[0].id and held_attempts == 1
    assert client.llen("routemq:queue:default:reserved") == 1

    seen: dict[str, int] = {}
    while len(seen) < len(envs):
        job = driver.pop(["default"], block=5)
        assert job is not None, f"lost jobs: {sorted({e.id for e in envs} - set(seen))}"
        assert job.id not in seen
        seen[job.id] = job.attempts
        assert driver.ack(job)
    assert seen[held_id] == 2, "the killed worker's attempt stays counted"
    assert client.llen("routemq:queue:default:reserved") == 0


def test_unreachable_redis_raises_a_queue_error_naming_host_and_port_quickly() -> None:
    port = free_port()
    settings = Settings(enable_redis=True, redis_port=port, redis_password="s3cret-pw")
    client = build_redis(settings)
    driver = RedisDriver(client, RedisFailedStore(client))
    start = time.monotonic()
    with pytest.raises(QueueError) as caught:
        driver.push("default", envelope().to_json())
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert f"Redis at localhost:{port} is unreachable" in message
    assert "s3cret-pw" not in message
    with pytest.raises(QueueError, match=f"localhost:{port}"):
        driver.pop(["default"], block=1)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH (needed for the restart test)")
    yield free_port(), tmp_path


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port, timeout=0.1):
        assert server.poll() is None, "private redis-server exited at start"
        assert time.monotonic() < deadline, "private redis-server did not start"
        time.sleep(0.02)
    return server


def test_same_driver_works_again_after_a_redis_restart(private_redis: tuple[int, Path]) -> None:
    port, folder = private_redis
    server = start_redis(port, folder)
    try:
        client = build_redis(Settings(enable_redis=True, redis_host="127.0.0.1", redis_port=port))
        driver = RedisDriver(client, RedisFailedStore(client))
        before = envelope()
        driver.push("default", before.to_json())
        server.kill()
        server.wait()
        with pytest.raises(QueueError, match=f"127.0.0.1:{port} is unreachable"):
            driver.sizes("default")
        server = start_redis(port, folder)
        after = envelope()
        driver.push("default", after.to_json())  # scripts reload themselves (NOSCRIPT)
        popped = [driver.pop(["default"]), driver.pop(["default"])]
        assert [job.id for job in popped if job] == [before.id, after.id]
        assert all(job is not None and driver.ack(job) for job in popped)
    finally:
        server.kill()
        server.wait()


def test_get_redis_is_process_wide_until_reset() -> None:
    settings = Settings(enable_redis=True, redis_host="127.0.0.1", redis_db=REDIS_TEST_DB)
    redis_client.reset()
    try:
        first = get_redis(settings)
        assert get_redis(settings) is first
        redis_client.reset()
        assert get_redis(settings) is not first
    finally:
        redis_client.reset()


def test_release_with_undo_attempt_rewrites_only_the_count_and_never_below_zero(
    driver: RedisDriver, client: redis.Redis
) -> None:
    env = envelope(items=[], big=123456789012345678901234567890)
    env.attempts = 10
    driver.push("default", env.to_json())
    job = driver.pop(["default"])
    assert job is not None and job.attempts == 11
    assert driver.release(job, 30, undo_attempt=True)
    assert client.zrange("routemq:queue:default:delayed", 0, -1) == [env.to_json().encode()]

    client.delete("routemq:queue:default:delayed")
    zero = envelope()
    driver.push("default", zero.to_json())
    job = driver.pop(["default"])
    assert job is not None
    # A reservation whose payload says 0 (hand-edited): the undo stops at 0.
    assert driver.release(job, 0, undo_attempt=True)
    again = driver.pop(["default"])
    assert again is not None and again.attempts == 1
    assert driver.release(again, 0, undo_attempt=True)
    assert driver.release(driver.pop(["default"]), 0, undo_attempt=True)  # type: ignore[arg-type]
    assert client.lrange("routemq:queue:default", 0, -1) == [zero.to_json().encode()]


def test_transfer_reservation_has_its_own_token_and_the_reserved_list_keeps_the_payload(
    client: redis.Redis,
) -> None:
    driver = RedisDriver(client, RedisFailedStore(client), retry_after=1)
    env = envelope()
    driver.push("default", env.to_json())
    dead = driver.take_for_transfer("default", 10)[0]  # a migration that stalls
    assert dead.token.startswith("transfer:") and dead.payload not in dead.token
    assert client.lrange("routemq:queue:default:reserved", 0, -1) == [dead.payload.encode()]
    assert client.hget("routemq:queue:default:reservations", env.id) == recorded(dead)
    time.sleep(1.2)
    [taken] = driver.take_for_transfer("default", 10)
    assert taken.token != dead.token, "a retaking migration must fence out the stalled one"
    assert not driver.ack(dead) and not driver.extend(dead)
    assert client.lrange("routemq:queue:default:reserved", 0, -1) == [taken.payload.encode()]
    time.sleep(1.2)
    assert client.llen("routemq:queue:default") == 0
    job = driver.pop(["default"])  # the expired transfer lease requeues the bare payload
    assert job is not None and job.id == env.id and job.attempts == 1
    assert not driver.ack(taken)
    assert driver.ack(job)
    assert client.llen("routemq:queue:default:reserved") == 0
    assert client.hlen("routemq:queue:default:transfer") == 0


def test_failing_a_transfer_reservation_removes_its_reserved_entry(
    driver: RedisDriver, client: redis.Redis
) -> None:
    env = envelope()
    driver.later("default", env.to_json(), 60)
    [taken] = driver.take_for_transfer("default", 10)
    assert client.hexists("routemq:queue:default:transfer", env.id)
    assert driver.fail(taken, "RuntimeError: moved badly")
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (0, 0, 0, 1)
    assert client.hlen("routemq:queue:default:transfer") == 0


def test_a_retried_pop_call_returns_its_first_reservation_instead_of_a_second_job(
    driver: RedisDriver, client: redis.Redis
) -> None:
    first_env, second_env = envelope(), envelope()
    driver.push("default", first_env.to_json())
    driver.push("default", second_env.to_json())
    nonce = uuid.uuid4().hex
    first, _ = driver.reserve_once(["default"], nonce)
    resent, _ = driver.reserve_once(["default"], nonce)  # the reply was lost; redis-py re-sends
    assert first is not None and resent == first
    assert first.id == first_env.id and first.attempts == 1
    assert client.llen("routemq:queue:default:reserved") == 1
    assert client.llen("routemq:queue:default") == 1
    ttl = client.ttl(driver.receipt_key(nonce))
    assert 0 < ttl <= POP_RECEIPT_TTL

    assert driver.ack(first)
    after_ack, _ = driver.reserve_once(["default"], nonce)
    assert after_ack is not None and after_ack.id == second_env.id, (
        "a receipt whose reservation is settled must not stop the next pop"
    )
    other, _ = driver.reserve_once(["default"], uuid.uuid4().hex)
    assert other is None


def test_a_receipt_never_hands_out_a_later_reservation_of_the_same_job(
    client: redis.Redis,
) -> None:
    driver = RedisDriver(client, RedisFailedStore(client), retry_after=1)
    driver.push("default", envelope().to_json())
    nonce = uuid.uuid4().hex
    mine, _ = driver.reserve_once(["default"], nonce)
    assert mine is not None
    time.sleep(1.2)
    owner = driver.pop(["default"])  # the lease expired: another worker owns the job now
    assert owner is not None and owner.attempts == 2
    resent, _ = driver.reserve_once(["default"], nonce)
    assert resent is None
    assert client.llen("routemq:queue:default:reserved") == 1


def test_blpop_timeout_rounds_up_to_whole_seconds_before_redis_6() -> None:
    assert blpop_timeout(0.25, (5, 0, 14)) == 1
    assert blpop_timeout(1.2, (5, 0, 14)) == 2
    assert blpop_timeout(2.0, (5,)) == 2
    assert blpop_timeout(0.0, (0,)) == 1
    assert isinstance(blpop_timeout(0.25, (5, 0, 14)), int)
    assert blpop_timeout(0.25, (6, 0, 0)) == 0.25
    assert blpop_timeout(0.0, (7, 2)) > 0
    assert parse_version("7.2.4") == (7, 2, 4)
    assert parse_version("5.0.14-rc1") == (5, 0, 14)


def test_driver_reads_the_server_version_once(driver: RedisDriver) -> None:
    version = driver.server_version()
    assert version >= (6,), f"the test server is expected to be Redis 6+, got {version}"
    assert driver.server_version() is version
    assert driver.pop(["default"], block=0.3) is None


@pytest.mark.parametrize(
    "name", ["failed:emails", "x:delayed", "failed", "with space", "", "q" * 201, "ü"]
)
def test_new_jobs_are_refused_for_queue_names_that_could_collide_with_other_keys(
    driver: RedisDriver, client: redis.Redis, name: str
) -> None:
    payload = envelope().to_json()
    calls = [
        lambda: driver.push(name, payload),
        lambda: driver.later(name, payload, 5),
        lambda: driver.bulk([("default", payload, 0.0), (name, payload, 0.0)]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="queue name"):
            call()
    assert client.dbsize() == 0
    assert validate_queue_name("emails.high-priority_2") == "emails.high-priority_2"


@pytest.mark.parametrize("name", ["failed:emails", "emails:delayed", "failed"])
def test_clear_refuses_a_name_whose_keys_are_another_queues(
    driver: RedisDriver, client: redis.Redis, name: str
) -> None:
    driver.push("emails", envelope().to_json())
    job = driver.pop(["emails"])
    assert job is not None and driver.fail(job, "boom")
    driver.later("emails", envelope().to_json(), 60)
    with pytest.raises(ValueError, match="queue name"):
        driver.clear(name)
    sizes = driver.sizes("emails")
    assert (sizes.delayed, sizes.failed) == (1, 1)


def test_a_queue_created_before_name_validation_can_be_read_popped_drained_and_failed(
    driver: RedisDriver, client: redis.Redis
) -> None:
    legacy = "reports/daily"
    first, second = envelope(queue=legacy), envelope(queue=legacy)
    client.rpush(f"routemq:queue:{legacy}", first.to_json(), second.to_json())
    client.sadd("routemq:queues", legacy)
    sizes = driver.sizes(legacy)
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (2, 0, 0, 0)
    assert legacy in driver.queues()

    job = driver.pop([legacy])
    assert job is not None and job.id == first.id
    assert driver.contains(legacy, first.id)  # hand-written entries are indexed once reserved
    assert driver.fail(job, "RuntimeError: broken")
    [record] = driver.failed_store.all(legacy)
    assert record.queue == legacy and json.loads(record.payload)["id"] == first.id

    [taken] = driver.take_for_transfer(legacy, 10)  # a migration drains it
    assert taken.id == second.id and driver.ack(taken)
    sizes = driver.sizes(legacy)
    assert (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed) == (0, 0, 0, 1)
    with pytest.raises(ValueError, match="queue name"):
        driver.push(legacy, envelope().to_json())  # but it gets no new jobs


def test_a_legacy_queue_job_fails_into_a_redis_store_on_another_client(
    driver: RedisDriver, client: redis.Redis
) -> None:
    other = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    try:
        two_step = RedisDriver(client, RedisFailedStore(other), retry_after=90)
        client.rpush("routemq:queue:reports/daily", envelope().to_json())
        job = two_step.pop(["reports/daily"])
        assert job is not None and two_step.fail(job, "boom")
        assert two_step.sizes("reports/daily").failed == 1
        assert two_step.sizes("reports/daily").reserved == 0
    finally:
        other.close()


def test_malformed_entries_do_not_stop_a_migration_and_go_to_the_failed_store(
    driver: RedisDriver, client: redis.Redis
) -> None:
    good = [envelope() for _ in range(3)]
    client.rpush("routemq:queue:default", good[0].to_json(), "hello from redis-cli")
    client.rpush("routemq:queue:default", good[1].to_json())
    client.zadd("routemq:queue:default:delayed", {"[1, 2]": time.time() + 60})
    driver.later("default", good[2].to_json(), 120)
    taken = driver.take_for_transfer("default", 10)
    assert [job.id for job in taken] == [env.id for env in good]
    assert all(driver.ack(job) for job in taken)
    failed = driver.failed_store.all("default")
    assert sorted(job.payload for job in failed) == ["[1, 2]", "hello from redis-cli"]
    assert all("EnvelopeError" in job.exception for job in failed)
    sizes = driver.sizes("default")
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)


def test_a_duplicate_job_id_is_never_reserved_twice_by_a_transfer(
    driver: RedisDriver, client: redis.Redis
) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    client.rpush("routemq:queue:default", env.to_json())  # a second copy, written by hand
    first = driver.take_for_transfer("default", 10)
    assert [job.id for job in first] == [env.id]
    assert client.lrange("routemq:queue:default", 0, -1) == [env.to_json().encode()]
    assert driver.ack(first[0])
    second = driver.take_for_transfer("default", 10)
    assert [job.id for job in second] == [env.id]
    assert driver.ack(second[0])
    assert client.llen("routemq:queue:default:reserved") == 0


def test_a_transfer_skips_entries_whose_job_is_reserved_and_takes_the_rest(
    driver: RedisDriver, client: redis.Redis
) -> None:
    dup = envelope()
    rest = [envelope() for _ in range(5)]
    client.rpush(
        "routemq:queue:default", dup.to_json(), dup.to_json(), *(e.to_json() for e in rest)
    )
    later_copy = envelope()
    later_copy.id, later_copy.attempts = dup.id, 5  # same id, other bytes
    driver.later("default", later_copy.to_json(), 60)
    delayed = envelope()
    driver.later("default", delayed.to_json(), 120)
    worker = driver.pop(["default"])  # reserves the first copy of dup
    assert worker is not None and worker.id == dup.id

    taken = driver.take_for_transfer("default", 10)
    assert [job.id for job in taken] == [e.id for e in rest] + [delayed.id]
    assert [job.payload for job in taken[:5]] == [e.to_json() for e in rest]
    assert client.lrange("routemq:queue:default", 0, -1) == [dup.to_json().encode()]
    assert client.zrange("routemq:queue:default:delayed", 0, -1) == [later_copy.to_json().encode()]
    assert all(driver.ack(job) for job in taken)
    assert driver.ack(worker)
    assert client.llen("routemq:queue:default:reserved") == 0


def test_a_release_that_undid_its_attempt_cannot_settle_the_next_reservation(
    driver: RedisDriver, client: redis.Redis
) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    stale = driver.pop(["default"])
    assert stale is not None and driver.release(stale, undo_attempt=True)
    owner = driver.pop(["default"])
    assert owner is not None and owner.id == env.id
    assert owner.payload == stale.payload, "same attempts: the payload is byte-identical"
    assert owner.token != stale.token and owner.payload not in owner.token
    # A stale holder's calls (e.g. redis-py re-sending a release) are fenced out.
    assert not driver.release(stale, undo_attempt=True)
    assert not driver.ack(stale) and not driver.extend(stale)
    assert not driver.fail(stale, "boom")
    assert client.hget("routemq:queue:default:reservations", env.id) == recorded(owner)
    assert client.lrange("routemq:queue:default:reserved", 0, -1) == [owner.payload.encode()]
    assert client.llen("routemq:queue:default") == 0
    assert driver.ack(owner)
    assert driver.sizes("default").failed == 0


def test_a_resent_settle_reports_its_first_success_and_changes_nothing(
    driver: RedisDriver, client: redis.Redis
) -> None:
    for queue in ("acks", "releases", "extends", "fails"):
        driver.push(queue, envelope(queue=queue).to_json())

    acked = driver.pop(["acks"])
    receipt = uuid.uuid4().hex
    assert acked is not None and driver.ack(acked, receipt=receipt)
    assert driver.ack(acked, receipt=receipt)  # re-sent after a lost reply
    assert 0 < client.ttl(driver.settle_key(receipt)) <= SETTLE_RECEIPT_TTL
    assert not driver.ack(acked), "a new call is fenced as before"

    released = driver.pop(["releases"])
    receipt = uuid.uuid4().hex
    assert released is not None
    assert driver.release(released, undo_attempt=True, receipt=receipt)
    owner = driver.pop(["releases"])  # another worker takes the job meanwhile
    assert owner is not None and owner.payload == released.payload
    assert driver.release(released, undo_attempt=True, receipt=receipt)
    assert client.llen("routemq:queue:releases") == 0, "the job was not given back twice"
    assert client.hget("routemq:queue:releases:reservations", owner.id) == recorded(owner)
    assert client.lrange("routemq:queue:releases:reserved", 0, -1) == [owner.payload.encode()]
    assert driver.ack(owner)

    extended = driver.pop(["extends"])
    receipt = uuid.uuid4().hex
    assert extended is not None and driver.extend(extended, receipt=receipt)
    lease = client.zscore("routemq:queue:extends:leases", extended.id)
    assert driver.extend(extended, receipt=receipt)
    assert client.zscore("routemq:queue:extends:leases", extended.id) == lease

    failed = driver.pop(["fails"])
    receipt = uuid.uuid4().hex
    assert failed is not None and driver.fail(failed, "boom", receipt=receipt)
    assert driver.fail(failed, "boom", receipt=receipt)
    assert len(driver.failed_store.all("fails")) == 1


def test_a_resent_removal_step_of_a_two_step_fail_keeps_the_failed_record(
    client: redis.Redis,
) -> None:
    other = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    try:
        driver = RedisDriver(client, RedisFailedStore(other), retry_after=90)
        driver.push("default", envelope().to_json())
        job = driver.pop(["default"])
        assert job is not None
        receipt = uuid.uuid4().hex
        # fail() adds the record, then runs ack.lua with its receipt. Here that
        # first run succeeds but its reply is lost, so the client re-sends it:
        assert driver.ack(job, receipt=receipt)
        assert driver.fail(job, "boom", receipt=receipt)
        [record] = driver.failed_store.all("default")
        assert record.payload == job.payload, "the job is in the failed store, not lost"
        assert driver.sizes("default").reserved == 0
        assert not driver.fail(job, "boom")  # without the receipt: fenced, record forgotten
        assert len(driver.failed_store.all("default")) == 1
    finally:
        other.close()


def test_python_and_lua_agree_that_non_ascii_digits_are_not_an_attempts_count(
    driver: RedisDriver, client: redis.Redis
) -> None:
    odd = '{"attempts":\u0661,"id":"abc","job":"tests.noop","data":{}}'  # ARABIC-INDIC ONE
    with pytest.raises(ValueError, match="not a job envelope"):
        driver.push("default", odd)
    client.rpush("routemq:queue:default", odd.encode())
    job = driver.pop(["default"])
    assert job is not None and job.id.startswith("malformed-"), "the id the script fenced"
    assert driver.fail(job, "EnvelopeError: bad attempts")
    assert driver.sizes("default").reserved == 0


def test_included_lua_functions_are_inlined_once_per_script() -> None:
    source = script_source(SCRIPTS_DIR / "take_for_transfer.lua")
    assert source.count("local function token_payload") == 1
    assert source.count("local function requeue_due") == 1
    assert "-- @include" not in source.replace("(`-- @include requeue_due.lua`)", "")


def test_a_reservation_token_is_a_nonce_and_settles_never_need_the_payload(
    driver: RedisDriver, client: redis.Redis
) -> None:
    driver.push("default", envelope(blob="x" * 10_000).to_json())
    job = driver.pop(["default"])
    assert job is not None and re.fullmatch(r"[0-9a-f]{32}", job.token)
    bare = dataclasses.replace(job, payload="")  # id and token are all a settle sends
    assert driver.extend(bare)
    assert driver.release(bare, 0)
    again = driver.pop(["default"])
    assert again is not None and again.token != job.token
    assert driver.ack(dataclasses.replace(again, payload=""))
    assert client.llen("routemq:queue:default:reserved") == 0
    driver.later("default", envelope().to_json(), 60)
    [taken] = driver.take_for_transfer("default", 10)
    assert re.fullmatch(r"transfer:[0-9a-f]{32}", taken.token)
    assert driver.fail(dataclasses.replace(taken, payload=taken.payload), "boom")


def test_a_push_resent_after_a_lost_reply_adds_the_job_once(
    driver: RedisDriver, client: redis.Redis
) -> None:
    env = envelope()
    driver.push("default", env.to_json())
    driver.push("default", env.to_json())
    driver.later("default", env.to_json(), 30)
    driver.bulk([("default", env.to_json(), 0.0)])
    assert client.llen("routemq:queue:default") == 1
    assert client.zcard("routemq:queue:default:delayed") == 0
    job = driver.pop(["default"])
    assert job is not None and driver.contains("default", env.id)
    assert driver.ack(job)
    assert not driver.contains("default", env.id)
    driver.push("default", env.to_json())  # gone: the same id may come again
    assert client.llen("routemq:queue:default") == 1
