"""Promises of the database driver beyond the shared contract: real process races,
crash recovery, fencing, lock retries, `--migrate` and connection errors.

Everything runs against the real MariaDB on loopback (database `test`) or a real
SQLite file; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect, text

from backends import sql_engine
from backends.sql_engine import engine_from_url, get_engine, settings_url
from backends.sql_tables import create_tables, drop_tables
from config.settings import Settings
from queues.drivers.base import QueueError
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope
from tests.conftest import (
    MARIADB_URL,
    POSTGRES_HOST,
    POSTGRES_PORT,
    POSTGRES_URL,
    need_service,
    private_database_name,
)
from tests.driver_race_child import read_handled, spawn

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Seconds every race child may take before the test gives up on it.
CHILD_TIMEOUT = 60.0

#: Private database of this module on the shared MariaDB: other suites drop and
#: recreate the queue tables of `test`, which must not happen mid-race.
PRIVATE_DATABASE = private_database_name("test_database_driver")
PRIVATE_URL = MARIADB_URL.rsplit("/", 1)[0] + "/" + PRIVATE_DATABASE


def _fresh(engine: Engine) -> Engine:
    drop_tables(engine)
    create_tables(engine)
    return engine


def _private_mariadb() -> str:
    need_service("MariaDB", "127.0.0.1", 3306)
    server = engine_from_url(MARIADB_URL)
    with server.begin() as connection:
        connection.execute(text(f"CREATE DATABASE IF NOT EXISTS {PRIVATE_DATABASE}"))
    server.dispose()
    return PRIVATE_URL


def _private_postgres() -> str:
    """The URL of this module's own database on the shared PostgreSQL (created when missing)."""
    need_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    import psycopg

    with psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if connection.execute(query, (PRIVATE_DATABASE,)).fetchone() is None:
            connection.execute(f'CREATE DATABASE "{PRIVATE_DATABASE}"')
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + PRIVATE_DATABASE


@pytest.fixture
def postgres_private_url() -> str:
    url = _private_postgres()
    _fresh(engine_from_url(url)).dispose()
    return url


