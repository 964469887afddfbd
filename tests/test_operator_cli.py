"""Operator commands of main.py, run as real subprocesses on Redis and on SQLite."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid

import pytest

from queues.envelope import Envelope
from tests.driver_factories import make_driver
from tests.jobs_fixture.support import main_env, run_main

CONNECTIONS = ("redis", "database")


@pytest.fixture(params=CONNECTIONS)
def setup(request, tmp_path):
    """(connection, env, driver, queue): a driver sharing state with the child processes."""
    connection = request.param
    driver = make_driver("redis" if connection == "redis" else "sqlite", tmp_path)
    queue = f"c-{uuid.uuid4().hex[:12]}"
    yield connection, main_env(connection, tmp_path), driver, queue
    driver.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


def add_failed(driver, queue: str, value: int) -> str:
    """Reserve and fail one job the way a worker does; return its envelope id."""
    envelope = Envelope(job="FailingJob", data={"path": "/dev/null", "value": value}, queue=queue)
    driver.push(queue, envelope.to_json())
    reserved = driver.pop([queue])
    text = f"ValueError: boom {value}\n\nTraceback (most recent call last):\n  File x\nValueError"
    assert driver.fail(reserved, text)
    return envelope.id


def test_dispatch_command_queues_a_registered_job_and_prints_its_id(setup):
    _, env, driver, queue = setup
    data = json.dumps({"path": "/dev/null", "value": 5})
    result = run_main(["--dispatch", "RecordJob", "--data", data, "--queue", queue], env)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert driver.contains(queue, job_id)
    delayed = run_main(
        ["--dispatch", "RecordJob", "--data", data, "--queue", queue, "--delay", "60"], env
    )
    assert delayed.returncode == 0, delayed.stderr
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.delayed) == (1, 1)


def test_dispatch_command_rejects_unknown_names_and_bad_json_in_one_line(tmp_path):
    env = main_env("database", tmp_path)
    line = one_error_line(run_main(["--dispatch", "Nope", "--data", "{}"], env))
    assert "unknown job 'Nope'" in line and "RecordJob" in line and "FailingJob" in line
    line = one_error_line(run_main(["--dispatch", "RecordJob", "--data", "{nope"], env))
    assert "--data is not valid JSON" in line
    line = one_error_line(run_main(["--dispatch", "RecordJob", "--data", "[1]"], env))
    assert "--data must be a JSON object" in line
    line = one_error_line(run_main(["--dispatch", "RecordJob", "--data", '{"queue": 1}'], env))
    assert "cannot dispatch RecordJob" in line and "'queue' clashes" in line


def test_status_counts_every_state_per_queue_and_connection(setup):
    connection, env, driver, queue = setup
    for value in range(2):
        driver.push(queue, Envelope(job="RecordJob", data={"value": value}, queue=queue).to_json())
    driver.later(queue, Envelope(job="RecordJob", data={}, queue=queue).to_json(), 60)
    assert driver.pop([queue]) is not None  # one reserved
    add_failed(driver, queue, 1)  # pushes one more, pops the next, fails it
    result = run_main(["--queue-status", "--json", "--queue", queue], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    entries = {e["connection"]: e for e in report["connections"]}
    row = entries[connection]["queues"][0]
    assert (row["pending"], row["delayed"], row["reserved"]) == (1, 1, 1)
    [failed] = report["failed"]  # counted once, in the store that holds it
    assert (failed["queue"], failed["failed"], failed["store"]) == (queue, 1, connection)
    assert row["oldest_pending_age"] is not None and row["oldest_pending_age"] >= 0
    if connection == "database":
        assert entries["redis"]["enabled"] is False
    table = run_main(["--queue-status"], env)
    assert table.returncode == 0, table.stderr
    assert "PENDING" in table.stdout and queue in table.stdout
    if connection == "database":
        assert "(not enabled)" in table.stdout


def test_failed_jobs_can_be_listed_shown_retried_forgotten_and_flushed(setup):
    _, env, driver, queue = setup
    first = add_failed(driver, queue, 1)
    add_failed(driver, queue, 2)
    listed = run_main(["--queue-failed", "--json", "--queue", queue], env)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert {e["exception"] for e in entries} == {"ValueError: boom 1", "ValueError: boom 2"}
    assert {e["job"] for e in entries} == {"FailingJob"}
    by_value = {e["exception"][-1]: e["id"] for e in entries}
    human = run_main(["--queue-failed", "--queue", queue], env)
    assert by_value["1"] in human.stdout and "ValueError: boom 1" in human.stdout

    shown = run_main(["--queue-failed-show", by_value["1"]], env)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback (most recent call last)" in shown.stdout
    assert '"job": "FailingJob"' in shown.stdout

    retried = run_main(["--queue-retry", by_value["1"]], env)
    assert retried.returncode == 0, retried.stderr
    back = driver.pop([queue])
    assert back is not None and back.id == first and back.attempts == 1  # attempts reset to 0
    assert driver.failed_store.get(by_value["1"]) is None

    forgot = run_main(["--queue-forget", by_value["2"]], env)
    assert forgot.returncode == 0, forgot.stderr
    assert "no failed job with id" in one_error_line(
        run_main(["--queue-forget", by_value["2"]], env)
    )

    add_failed(driver, queue, 3)
    kept = run_main(["--queue-flush", "--older-than", "30"], env)
    assert kept.stdout.strip() == "deleted 0 failed job(s) older than 30 days"
    flushed = run_main(["--queue-flush"], env)
    assert flushed.returncode == 0 and flushed.stdout.startswith("deleted ")
    assert driver.failed_store.all(queue) == []


def test_retry_all_pushes_every_failed_job_back(setup):
    _, env, driver, queue = setup
    ids = {add_failed(driver, queue, value) for value in range(3)}
    result = run_main(["--queue-retry", "all", "--queue", queue], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "retried 3 failed job(s)"
    assert driver.failed_store.all(queue) == []
    assert {job.id for job in (driver.pop([queue]) for _ in range(3)) if job} == ids


@pytest.mark.parametrize(
    "command",
    [
        ["--queue-status"],
        ["--queue-failed"],
        ["--queue-retry", "all"],
        ["--queue-work", "--sleep", "0.1"],
        ["--dispatch", "RecordJob", "--data", "{}"],
        ["--queue-migrate", "--from", "redis", "--to", "database"],
    ],
)
def test_unreachable_redis_fails_in_one_line(tmp_path, command):
    env = main_env("redis", tmp_path, REDIS_PORT=str(closed_port()))
    result = run_main(command, env)
    line = one_error_line(result)
    assert result.returncode == 1
    assert "unreachable" in line and "Redis" in line


def test_unreachable_database_server_fails_in_one_line(tmp_path):
    url = f"mysql+pymysql://root@127.0.0.1:{closed_port()}/test"
    env = main_env("database", tmp_path, DB_URL=url)
    for command in (["--queue-status", "--connection", "database"], ["--queue-failed"]):
        result = run_main(command, env)
        line = one_error_line(result)
        assert result.returncode == 1
        assert "127.0.0.1" in line


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["--queue-work", "--tries", "0"], "--tries must be at least 1"),
        (["--queue-work", "--backoff", "soon"], "--backoff must be"),
        (["--queue-work", "--workers", "0"], "--workers must be at least 1"),
        (["--queue-migrate", "--from", "database", "--to", "database"], "must differ"),
        (["--queue-migrate", "--from", "database"], "--queue-migrate needs --to"),
        (["--queue-migrate", "--from", "database", "--to", "redis"], "ENABLE_REDIS=true"),
        (["--queue-failed-show", "12345"], "no failed job with id '12345'"),
    ],
)
def test_wrong_arguments_fail_in_one_line(tmp_path, command, expected):
    result = run_main(command, main_env("database", tmp_path))
    assert expected in one_error_line(result)
    assert result.returncode == 2


def test_retry_all_gets_past_records_that_cannot_be_retried(tmp_path, monkeypatch):
    import argparse

    from config.settings import load_settings
    from queues import commands
    from queues.connections import configure, get_driver, get_failed_store, reset
    from queues.envelope import Envelope

    monkeypatch.setattr(commands, "RETRY_BATCH", 2)
    settings = load_settings({"SQLITE_PATH": str(tmp_path / "q.db")}, dotenv_path=None)
    configure(settings)
    try:
        store = get_failed_store(settings)
        good = Envelope(job="RecordJob", data={}, queue="retry-q")
        store.add("database", "retry-q", good.to_json(), "RuntimeError: boom")
        for n in range(3):  # newer than the good one, and not envelopes
            store.add("database", "retry-q", f"not json {n}", "RuntimeError: boom")
        args = argparse.Namespace(queue_retry="all", queue="retry-q")
        assert commands.retry_command(args, settings) == 1  # three could not be retried
        assert get_driver("database", settings).contains("retry-q", good.id)
        assert len(store.all("retry-q")) == 3
    finally:
        reset()
