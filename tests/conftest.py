"""Shared fixtures: real services on loopback, skipped (or failed in CI) when absent.

With REQUIRE_SERVICES=1 (CI) a missing service fails the test instead of
skipping it: a skipped test is not a passing test.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Redis database reserved for the test suite; flushed by the fixtures. TEST_REDIS_DB
#: lets two checkouts run their suites at once without flushing each other's state.
REDIS_TEST_DB = int(os.environ.get("TEST_REDIS_DB", "9"))
#: MariaDB database of the suite (TEST_MARIADB_DATABASE; created when missing).
MARIADB_DATABASE = os.environ.get("TEST_MARIADB_DATABASE", "test")
MARIADB_SERVER_URL = "mysql+pymysql://root@127.0.0.1:3306"
MARIADB_URL = f"{MARIADB_SERVER_URL}/{MARIADB_DATABASE}"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
#: PostgreSQL database of the suite (TEST_POSTGRES_DATABASE, by default the
#: MariaDB one's name, so one variable keeps two checkouts apart; created when missing).
POSTGRES_DATABASE = os.environ.get("TEST_POSTGRES_DATABASE", MARIADB_DATABASE)
POSTGRES_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}"


def private_database_name(name: str) -> str:
    """A database of one test module, distinct per TEST_MARIADB_DATABASE."""
    return name if MARIADB_DATABASE == "test" else f"{name}_{MARIADB_DATABASE}"


def services_required() -> bool:
    """True in CI: an absent service is a failure, not a skip."""
    return os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, with REQUIRE_SERVICES=1, fail) when the service is not listening."""
    if port_open(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def need_binaries(*names: str) -> None:
    """Skip (or, with REQUIRE_SERVICES=1, fail) unless every named program is on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    reason = f"needs {', '.join(missing)} on PATH"
    if services_required():
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _suite_database() -> None:
    """Create the suite's MariaDB database when TEST_MARIADB_DATABASE names a new one."""
    if MARIADB_DATABASE == "test" or not port_open("127.0.0.1", 3306):
        return
    import pymysql

    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root")
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{MARIADB_DATABASE}`")
    finally:
        connection.close()


@pytest.fixture(scope="session", autouse=True)
def _suite_postgres_database() -> None:
    """Create the suite's PostgreSQL database when it is missing (and the server is up)."""
    if not port_open(POSTGRES_HOST, POSTGRES_PORT):
        return
    import psycopg

    with psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DATABASE,)
        ).fetchone()
        if found is None:
            quoted = '"' + POSTGRES_DATABASE.replace('"', '""') + '"'
            connection.execute(f"CREATE DATABASE {quoted}")


@pytest.fixture
def redis_client() -> Iterator[object]:
    """A redis-py client on the test database, flushed before and after."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=("redis", "mariadb", "postgres", "sqlite"))
def any_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A driver of each kind on empty state (tests/driver_factories.py), closed after."""
    from tests.driver_factories import make_driver

    made = make_driver(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    """Host and port of the shared Mosquitto."""
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def postgres_url() -> str:
    """SQLAlchemy URL of the shared PostgreSQL test database."""
    need_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    return POSTGRES_URL


@pytest.fixture
def mariadb_url() -> str:
    """SQLAlchemy URL of the shared MariaDB test database."""
    need_service("MariaDB", "127.0.0.1", 3306)
    return MARIADB_URL