@pytest.fixture
def mariadb_engine() -> Iterator[Engine]:
    engine = _fresh(engine_from_url(_private_mariadb()))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture(params=["mariadb", "postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """(url, engine) of a fresh queue on each SQL backend."""
    urls = {
        "mariadb": _private_mariadb,
        "postgres": _private_postgres,
        "sqlite": lambda: f"sqlite:///{tmp_path / 'queue.db'}",
    }
    url = urls[str(request.param)]()
    engine = _fresh(engine_from_url(url))
    yield url, engine
    engine.dispose()


def _driver(engine: Engine, retry_after: int = 90) -> DatabaseDriver:
    return DatabaseDriver(engine, DatabaseFailedStore(engine), retry_after)


def _envelopes(count: int) -> list[Envelope]:
    return [Envelope(job="tests.noop", data={"n": n}) for n in range(count)]


def _driver_name(url: str) -> str:
    if url.startswith("postgresql"):
        return "postgres"
    return "sqlite" if url.startswith("sqlite") else "mariadb"


def _race(url: str, tmp_path: Path, processes: int, jobs: int) -> None:
    """Push `jobs`, drain them with `processes` children, assert each handled once."""
    engine = engine_from_url(url, create_sqlite_tables=False)
    driver = _driver(engine)
    envelopes = _envelopes(jobs)
    driver.bulk([("default", env.to_json(), 0.0) for env in envelopes])
    start_at = time.time() + 1.5  # every child imported and connected by then
    outs = [tmp_path / f"handled-{n}.txt" for n in range(processes)]
    children = [
        spawn(_driver_name(url), "work", out, tmp_path, url=url, start_at=start_at) for out in outs
    ]
    errors = []
    for child in children:
        _, stderr = child.communicate(timeout=CHILD_TIMEOUT)
        if child.returncode != 0:
            errors.append(stderr.decode(errors="replace"))
    assert errors == [], "a worker process raised (a deadlock must be retried, not raised)"
    handled = read_handled(outs)
    counts = Counter(job_id for job_id, _ in handled)
    duplicates = [job_id for job_id, seen in counts.items() if seen > 1]
    assert duplicates == [], f"{len(duplicates)} jobs were handled more than once"
    assert set(counts) == {env.id for env in envelopes}
    assert all(attempts == 1 for _, attempts in handled)
    assert driver.failed_store.counts() == {}, "a lock conflict must never become a failed job"
    assert driver.queues() == []
    engine.dispose()


@pytest.mark.slow
def test_eight_processes_handle_five_thousand_jobs_exactly_once_on_mariadb(
    mariadb_engine: Engine, tmp_path: Path
) -> None:
    _race(PRIVATE_URL, tmp_path, processes=8, jobs=5000)


@pytest.mark.slow
def test_eight_processes_handle_five_thousand_jobs_exactly_once_on_postgres(
    postgres_private_url: str, tmp_path: Path
) -> None:
    _race(postgres_private_url, tmp_path, processes=8, jobs=5000)


@pytest.mark.slow
def test_four_processes_handle_jobs_exactly_once_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    _fresh(engine_from_url(sqlite_url)).dispose()
    _race(sqlite_url, tmp_path, processes=4, jobs=2000)


@pytest.mark.slow
def test_job_of_a_killed_worker_comes_back_after_its_lease(
    backend: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = backend
    driver = _driver(engine, retry_after=1)
    env = Envelope(job="tests.noop", data={})
    driver.push("default", env.to_json())
    out = tmp_path / "held.txt"
    child = spawn(_driver_name(url), "hold", out, tmp_path, url=url, retry_after=1)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not out.exists() or not out.read_text():
            assert child.poll() is None, "the holding child exited before taking the job"
            assert time.monotonic() < deadline, "the holding child never took the job"
            time.sleep(0.05)
        assert out.read_text().split() == [env.id, "1"]
        assert driver.pop(["default"]) is None, "a live lease must not be handed out"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    again = driver.pop(["default"], block=5)
    assert again is not None and again.id == env.id
    assert again.attempts == 2
    assert driver.ack(again)


def test_ack_with_an_earlier_reservations_token_is_refused(backend: tuple[str, Engine]) -> None:
    _, engine = backend
    driver = _driver(engine)
    driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    first = driver.pop(["default"])
    assert first is not None and driver.release(first)
    second = driver.pop(["default"])
    assert second is not None and second.token != first.token
    assert not driver.ack(first)
    assert not driver.extend(first)
    assert driver.sizes("default").reserved == 1
    assert driver.ack(second)


def test_claim_skips_a_row_another_transaction_holds_instead_of_waiting(
    mariadb_engine: Engine,
) -> None:
    driver = _driver(mariadb_engine)
    first, second = _envelopes(2)
    driver.push("default", first.to_json())
    driver.push("default", second.to_json())
    with mariadb_engine.connect() as locker:
        locker.execute(text("SELECT id FROM queue_jobs ORDER BY id LIMIT 1 FOR UPDATE"))
        job = driver.pop(["default"])
        assert job is not None and job.id == second.id
        locker.rollback()
    job = driver.pop(["default"])
    assert job is not None and job.id == first.id


def test_lock_wait_timeout_is_retried_until_the_lock_is_gone(mariadb_engine: Engine) -> None:
    impatient = engine_from_url(PRIVATE_URL)

    @event.listens_for(impatient, "connect")
    def _short_lock_wait(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")

    driver = _driver(impatient)
    driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    job = driver.pop(["default"])
    assert job is not None
    locker = mariadb_engine.connect()
    locker.execute(text("SELECT id FROM queue_jobs FOR UPDATE"))
    timer = threading.Timer(1.6, locker.rollback)  # outlives one 1 s lock wait
    timer.start()
    try:
        started = time.monotonic()
        assert driver.ack(job), "the ack must wait out the lock, not fail"
        assert time.monotonic() - started >= 1.0, "the ack did not meet the lock at all"
    finally:
        timer.join()
        locker.close()
        impatient.dispose()
    assert driver.sizes("default").reserved == 0


def _main(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DB_URL": "", "ENABLE_MYSQL": "false", **env}
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


MARIADB_ENV = {
    "ENABLE_MYSQL": "true",
    "DB_HOST": "127.0.0.1",
    "DB_PORT": "3306",
    "DB_NAME": PRIVATE_DATABASE,
    "DB_USER": "root",
    "DB_PASS": "",
}

#: PostgreSQL from the DB_* variables: DB_CONNECTION=pgsql, default port 5432.
POSTGRES_ENV = {
    "DB_CONNECTION": "pgsql",
    "DB_HOST": POSTGRES_HOST,
    "DB_NAME": PRIVATE_DATABASE,
    "DB_USER": "postgres",
}


def test_migrate_creates_the_seed_tables_with_their_columns_and_indexes(
    mariadb_engine: Engine,
) -> None:
    drop_tables(mariadb_engine)
    result = _main("--migrate", **MARIADB_ENV)
    assert result.returncode == 0, result.stderr
    created = "created tables queue_jobs, queue_failed_jobs, queue_workers, queue_locks"
    assert created in result.stdout
    assert f"mysql+pymysql://root@127.0.0.1:3306/{PRIVATE_DATABASE}" in result.stdout
    inspector = inspect(mariadb_engine)
    jobs = {c["name"]: c for c in inspector.get_columns("queue_jobs")}
    assert list(jobs) == [
        "id",
        "queue",
        "payload",
        "attempts",
        "reserved_at",
        "available_at",
        "created_at",
        "reservations",  # the fencing counter, the one column beyond the spec's
    ]
    types = {name: str(column["type"]).upper() for name, column in jobs.items()}
    assert types["reservations"].startswith("INT") and not jobs["reservations"]["nullable"]
    assert types["queue"].startswith("VARCHAR(255)")
    assert "TEXT" in types["payload"] and types["attempts"].startswith("INT")
    for name in ("reserved_at", "available_at", "created_at"):
        assert types[name].startswith("DATETIME")
    assert jobs["reserved_at"]["nullable"] and not jobs["available_at"]["nullable"]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("queue_jobs")}
    assert indexes == {
        "idx_queue_reserved": ["queue", "reserved_at"],
        "idx_available": ["available_at"],
    }
    failed = [c["name"] for c in inspector.get_columns("queue_failed_jobs")]
    assert failed == ["id", "connection", "queue", "payload", "exception", "failed_at"]
    again = _main("--migrate", **MARIADB_ENV)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_migrate_on_the_embedded_sqlite_creates_the_file_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "queue.db"
    result = _main("--migrate", SQLITE_PATH=str(path))
    assert result.returncode == 0, result.stderr
    created = "created tables queue_jobs, queue_failed_jobs, queue_workers, queue_locks"
    assert created in result.stdout
    assert "created app tables device_readings" in result.stdout  # app/models.py's
    engine = engine_from_url(f"sqlite:///{path}", create_sqlite_tables=False)
    assert set(inspect(engine).get_table_names()) == {
        "queue_jobs",
        "queue_failed_jobs",
        "queue_workers",
        "queue_locks",
        "device_readings",
    }
    engine.dispose()


_OLD_QUEUE_JOBS = {  # queue_jobs as an earlier --migrate made it: no reservations column
    "mariadb": "CREATE TABLE queue_jobs (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
    "queue VARCHAR(255) NOT NULL, payload LONGTEXT NOT NULL, attempts INT NOT NULL, "
    "reserved_at DATETIME(6) NULL, available_at DATETIME(6) NOT NULL, "
    "created_at DATETIME(6) NOT NULL, INDEX idx_queue_reserved (queue, reserved_at), "
    "INDEX idx_available (available_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "postgres": "CREATE TABLE queue_jobs (id BIGSERIAL PRIMARY KEY, "
    "queue VARCHAR(255) NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL, "
    "reserved_at TIMESTAMP NULL, available_at TIMESTAMP NOT NULL, "
    "created_at TIMESTAMP NOT NULL)",
    "sqlite": "CREATE TABLE queue_jobs (id INTEGER NOT NULL PRIMARY KEY, "
    "queue VARCHAR(255) NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL, "
    "reserved_at DATETIME, available_at DATETIME NOT NULL, created_at DATETIME NOT NULL)",
}


def test_migrate_adds_the_fencing_column_to_a_queue_jobs_table_made_without_it(
    backend: tuple[str, Engine],
) -> None:
    url, engine = backend
    kind = _driver_name(url)
    env = Envelope(job="tests.noop", data={})
    drop_tables(engine)
    with engine.begin() as connection:
        connection.execute(text(_OLD_QUEUE_JOBS[kind]))
        connection.execute(
            text(
                "INSERT INTO queue_jobs (queue, payload, attempts, available_at, created_at) "
                "VALUES ('default', :payload, 0, '2020-01-01', '2020-01-01')"
            ),
            {"payload": env.to_json()},
        )
    environments = {"mariadb": MARIADB_ENV, "postgres": POSTGRES_ENV}
    environment = environments.get(kind) or {"SQLITE_PATH": url[len("sqlite:///") :]}
    result = _main("--migrate", **environment)
    assert result.returncode == 0, result.stderr
    assert "added columns queue_jobs.reservations" in result.stdout
    assert "created tables queue_failed_jobs, queue_workers, queue_locks" in result.stdout
    columns = {c["name"]: c for c in inspect(engine).get_columns("queue_jobs")}
    assert "reservations" in columns and not columns["reservations"]["nullable"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT reservations FROM queue_jobs")).all() == [(0,)]
    driver = _driver(engine)
    job = driver.pop(["default"])
    assert job is not None and job.id == env.id and job.attempts == 1
    assert driver.ack(job)
    again = _main("--migrate", **environment)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_raises_queue_error_naming_host_and_port_not_password() -> None:
    port = _free_port()
    engine = engine_from_url(f"mysql+pymysql://root:s3cret-pw@127.0.0.1:{port}/test")
    driver = _driver(engine)
    with pytest.raises(QueueError) as caught:
        driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    result = _main("--migrate", **{**MARIADB_ENV, "DB_PORT": str(port), "DB_PASS": "s3cret-pw"})
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_settings_url_keeps_every_password_character() -> None:
    password = "p@ss:w/rd?#%"
    url = settings_url(Settings(enable_mysql=True, db_host="db", db_pass=password))
    assert url.password == password
    assert (url.host, url.port, url.database) == ("db", 3306, "mqtt_framework")
    assert password not in sql_engine.masked(url)


def test_embedded_sqlite_default_creates_its_folder_and_tables_on_first_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "storage" / "queue.db"
    sql_engine.reset()
    try:
        engine = get_engine(Settings(sqlite_path=str(path)))
        assert engine is get_engine(Settings(sqlite_path=str(path)))
        driver = _driver(engine)
        driver.push("default", Envelope(job="tests.noop", data={}).to_json())
        assert driver.sizes("default").pending == 1
        with engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        sql_engine.reset()
    assert path.exists()


def test_a_connection_returned_mid_transaction_has_its_locks_released(
    mariadb_engine: Engine,
) -> None:
    env = Envelope(job="tests.noop", data={})
    _driver(mariadb_engine).push("default", env.to_json())
    raw = mariadb_engine.raw_connection()
    cursor = raw.cursor()
    cursor.execute("SELECT id FROM queue_jobs FOR UPDATE")
    cursor.close()
    raw.close()  # back to the pool with the row locked, unless the pool's reset rolls back
    other = engine_from_url(PRIVATE_URL)  # another session: it would skip a locked row
    try:
        job = _driver(other).pop(["default"])
    finally:
        other.dispose()
    assert job is not None and job.id == env.id


def test_fail_into_a_store_on_another_database_keeps_the_job_in_exactly_one_place(
    mariadb_engine: Engine, sqlite_url: str
) -> None:
    store_engine = engine_from_url(sqlite_url)
    store = DatabaseFailedStore(store_engine)
    driver = DatabaseDriver(mariadb_engine, store)
    live, stale = _envelopes(2)
    driver.push("default", live.to_json())
    driver.push("default", stale.to_json())
    job = driver.pop(["default"])
    assert job is not None and driver.fail(job, "boom")
    assert [Envelope.from_json(f.payload).id for f in store.all()] == [live.id]
    old = driver.pop(["default"])
    assert old is not None and driver.release(old)
    assert not driver.fail(old, "stale"), "a stale reservation must not be failed"
    assert store.counts() == {"default": 1}, "the refused failure must be taken back"
    assert driver.contains("default", stale.id)
    store_engine.dispose()


def _attempts_column(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT attempts FROM queue_jobs ORDER BY id")).all()
    return [int(row[0]) for row in rows]


def _reservations_column(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT reservations FROM queue_jobs ORDER BY id")).all()
    return [int(row[0]) for row in rows]


def test_release_undoing_the_attempt_is_fenced_and_gives_back_only_a_workers_attempt(
    backend: tuple[str, Engine],
) -> None:
    _, engine = backend
    driver = _driver(engine)
    env = Envelope(job="tests.noop", data={})
    driver.push("default", env.to_json())
    first = driver.pop(["default"])
    assert first is not None and driver.release(first)
    second = driver.pop(["default"])
    assert second is not None and second.attempts == 2
    assert not driver.release(first, undo_attempt=True), "a stale token must not undo"
    assert _attempts_column(engine) == [2]
    assert driver.release(second, undo_attempt=True)
    assert _attempts_column(engine) == [1]
    [moving] = driver.take_for_transfer("default", 10)
    assert moving.attempts == 1
    assert driver.release(moving, undo_attempt=True)
    assert _attempts_column(engine) == [1], "a migration's take counted no attempt to undo"
    third = driver.pop(["default"])
    assert third is not None and third.attempts == 2
    assert driver.release(third, undo_attempt=True)
    assert _attempts_column(engine) == [1]
    assert _reservations_column(engine) == [4], "every reservation counts; nothing undoes one"


def test_transfer_of_an_expired_reservation_counts_no_attempt_but_fences_out_its_holder(
    backend: tuple[str, Engine],
) -> None:
    _, engine = backend
    driver = _driver(engine, retry_after=1)
    leased, pending = _envelopes(2)
    driver.push("default", leased.to_json())
    stale = driver.pop(["default"])
    assert stale is not None and stale.attempts == 1
    driver.push("default", pending.to_json())
    time.sleep(1.3)
    taken = driver.take_for_transfer("default", 10)
    assert [job.id for job in taken] == [leased.id, pending.id]
    assert [job.attempts for job in taken] == [1, 0]
    assert [Envelope.from_json(job.payload).attempts for job in taken] == [1, 0]
    assert _attempts_column(engine) == [1, 0], "a move counts no attempt"
    assert _reservations_column(engine) == [2, 1]
    assert not driver.ack(stale)
    assert all(driver.ack(job) for job in taken)
    assert driver.queues() == []


def test_stale_worker_is_fenced_out_after_an_undo_and_a_migrations_take(
    backend: tuple[str, Engine],
) -> None:
    """A's attempt count comes back through B's undo; A's token must not."""
    _, engine = backend
    driver = _driver(engine, retry_after=1)
    env = Envelope(job="tests.noop", data={})
    driver.push("default", env.to_json())
    a = driver.pop(["default"])  # worker A, then cut off past its lease
    assert a is not None and a.attempts == 1
    time.sleep(1.3)
    b = driver.pop(["default"])  # worker B takes the expired row, is stopped, undoes
    assert b is not None and b.attempts == 2
    assert driver.release(b, undo_attempt=True)
    assert _attempts_column(engine) == [1], "attempts are back at A's count"
    [moving] = driver.take_for_transfer("default", 10)  # a migration takes the pending row
    assert moving.attempts == 1
    assert not driver.release(a), "A's late release must not hit the migration's lease"
    assert not driver.extend(a)
    assert not driver.fail(a, "late")
    assert not driver.ack(a)
    assert not driver.release(b, undo_attempt=True)
    assert driver.failed_store.counts() == {}
    assert driver.ack(moving), "the migration's own ack must be accepted"
    assert not driver.contains("default", env.id)


def test_dead_worker_then_dead_migration_leave_one_attempt_for_the_next_claim(
    backend: tuple[str, Engine],
) -> None:
    _, engine = backend
    driver = _driver(engine, retry_after=1)
    env = Envelope(job="tests.noop", data={})
    driver.push("default", env.to_json())
    dead_worker = driver.pop(["default"])
    assert dead_worker is not None
    time.sleep(1.3)
    [dead_move] = driver.take_for_transfer("default", 10)
    assert dead_move.attempts == 1
    time.sleep(1.3)
    job = driver.pop(["default"])
    assert job is not None and job.id == env.id
    assert job.attempts == 2, "a max_tries=2 job still gets its second real try"
    assert Envelope.from_json(job.payload).attempts == 2
    assert _attempts_column(engine) == [2]
    assert not driver.ack(dead_worker) and not driver.ack(dead_move)
    assert driver.ack(job)


def test_delayed_job_of_a_dead_migration_does_not_run_before_it_is_due(
    backend: tuple[str, Engine],
) -> None:
    _, engine = backend
    driver = _driver(engine, retry_after=1)
    env = Envelope(job="tests.noop", data={})
    driver.later("default", env.to_json(), 30)
    [taken] = driver.take_for_transfer("default", 10)  # the migration then dies
    assert taken.id == env.id
    time.sleep(1.3)  # its lease is over; the job is still 28 s from due
    assert driver.pop(["default"]) is None
    [again] = driver.take_for_transfer("default", 10)  # a re-run still finishes the move
    assert again.id == env.id and again.attempts == 0
    assert again.available_at is not None and again.available_at - time.time() > 20
    assert driver.ack(again)


def test_a_job_arrives_with_the_attempts_its_envelope_already_spent(
    backend: tuple[str, Engine],
) -> None:
    _, engine = backend
    driver = _driver(engine)
    pushed, later, bulked = (
        Envelope(job="tests.noop", data={"n": n}, attempts=2) for n in range(3)
    )
    driver.push("default", pushed.to_json())
    driver.later("default", later.to_json(), 0.01)
    driver.bulk([("default", bulked.to_json(), 0.0)])
    assert _attempts_column(engine) == [2, 2, 2]
    time.sleep(0.05)
    for env in (pushed, later, bulked):
        job = driver.pop(["default"])
        assert job is not None and job.id == env.id
        assert job.attempts == 3
        assert Envelope.from_json(job.payload).attempts == 3
        assert driver.ack(job)


def test_bulk_on_mariadb_keeps_each_jobs_own_attempts(mariadb_engine: Engine) -> None:
    driver = _driver(mariadb_engine)
    envelopes = [Envelope(job="tests.noop", data={}, attempts=n % 3) for n in range(7)]
    driver.bulk([("default", env.to_json(), 0.0) for env in envelopes])
    assert _attempts_column(mariadb_engine) == [n % 3 for n in range(7)]


@pytest.mark.parametrize(
    ("system_zone", "session_zone", "safe"),
    [
        ("UTC", "SYSTEM", True),
        ("CEST", "SYSTEM", False),
        ("EST", "SYSTEM", False),
        ("CET", "+00:00", True),
        ("CET", "+02:00", True),
        ("UTC", "Europe/Berlin", False),
        ("UTC", "Etc/UTC", True),
    ],
)
def test_time_zone_check_accepts_only_zones_without_daylight_saving(
    system_zone: str, session_zone: str, safe: bool
) -> None:
    assert sql_engine.time_zone_is_dst_free(system_zone, session_zone) is safe


def test_engine_warns_about_the_time_zone_exactly_when_it_may_observe_dst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = engine_from_url(_private_mariadb())
    try:
        with (
            caplog.at_level("WARNING", logger="backends.sql_engine"),
            engine.connect() as connection,
        ):
            zone = connection.execute(text("SELECT @@system_time_zone, @@time_zone")).one()
    finally:
        engine.dispose()
    warned = [r for r in caplog.records if "daylight saving" in r.getMessage()]
    assert sql_engine.time_zone_is_dst_free(str(zone[0]), str(zone[1])) == (warned == [])


def test_the_embedded_sqlite_database_is_upgraded_on_first_use(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE queue_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, queue VARCHAR(255) "
        "NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL, reserved_at TEXT, "
        "available_at TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    old.commit()
    old.close()
    sql_engine.reset()
    try:
        engine = sql_engine.get_engine(Settings(sqlite_path=str(path)))
        columns = {c["name"] for c in inspect(engine).get_columns("queue_jobs")}
        assert "reservations" in columns
        driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
        driver.push("default", Envelope(job="tests.noop", data={}).to_json())
        job = driver.pop(["default"])
        assert job is not None and driver.ack(job)
    finally:
        sql_engine.reset()
