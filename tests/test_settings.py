"""Settings: typed values from the environment over `.env`, one clear line per error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import ConfigError, Settings, describe, load_settings, variable_names

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_environment() -> None:
    settings = load_settings({}, dotenv_path=None)
    assert settings == Settings()
    assert settings.uses_embedded_broker
    assert settings.queue_connection == "database"


def test_every_seed_variable_is_read() -> None:
    seed = {
        "ENABLE_REDIS", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD",
        "QUEUE_CONNECTION", "ENABLE_MYSQL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS",
    }  # fmt: skip
    assert seed <= set(variable_names())


def test_values_are_parsed_and_typed() -> None:
    settings = load_settings(
        {
            "ENABLE_REDIS": "true",
            "REDIS_PORT": "6380",
            "REDIS_DB": "2",
            "QUEUE_CONNECTION": "redis",
            "MQTT_HOST": "broker.local",
            "MQTT_PROTOCOL": "5",
            "MQTT_PERSISTENT_SESSION": "yes",
            "LOG_LEVEL": "debug",
        },
        dotenv_path=None,
    )
    assert settings.enable_redis is True
    assert settings.redis_port == 6380
    assert settings.redis_db == 2
    assert settings.queue_connection == "redis"
    assert settings.mqtt_host == "broker.local"
    assert settings.mqtt_protocol == "5"
    assert settings.mqtt_persistent_session is True
    assert settings.log_level == "DEBUG"
    assert not settings.uses_embedded_broker


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_PORT": "abc"}, "REDIS_PORT must be an integer, got 'abc'"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT must be at most 65535, got 70000"),
        ({"ENABLE_MYSQL": "maybe"}, "ENABLE_MYSQL must be true or false, got 'maybe'"),
        ({"QUEUE_CONNECTION": "kafka"}, "QUEUE_CONNECTION must be one of redis, database, sync"),
        ({"JOBS_PACKAGE": "app/jobs"}, "JOBS_PACKAGE must be a dotted module path such as"),
        ({"MQTT_PROTOCOL": "4"}, "MQTT_PROTOCOL must be one of 3.1.1, 5"),
        ({"QUEUE_CONNECTION": "redis"}, "QUEUE_CONNECTION=redis needs ENABLE_REDIS=true"),
        ({"MQTT_TLS_CERT": "c.pem"}, "MQTT_TLS_CERT and MQTT_TLS_KEY must be set together"),
        ({"REDIS_TLS_KEY": "k.pem"}, "REDIS_TLS_CERT and REDIS_TLS_KEY must be set together"),
        ({"DB_SSL_CERT": "c.pem"}, "DB_SSL_CERT and DB_SSL_KEY must be set together"),
        ({"REDIS_TLS_CA": "/no/ca.pem"}, "REDIS_TLS_CA names a file that does not exist"),
        ({"DB_SSL_CA": __file__}, "DB_SSL_CA, DB_SSL_CERT and DB_SSL_KEY need a MySQL/MariaDB"),
        ({"MQTT_TLS": "sure"}, "MQTT_TLS must be true or false, got 'sure'"),
    ],
)
def test_a_wrong_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv_path=None)
    assert message in str(caught.value)


def test_the_real_environment_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("REDIS_HOST=from-dotenv\nREDIS_DB=3\n")
    settings = load_settings({"REDIS_HOST": "from-env"}, dotenv_path=dotenv)
    assert settings.redis_host == "from-env"
    assert settings.redis_db == 3


def test_the_sync_connection_and_the_jobs_package_are_settings_read_from_dotenv(
    tmp_path: Path,
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("QUEUE_CONNECTION=sync\nJOBS_PACKAGE=my_app.jobs\n")
    settings = load_settings({}, dotenv_path=dotenv)
    assert (settings.queue_connection, settings.jobs_package) == ("sync", "my_app.jobs")
    assert load_settings({"JOBS_PACKAGE": " "}, dotenv_path=None).jobs_package == "app.jobs"


def test_secrets_never_appear_in_repr_describe_or_errors() -> None:
    settings = load_settings(
        {"REDIS_PASSWORD": "s3cret-r", "DB_PASS": "s3cret-d", "MQTT_PASSWORD": "s3cret-m"},
        dotenv_path=None,
    )
    shown = repr(settings) + repr(describe(settings))
    for secret in ("s3cret-r", "s3cret-d", "s3cret-m"):
        assert secret not in shown
    assert describe(settings)["db_pass"] == "***"


def test_main_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--queue-status"],
        env={"PATH": "/usr/bin:/bin", "REDIS_PORT": "abc"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: REDIS_PORT must be an integer, got 'abc'"
    )


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    for flag in (
        "--run",
        "--routes",
        "--migrate",
        "--queue-work",
        "--queue-status",
        "--queue-failed",
        "--queue-retry",
        "--dispatch",
        "--queue-migrate",
        "--workers",
    ):
        assert flag in result.stdout


def test_tls_and_credential_variables_are_read() -> None:
    here = __file__
    settings = load_settings(
        {
            "MQTT_TLS": "true",
            "REDIS_USERNAME": "queue-app",
            "REDIS_TLS_CA": here,
            "ENABLE_MYSQL": "true",
            "DB_SSL_CA": here,
            "DB_SSL_CERT": here,
            "DB_SSL_KEY": here,
        },
        dotenv_path=None,
    )
    assert settings.mqtt_tls_enabled and settings.mqtt_tls_ca is None
    assert settings.redis_username == "queue-app"
    assert settings.redis_tls_enabled and not settings.redis_tls
    assert settings.db_ssl_enabled
    assert (settings.db_ssl_ca, settings.db_ssl_cert, settings.db_ssl_key) == (here, here, here)
    assert not Settings().redis_tls_enabled and not Settings().db_ssl_enabled


def test_an_empty_group_name_means_the_default() -> None:
    assert load_settings({"MQTT_GROUP_NAME": " "}, dotenv_path=None).mqtt_group_name == (
        Settings().mqtt_group_name
    )
