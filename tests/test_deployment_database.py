"""The deployment's MariaDB account: enough for the queue and the app, nothing more.

docker/mariadb/10-app-user.sh (run by the mariadb image on its first start) is
applied to a private mariadbd; the account it makes then runs `--migrate`, the
queue and the example app, and is refused everything else.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from app.models import create_app_tables
from backends.sql_engine import engine_from_url, settings_url
from backends.sql_tables import create_tables, upgrade_tables
from config.settings import Settings
from queues.drivers.database import DatabaseDriver, DatabaseFailedStore
from queues.envelope import Envelope
from tests.conftest import need_binaries
from tests.tls_helpers import PrivateMariaDB, make_certificates, tls_mariadb

ROOT = Path(__file__).resolve().parent.parent
INIT_SCRIPT = ROOT / "docker" / "mariadb" / "10-app-user.sh"
APP = {"DB_NAME": "mqtt_framework", "DB_USER": "mqtt_app", "DB_PASS": "app-Pa55'word\\x"}


def app_user_sql(**env: str) -> subprocess.CompletedProcess[str]:
    """Run the init script by hand: it prints its SQL (or fails with one line)."""
    return subprocess.run(
        ["sh", str(INIT_SCRIPT)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A private mariadbd with the deployment's app account created as root."""
    need_binaries("mariadbd", "mariadb-install-db", "openssl")
    folder = tmp_path_factory.mktemp("deploy-db")
    with tls_mariadb(folder, make_certificates(folder / "certs")) as private:
        result = app_user_sql(**APP)
        assert result.returncode == 0, result.stderr
        root = pymysql.connect(unix_socket=private.socket, user="root", autocommit=True)
        try:
            with root.cursor() as cursor:
                for statement in filter(str.strip, result.stdout.split(";\n")):
                    cursor.execute(statement)
                cursor.execute("CREATE DATABASE other_app")
        finally:
            root.close()
        yield private


@pytest.fixture
def app_engine(server: PrivateMariaDB) -> Iterator[Engine]:
    """An engine logged in as the app account, from the settings the compose file sets."""
    settings = Settings(
        enable_mysql=True,
        db_host="127.0.0.1",
        db_port=server.port,
        db_name=APP["DB_NAME"],
        db_user=APP["DB_USER"],
        db_pass=APP["DB_PASS"],
    )
    engine = engine_from_url(settings_url(settings))
    yield engine
    engine.dispose()


def test_the_app_account_migrates_runs_the_queue_and_stores_readings(app_engine: Engine) -> None:
    create_tables(app_engine)
    upgrade_tables(app_engine)
    create_app_tables(app_engine)
    driver = DatabaseDriver(app_engine, DatabaseFailedStore(app_engine))
    envelope = Envelope(job="tests.noop", data={})
    driver.push("default", envelope.to_json())
    job = driver.pop(["default"])
    assert job is not None and job.id == envelope.id
    assert driver.ack(job)


def test_the_app_account_cannot_drop_tables_grant_or_read_other_databases(
    app_engine: Engine,
) -> None:
    create_tables(app_engine)
    forbidden = [
        "DROP TABLE queue_jobs",
        "SELECT user FROM mysql.user",
        "CREATE TABLE other_app.t (id INT)",
        "GRANT SELECT ON mqtt_framework.* TO 'someone'@'%'",
        "CREATE USER 'someone'@'%'",
    ]
    for statement in forbidden:
        with (
            pytest.raises((OperationalError, ProgrammingError), match="denied"),
            app_engine.begin() as connection,
        ):
            connection.execute(text(statement))
    with app_engine.connect() as connection:
        grants = [str(row[0]) for row in connection.execute(text("SHOW GRANTS"))]
    privileges = {}
    for grant in grants:
        match = re.match(r"GRANT (.+) ON (\S+) TO ", grant)
        assert match and "WITH GRANT OPTION" not in grant, grant
        privileges[match.group(2)] = set(match.group(1).split(", "))
    assert privileges == {
        "*.*": {"USAGE"},
        f"`{APP['DB_NAME']}`.*": {
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "CREATE",
            "ALTER",
            "INDEX",
        },
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**APP, "DB_PASS": "short"}, "DB_PASS must be at least 12 characters"),
        ({**APP, "DB_USER": "app'; DROP DATABASE x; --"}, "must be letters, digits or '_'"),
        ({**APP, "DB_NAME": ""}, "must be letters, digits or '_'"),
    ],
)
def test_the_init_script_refuses_weak_passwords_and_unsafe_names(
    env: dict[str, str], message: str
) -> None:
    result = app_user_sql(**env)
    assert result.returncode == 1
    assert message in result.stderr and result.stdout == ""
