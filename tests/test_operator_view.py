"""The operator's view tells the whole truth: every failed store, once, found by job id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backends.sql_engine import engine_from_url
from queues.drivers.base import QueueDriver
from queues.drivers.database import DatabaseFailedStore
from queues.drivers.redis import RedisFailedStore
from queues.envelope import Envelope
from tests.conftest import MARIADB_URL, need_service, private_database_name
from tests.driver_factories import driver_for, make_driver
from tests.jobs_fixture.support import main_env, run_main
from tests.test_operator_cli import add_failed, one_error_line

CONNECTIONS = ("redis", "database")


@pytest.fixture
def queue() -> str:
    return f"v-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=CONNECTIONS)
def connected(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, QueueDriver, dict[str, str]]]:
    """(connection, its driver, the env of main.py children sharing its state)."""
    connection = str(request.param)
    driver = driver_for(connection, tmp_path)
    yield connection, driver, main_env(connection, tmp_path)
    driver.close()


def status(env: dict[str, str]) -> dict[str, Any]:
    result = run_main(["--queue-status", "--json"], env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def both_stores(tmp_path: Path) -> tuple[RedisFailedStore, DatabaseFailedStore, dict[str, str]]:
    """Redis enabled AND a database (DB_URL): the SQL table is the configured store."""
    redis_driver = make_driver("redis", tmp_path)
    sqlite_driver = make_driver("sqlite", tmp_path)
    env = main_env("redis", tmp_path, DB_URL=f"sqlite:///{tmp_path / 'queue.db'}")
    return redis_driver.failed_store, sqlite_driver.failed_store, env  # type: ignore[return-value]


def test_status_shows_a_queue_whose_only_jobs_are_failed(
    connected: tuple[str, QueueDriver, dict[str, str]], queue: str
) -> None:
    connection, driver, env = connected
    for value in range(3):
        add_failed(driver, queue, value)
    report = status(env)
    rows = {row["queue"]: row for e in report["connections"] if e["enabled"] for row in e["queues"]}
    assert (rows[queue]["pending"], rows[queue]["reserved"]) == (0, 0)
    assert [(f["queue"], f["failed"]) for f in report["failed"]] == [(queue, 3)]
    table = run_main(["--queue-status"], env)
    assert f"{connection}" in table.stdout and queue in table.stdout
    assert "FAILED" in table.stdout and driver.failed_store.where(queue) in table.stdout


def test_each_failed_store_is_counted_once_with_where_it_lives(queue: str, tmp_path: Path) -> None:
    redis_store, sql_store, env = both_stores(tmp_path)
    payload = Envelope(job="RecordJob", data={}, queue=queue).to_json()
    redis_store.add("redis", queue, payload, "RuntimeError: left in Redis")  # before the DB
    sql_store.add("redis", queue, payload, "RuntimeError: since the DB")
    report = status(env)
    assert sorted((f["store"], f["queue"], f["failed"], f["where"]) for f in report["failed"]) == [
        ("database", queue, 1, sql_store.where(queue)),
        ("redis", queue, 1, f"Redis list routemq:queue:failed:{queue}"),
    ]
    assert all("failed" not in row for e in report["connections"] for row in e["queues"])


def test_failed_job_commands_accept_the_job_id_that_dispatch_printed(
    connected: tuple[str, QueueDriver, dict[str, str]], queue: str
) -> None:
    _, driver, env = connected
    job_id = add_failed(driver, queue, 1)
    shown = run_main(["--queue-failed-show", job_id], env)
    assert shown.returncode == 0, shown.stderr
    assert f"job_id:     {job_id}" in shown.stdout and "ValueError: boom 1" in shown.stdout

    retried = run_main(["--queue-retry", job_id], env)
    assert retried.returncode == 0, retried.stderr
    back = driver.pop([queue])
    assert back is not None and back.id == job_id
    assert driver.fail(back, "ValueError: boom again")  # it fails again: a new record
    again = run_main(["--queue-failed-show", job_id, "--json"], env)
    assert json.loads(again.stdout)["exception"] == "ValueError: boom again"

    listed = json.loads(run_main(["--queue-failed", "--json"], env).stdout)
    assert [entry["job_id"] for entry in listed] == [job_id]
    forgot = run_main(["--queue-forget", job_id], env)
    assert forgot.returncode == 0, forgot.stderr
    assert "no failed job with id" in one_error_line(run_main(["--queue-forget", job_id], env))
    assert driver.failed_store.all(queue) == []


def test_commands_read_redis_failed_lists_after_a_database_was_enabled_and_migrate_moves_them(
    queue: str, tmp_path: Path
) -> None:
    redis_store, sql_store, env = both_stores(tmp_path)
    payload = Envelope(job="RecordJob", data={"path": "/dev/null", "value": 1}, queue=queue)
    stranded = redis_store.add("redis", queue, payload.to_json(), "RuntimeError: stranded")
    [before] = redis_store.all(queue)

    listed = json.loads(run_main(["--queue-failed", "--json"], env).stdout)
    assert [(e["id"], e["store"]) for e in listed] == [(stranded, "redis")]
    shown = run_main(["--queue-failed-show", payload.id], env)
    assert "RuntimeError: stranded" in shown.stdout

    moved = run_main(["--queue-migrate", "--from", "redis", "--to", "database"], env)
    assert moved.returncode == 0, moved.stderr
    assert f"{queue}: moved 1 failed job(s)" in moved.stdout
    assert redis_store.all(queue) == []
    [after] = sql_store.all(queue)
    assert (after.payload, after.exception, after.connection) == (
        before.payload,
        "RuntimeError: stranded",
        "redis",
    )
    moved_at, failed_at = (
        stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
        for stamp in (after.failed_at, before.failed_at)
    )
    assert abs((moved_at - failed_at).total_seconds()) < 0.01, "its failed time is kept"


def test_a_missing_table_says_to_run_migrate(tmp_path: Path) -> None:
    need_service("MariaDB", "127.0.0.1", 3306)
    name = private_database_name("t_no_tables")
    server = engine_from_url(MARIADB_URL)
    with server.begin() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    server.dispose()
    url = MARIADB_URL.rsplit("/", 1)[0] + "/" + name
    env = main_env("database", tmp_path, DB_URL=url)
    for command in (["--queue-status", "--connection", "database"], ["--queue-failed"]):
        result = run_main(command, env)
        line = one_error_line(result)
        assert result.returncode == 1
        assert "has no table" in line and "run `python main.py --migrate`" in line
