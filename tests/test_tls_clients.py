"""TLS and credentials of every client, each against a real server with a generated CA.

Redis (ACL user, TLS with a client certificate), MariaDB (`REQUIRE SSL` and
`REQUIRE X509` accounts) and Mosquitto (MQTT_TLS=true with the system's trust
store) run privately on free ports; their CA comes from docker/make-certs.sh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from backends.redis_client import build_redis, redis_errors
from backends.sql_engine import engine_from_url, settings_url, tls_connect_args
from config.settings import Settings, load_settings
from core.mqtt import MqttRuntime
from core.router import Router
from queues.drivers.base import QueueError
from tests.conftest import need_binaries
from tests.mqtt_helpers import SecureMosquitto, make_settings, running_runtime
from tests.tls_helpers import (
    Certificates,
    PrivateMariaDB,
    make_certificates,
    tls_mariadb,
    tls_redis,
)

REDIS_USER, REDIS_PASSWORD = "queue-app", "r3dis-Pa55word"
DB_PASSWORD = "maria-Pa55word"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """One private CA (with server and client certificates) for the whole module."""
    need_binaries("openssl")
    return make_certificates(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A second, unrelated CA: servers of `certs` must not be trusted through it."""
    need_binaries("openssl")
    return make_certificates(tmp_path_factory.mktemp("other-ca"))


# -- Redis ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_tls_port(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS-only redis-server with one ACL user and `default` disabled."""
    need_binaries("redis-server")
    with tls_redis(
        tmp_path_factory.mktemp("redis"), certs, [f"{REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all"]
    ) as port:
        yield port


def _redis_settings(port: int, certs: Certificates, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "enable_redis": True,
        "redis_host": "127.0.0.1",
        "redis_port": port,
        "redis_username": REDIS_USER,
        "redis_password": REDIS_PASSWORD,
        "redis_tls_ca": certs.ca,
        "redis_tls_cert": certs.client_cert,
        "redis_tls_key": certs.client_key,
    }
    values.update(overrides)
    return Settings(**values)


def test_redis_acl_user_over_tls_with_client_certificate_works(
    redis_tls_port: int, certs: Certificates
) -> None:
    client = build_redis(_redis_settings(redis_tls_port, certs))
    try:
        assert client.acl_whoami() == REDIS_USER
        client.set("tls-probe", "ok")
        assert client.get("tls-probe") == "ok"
    finally:
        client.close()


def test_redis_tls_files_alone_turn_tls_on(certs: Certificates) -> None:
    settings = load_settings(
        {"REDIS_TLS_CA": certs.ca, "REDIS_TLS_CERT": certs.client_cert,
         "REDIS_TLS_KEY": certs.client_key},
        dotenv_path=None,
    )  # fmt: skip
    assert settings.redis_tls_enabled and not settings.redis_tls
    kwargs = build_redis(settings).connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == certs.ca and kwargs["ssl_certfile"] == certs.client_cert


def test_redis_refuses_a_server_certificate_from_another_ca(
    redis_tls_port: int, certs: Certificates, other_ca: Certificates
) -> None:
    client = build_redis(_redis_settings(redis_tls_port, certs, redis_tls_ca=other_ca.ca))
    with pytest.raises(QueueError, match="certificate verify failed"), redis_errors(client):
        client.ping()


def test_redis_refuses_a_server_whose_certificate_names_another_host(
    redis_tls_port: int, certs: Certificates
) -> None:
    # The server also listens on 127.0.0.2, which its certificate does not name.
    client = build_redis(_redis_settings(redis_tls_port, certs, redis_host="127.0.0.2"))
    with pytest.raises(QueueError, match="mismatch"), redis_errors(client):
        client.ping()


def test_redis_without_client_certificate_is_refused(
    redis_tls_port: int, certs: Certificates
) -> None:
    client = build_redis(
        _redis_settings(redis_tls_port, certs, redis_tls_cert=None, redis_tls_key=None)
    )
    with pytest.raises(QueueError), redis_errors(client):
        client.ping()


def test_redis_wrong_password_names_both_credential_variables(
    redis_tls_port: int, certs: Certificates
) -> None:
    client = build_redis(_redis_settings(redis_tls_port, certs, redis_password="wrong-Pa55"))
    with pytest.raises(QueueError) as caught, redis_errors(client):
        client.ping()
    assert "check REDIS_USERNAME and REDIS_PASSWORD" in str(caught.value)
    assert "wrong-Pa55" not in str(caught.value)


