"""PostgreSQL as the database queue's server: settings, URLs, outages and times.

The driver's behaviour itself is the contract suite's (tests/test_driver_contract.py
runs every promise on "postgres" too); here, what is particular to PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from backends.errors import BackendUnavailableError
from backends.sql_engine import engine_from_url, settings_url
from backends.sql_tables import drop_tables
from config.settings import ConfigError, load_settings
from core.broker import free_port
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope
from tests.conftest import POSTGRES_URL
from tests.driver_factories import make_driver


def test_db_connection_pgsql_builds_a_psycopg_url_on_port_5432() -> None:
    settings = load_settings(
        {"DB_CONNECTION": "pgsql", "DB_HOST": "db", "DB_NAME": "jobs", "DB_PASS": "p@ss:/w"},
        dotenv_path=None,
    )
    url = settings_url(settings)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.database, url.password) == ("db", 5432, "jobs", "p@ss:/w")


def test_mysql_keeps_its_default_port_and_driver() -> None:
    url = settings_url(load_settings({"ENABLE_MYSQL": "true"}, dotenv_path=None))
    assert (url.drivername, url.port) == ("mysql+pymysql", 3306)


def test_a_bare_postgresql_db_url_means_psycopg_3() -> None:
    settings = load_settings({"DB_URL": "postgresql://u@h/db"}, dotenv_path=None)
    assert settings_url(settings).drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_CONNECTION": "oracle"}, "DB_CONNECTION must be one of mysql, pgsql, got 'oracle'"),
        (
            {"DB_CONNECTION": "pgsql", "ENABLE_MYSQL": "true"},
            "ENABLE_MYSQL=true and DB_CONNECTION=pgsql contradict each other",
        ),
        (
            {"DB_CONNECTION": "pgsql", "DB_SSL_CA": __file__},
            "DB_SSL_CA, DB_SSL_CERT and DB_SSL_KEY need a MySQL/MariaDB server",
        ),
    ],
)
def test_a_wrong_postgres_setting_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv_path=None)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unreachable_server_is_an_outage_naming_it() -> None:
    port = free_port()
    engine = engine_from_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    with pytest.raises(BackendUnavailableError) as caught:
        driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    assert f"127.0.0.1:{port}" in str(caught.value)
    engine.dispose()


def test_missing_tables_say_to_run_migrate(tmp_path: Path) -> None:
    driver = make_driver("postgres", tmp_path)
    assert isinstance(driver, DatabaseDriver)
    drop_tables(driver.engine)
    with pytest.raises(BackendUnavailableError) as caught:
        driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    assert "has no table queue_jobs" in str(caught.value)
    assert "python main.py --migrate" in str(caught.value)
    driver.close()


def test_times_are_utc_whatever_the_session_time_zone(tmp_path: Path) -> None:
    make_driver("postgres", tmp_path).close()  # fresh tables
    # Sessions in a zone with daylight saving time write the same UTC instants.
    new_york = {"options": "-c timezone=America/New_York"}
    engine = engine_from_url(POSTGRES_URL, connect_args=new_york)
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine))
    driver.push("default", Envelope(job="tests.noop", data={}).to_json())
    with engine.connect() as connection:
        zone = connection.execute(text("SELECT current_setting('TimeZone')")).scalar_one()
        created = connection.execute(text("SELECT created_at FROM queue_jobs")).scalar_one()
    assert zone == "America/New_York"
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs((now - created).total_seconds()) < 60, (now, created)
    job = driver.pop(["default"])
    assert job is not None and driver.ack(job), "leases compare UTC with UTC"
    engine.dispose()


def test_sqlstates_are_read_from_postgres_errors_only() -> None:
    import psycopg.errors
    import pymysql

    from backends.sql_errors import is_outage
    from queues.drivers.database import is_transient, missing_table

    def wrapped(error: BaseException) -> DBAPIError:
        return DBAPIError("statement", {}, error)

    assert is_transient(wrapped(psycopg.errors.DeadlockDetected("deadlock")))
    assert is_transient(wrapped(psycopg.errors.SerializationFailure("retry")))
    assert not is_transient(wrapped(psycopg.errors.UniqueViolation("duplicate")))
    assert is_outage(wrapped(psycopg.errors.AdminShutdown("terminating connection")))
    assert is_outage(wrapped(psycopg.OperationalError("connection refused")))
    assert not is_outage(wrapped(psycopg.errors.SyntaxError("syntax")))
    missing = psycopg.errors.UndefinedTable('relation "queue_jobs" does not exist')
    assert missing_table(wrapped(missing)) == "queue_jobs"
    # A MariaDB error carries a SQLSTATE too (HY000): its number decides, as before.
    lock_wait = pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")
    lock_wait.sqlstate = "HY000"
    assert is_transient(wrapped(lock_wait)) and is_outage(wrapped(lock_wait))
