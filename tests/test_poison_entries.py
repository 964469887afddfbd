"""No entry a queue can hold stops the queue or a worker, on every driver.

Each poison entry is written by hand (raw RPUSH / raw INSERT, as an operator or
an attacker with write access would) and through `push`; valid jobs are queued
between them. One worker must run every valid job, in order, and move every
poison entry to the failed store with a one-line reason naming what is wrong.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backends.redis_client import build_redis
from config.settings import Settings
from queues import dispatch
from queues.drivers.base import QueueDriver
from queues.drivers.redis import RedisDriver, RedisFailedStore, hash_tag
from queues.envelope import MAX_JSON_DEPTH, MAX_PAYLOAD_BYTES, Envelope
from queues.worker import Worker
from tests.conftest import REDIS_HOST, REDIS_TEST_DB
from tests.driver_factories import driver_for, make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main
from tests.test_worker import assert_empty

#: Levels of the deep JSON of the issue's reproduction (past Python's recursion limit).
DEEP = 100_000


@pytest.fixture
def driver(any_driver: QueueDriver) -> QueueDriver:
    return any_driver


@pytest.fixture
def queue() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def raw_add(driver: QueueDriver, queue: str, payload: str | bytes) -> None:
    """Write an entry the way redis-cli or a SQL client would: no driver code involved."""
    if driver.name == "redis":
        client: Any = driver.client  # type: ignore[attr-defined]
        # The operator's form of the key: `routemq:queue:{emails}` on a Redis Cluster.
        client.rpush(f"routemq:queue:{hash_tag(queue, driver.cluster)}", payload)  # type: ignore[attr-defined]
        client.sadd("routemq:queues", queue)
        return
    engine: Any = driver.engine  # type: ignore[attr-defined]
    now = {
        "mysql": "NOW(6)",
        "mariadb": "NOW(6)",
        "postgresql": "(now() AT TIME ZONE 'UTC')",
    }.get(engine.dialect.name, "strftime('%Y-%m-%d %H:%M:%f', 'now')")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
                f"VALUES (:queue, :payload, 0, {now}, {now})"
            ),
            {"queue": queue, "payload": payload},
        )


def envelope_text(queue: str, **fields: Any) -> str:
    """A stored envelope with some fields overridden (and a new id each call)."""
    base: dict[str, Any] = {
        "attempts": 0,
        "id": str(uuid.uuid4()),
        "job": "RecordJob",
        "queue": queue,
        "data": {"path": "/dev/null", "value": 0},
        "max_tries": 1,
        "timeout": None,
        "backoff": 0,
        "retry_until": None,
        "created_at": time.time(),
    }
    base.update(fields)
    return json.dumps(base, separators=(",", ":"))


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


#: name -> (builder of one entry for a queue, the reason its failed record must give)
POISON: dict[str, tuple[Callable[[str], str], str]] = {
    "garbage": (lambda q: "hello from redis-cli", "is not valid JSON"),
    "deep json": (lambda q: nested(DEEP), f"nests deeper than {MAX_JSON_DEPTH} levels"),
    "deep data": (
        lambda q: envelope_text(q, data="D").replace('"D"', '{"x":' + nested(DEEP) + "}"),
        f"nests deeper than {MAX_JSON_DEPTH} levels",
    ),
    "moderately deep data": (
        lambda q: envelope_text(q, data="D").replace('"D"', '{"x":' + nested(500) + "}"),
        f"nests deeper than {MAX_JSON_DEPTH} levels",
    ),
    "huge": (
        lambda q: envelope_text(q, data={"blob": "x" * MAX_PAYLOAD_BYTES}),
        f"the limit is {MAX_PAYLOAD_BYTES}",
    ),
    "timeout text": (lambda q: envelope_text(q, timeout="abc"), "field 'timeout' is not"),
    "timeout infinite": (
        lambda q: envelope_text(q, timeout="T").replace('"T"', "1e999"),
        "field 'timeout' is not",
    ),
    "retry_until text": (
        lambda q: envelope_text(q, retry_until="soon"),
        "field 'retry_until' is not",
    ),
    "backoff null": (lambda q: envelope_text(q, backoff=None), "field 'backoff' is not"),
    "max_tries text": (lambda q: envelope_text(q, max_tries="x"), "field 'max_tries' is not"),
    "attempts text": (lambda q: envelope_text(q, attempts="x"), "field 'attempts' is not"),
    "data list": (lambda q: envelope_text(q, data=[1]), "field 'data' is not an object"),
    "id number": (lambda q: envelope_text(q, id=5), "field 'id' is not"),
    "unknown job": (lambda q: envelope_text(q, job="NoSuchJob"), "UnknownJob: unknown job"),
}


def add_poison(driver: QueueDriver, queue: str, name: str) -> int:
    """Add one poison entry by hand and one through `push`; return how many were queued.

    The Redis driver refuses at `push` what has no envelope prefix: refused at
    the door is as good as failed later, but it must be a ValueError naming why.
    """
    build, _ = POISON[name]
    raw_add(driver, queue, build(queue))
    try:
        driver.push(queue, build(queue))
    except ValueError as exc:
        assert driver.name == "redis" and "not a job envelope" in str(exc), exc
        return 1
    return 2


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_worker(driver: QueueDriver, queue: str, jobs_to_handle: int) -> None:
    worker = Worker(
        driver,
        [queue],
        sleep=0.05,
        max_jobs=jobs_to_handle,
        max_time=60,
        handle_signals=False,
        registry=registry(),
    )
    assert worker.run() == 0


def test_every_poison_entry_is_failed_with_its_reason_and_the_valid_jobs_behind_it_run(
    driver: QueueDriver, queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "valid"
    queued = 0
    expected: dict[str, int] = {}
    for value, name in enumerate(POISON):
        dispatch(
            jobs.RecordJob(path=str(out), value=value),
            connection=driver,
            queue=queue,
            registry=registry(),
        )
        copies = add_poison(driver, queue, name)
        expected[name] = copies
        queued += 1 + copies
    dispatch(jobs.RecordJob(path=str(out), value="last"), connection=driver, queue=queue,
             registry=registry())  # fmt: skip
    queued += 1

    sizes = driver.sizes(queue)  # the worker's start-up check reads the head: it survives
    assert sizes.pending == queued

    run_worker(driver, queue, queued)

    assert lines(out) == [str(value) for value in range(len(POISON))] + ["last"]
    failed = driver.failed_store.all(queue, limit=1000)
    assert len(failed) == sum(expected.values())
    for name, copies in expected.items():
        reason = POISON[name][1]
        matching = [f for f in failed if reason in f.exception.splitlines()[0]]
        assert len(matching) >= copies, f"{name}: no failed record says {reason!r}"
    assert_empty(driver, queue)


def test_a_copy_of_a_running_job_never_takes_its_reservation_and_on_redis_is_failed(
    driver: QueueDriver, queue: str, tmp_path: Path
) -> None:
    """Redis fails the copy as a duplicate; SQL runs it as the separate row it is.

    Either way the running copy's reservation is untouched and nothing is left
    reserved (the old pop.lua reserved the copy under the running job's id: the
    running worker's ack was refused and a phantom :reserved entry stayed).
    """
    out = tmp_path / "valid"
    original = Envelope(job="RecordJob", data={"path": str(out), "value": "copy"}, queue=queue)
    driver.push(queue, original.to_json())
    running = driver.pop([queue])
    assert running is not None and running.id == original.id

    raw_add(driver, queue, original.to_json())  # a copy written by hand
    driver.push(queue, original.to_json())  # a push re-sent after a lost reply
    copies = driver.sizes(queue).pending
    assert copies == (1 if driver.name == "redis" else 2)  # Redis: already queued, not added
    dispatch(jobs.RecordJob(path=str(out), value=1), connection=driver, queue=queue,
             registry=registry())  # fmt: skip

    run_worker(driver, queue, copies + 1)

    failed = driver.failed_store.all(queue)
    if driver.name == "redis":
        assert lines(out) == ["1"], "a copy of a running job must never run beside it"
        [duplicate] = failed
        assert duplicate.exception.startswith(f"DuplicateJob: job RecordJob ({original.id})")
    else:
        assert lines(out) == ["copy", "copy", "1"] and failed == []
    assert driver.ack(running), "the running copy's reservation is untouched"
    assert_empty(driver, queue)


def test_failed_hook_hears_the_real_reason_of_a_refused_envelope(
    driver: QueueDriver, queue: str, tmp_path: Path
) -> None:
    out = tmp_path / "hooked"
    payload = envelope_text(
        queue, job="FailingJob", data={"path": str(out), "value": 1}, timeout="abc"
    )
    driver.push(queue, payload)
    run_worker(driver, queue, 1)
    assert lines(out) == [], "the job never ran"
    [hook_line] = lines(Path(f"{out}.failed"))
    assert hook_line.startswith("EnvelopeError: payload field 'timeout' is not")


@pytest.mark.parametrize("connection", ["redis", "database"])
def test_workers_and_status_survive_a_deep_entry_at_the_head(
    connection: str, queue: str, tmp_path: Path
) -> None:
    """The issue's reproduction: deep JSON at the head, then three jobs, one worker process."""
    driver = driver_for(connection, tmp_path)
    env = main_env(connection, tmp_path)
    out = tmp_path / "after"
    try:
        raw_add(driver, queue, nested(DEEP))
        for value in range(3):
            dispatch(jobs.RecordJob(path=str(out), value=value), connection=driver,
                     queue=queue, registry=registry())  # fmt: skip
        status = run_main(["--queue-status", "--json"], env)
        assert status.returncode == 0, status.stderr
        rows = {
            row["queue"]: row
            for entry in json.loads(status.stdout)["connections"]
            for row in entry["queues"]
        }
        assert rows[queue]["pending"] == 4
        worker = run_main(
            ["--queue-work", "--queue", queue, "--sleep", "0.1", "--max-jobs", "4"], env
        )
        assert worker.returncode == 0, worker.stderr
        assert lines(out) == ["0", "1", "2"]
        [failed] = driver.failed_store.all(queue)
        assert "nests deeper than" in failed.exception.splitlines()[0]
    finally:
        driver.close()


def test_bytes_that_are_not_utf8_are_failed_not_fatal(tmp_path: Path, queue: str) -> None:
    make_driver("redis", tmp_path).close()  # an empty test database
    settings = Settings(enable_redis=True, redis_host=REDIS_HOST, redis_db=REDIS_TEST_DB)
    client = build_redis(settings)  # the application's client, decoding replies as text
    driver = RedisDriver(client, RedisFailedStore(client))
    out = tmp_path / "valid"
    try:
        raw_add(driver, queue, b'{"attempts":0,"id":"\xff\xfe","job":"RecordJob"}')
        raw_add(driver, queue, b"\xc3\x28 not utf-8")
        dispatch(jobs.RecordJob(path=str(out), value=1), connection=driver, queue=queue,
                 registry=registry())  # fmt: skip
        run_worker(driver, queue, 3)
        assert lines(out) == ["1"]
        failed = driver.failed_store.all(queue)
        assert len(failed) == 2 and all("EnvelopeError" in f.exception for f in failed)
        assert driver.sizes(queue).reserved == 0
    finally:
        driver.close()