# -- MariaDB -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb(
    certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateMariaDB]:
    """A private mariadbd with TLS, a `REQUIRE SSL` user and a `REQUIRE X509` user."""
    need_binaries("mariadbd", "mariadb-install-db")
    with tls_mariadb(tmp_path_factory.mktemp("mariadb"), certs) as server:
        root = pymysql.connect(unix_socket=server.socket, user="root")
        try:
            with root.cursor() as cursor:
                cursor.execute("CREATE DATABASE queue_tls")
                for user, require in (("tls_user", "SSL"), ("x509_user", "X509")):
                    cursor.execute(
                        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}' REQUIRE {require}"
                    )
                    cursor.execute(f"GRANT ALL ON queue_tls.* TO '{user}'@'%'")
        finally:
            root.close()
        yield server


def _db_settings(server: PrivateMariaDB, user: str, **tls: Any) -> Settings:
    return Settings(
        enable_mysql=True,
        db_host="127.0.0.1",
        db_port=server.port,
        db_name="queue_tls",
        db_user=user,
        db_pass=DB_PASSWORD,
        **tls,
    )


def _cipher(settings: Settings) -> str:
    engine = engine_from_url(settings_url(settings), connect_args=tls_connect_args(settings))
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()
            return str(row[1])
    finally:
        engine.dispose()


def test_mariadb_require_ssl_user_connects_with_db_ssl_ca(
    mariadb: PrivateMariaDB, certs: Certificates
) -> None:
    assert _cipher(_db_settings(mariadb, "tls_user", db_ssl_ca=certs.ca)) != ""


def test_mariadb_server_from_another_ca_is_refused(
    mariadb: PrivateMariaDB, other_ca: Certificates
) -> None:
    with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        _cipher(_db_settings(mariadb, "tls_user", db_ssl_ca=other_ca.ca))


def test_mariadb_require_x509_user_connects_with_client_certificate(
    mariadb: PrivateMariaDB, certs: Certificates
) -> None:
    with_cert = _db_settings(
        mariadb, "x509_user",
        db_ssl_ca=certs.ca, db_ssl_cert=certs.client_cert, db_ssl_key=certs.client_key,
    )  # fmt: skip
    assert _cipher(with_cert) != ""
    with pytest.raises(OperationalError, match="Access denied"):
        _cipher(_db_settings(mariadb, "x509_user", db_ssl_ca=certs.ca))


def test_migrate_command_uses_the_db_ssl_settings(
    mariadb: PrivateMariaDB, certs: Certificates, capsys: pytest.CaptureFixture[str]
) -> None:
    from backends.migrations import migrate_command

    settings = _db_settings(mariadb, "tls_user", db_ssl_ca=certs.ca)
    assert migrate_command(None, settings) == 0  # type: ignore[arg-type]
    assert "queue_jobs" in capsys.readouterr().out


# -- MQTT ------------------------------------------------------------------------


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureMosquitto]:
    """A private mosquitto demanding TLS and a password, its CA from make-certs.sh."""
    need_binaries("openssl", "mosquitto", "mosquitto_passwd")
    broker = SecureMosquitto(tmp_path)
    yield broker
    broker.stop()


def _mqtt_tls_settings(broker: SecureMosquitto, **tls: Any) -> Settings:
    return make_settings(
        broker.host,
        broker.port,
        mqtt_username=broker.username,
        mqtt_password=broker.password,
        **tls,
    )


def test_mqtt_tls_alone_trusts_the_system_store(
    secure_broker: SecureMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's default trust store is SSL_CERT_FILE when set: the private CA
    # stands in for the operating system's CAs here.
    monkeypatch.setenv("SSL_CERT_FILE", str(secure_broker.ca))
    settings = _mqtt_tls_settings(secure_broker, mqtt_tls=True)
    assert settings.mqtt_tls_enabled
    with running_runtime(settings, Router(), []) as runtime:
        assert runtime.ready.is_set()


def test_mqtt_tls_alone_refuses_a_broker_the_system_does_not_trust(
    secure_broker: SecureMosquitto,
) -> None:
    runtime = MqttRuntime(_mqtt_tls_settings(secure_broker, mqtt_tls=True), Router(), [])
    runtime.start()
    try:
        assert not runtime.wait_ready(1.5), "connected although the CA is not trusted"
    finally:
        runtime.stop()


def test_mqtt_tls_insecure_warns_that_certificates_are_not_checked(
    secure_broker: SecureMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _mqtt_tls_settings(secure_broker, mqtt_tls_insecure=True)
    with running_runtime(settings, Router(), []):
        pass
    assert "MQTT_TLS_INSECURE=true: the broker's certificate is not checked" in caplog.text
