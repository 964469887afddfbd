"""Typed application settings read from the environment and `.env`.

One frozen `Settings` object holds every knob of the framework. Values come from
the process environment first and from `.env` second (python-dotenv; the real
environment wins). A wrong value stops the start with one `ConfigError` line that
names the variable and what was wrong; secrets are never echoed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

#: Project root: the folder holding main.py, `.env` and `storage/`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Default `.env` file read under the real environment.
DEFAULT_DOTENV = PROJECT_ROOT / ".env"

#: Default SQLite file of the embedded database queue.
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "storage" / "queue.db"

#: Handler threads of the MQTT intake by default: two per core. The intake's own
#: writes are batched, so quick handlers gain nothing from more threads (they only
#: contend for the GIL: measured 5.6k msg/s with 4 threads, 3.9k with 16, on 2 cores);
#: raise MQTT_HANDLER_CONCURRENCY for handlers that block on I/O per message.
DEFAULT_HANDLER_CONCURRENCY = min(32, 2 * (os.cpu_count() or 1))
#: Largest payload (bytes) a route accepts unless it sets its own `max_payload`.
DEFAULT_MAX_PAYLOAD = 256 * 1024
#: Group of the `$share` subscriptions when MQTT_GROUP_NAME is unset or empty.
DEFAULT_GROUP_NAME = "mqtt_framework_group"

#: QUEUE_CONNECTION values: two real queues, and `sync`, which runs each job inside
#: `dispatch()` (for tests and scripts; no worker, no queue).
QUEUE_CONNECTIONS = ("redis", "database", "sync")
#: DB_CONNECTION values: the SQL server the DB_* variables describe when one is
#: enabled (ENABLE_MYSQL=true for `mysql`; `pgsql` enables PostgreSQL by itself).
DB_CONNECTIONS = ("mysql", "pgsql")
#: Default DB_PORT of each DB_CONNECTION.
DB_DEFAULT_PORTS = {"mysql": 3306, "pgsql": 5432}
#: Package scanned for job classes unless JOBS_PACKAGE says otherwise.
DEFAULT_JOBS_PACKAGE = "app.jobs"
#: Module whose `schedule` the scheduler runs unless SCHEDULE_MODULE says otherwise.
DEFAULT_SCHEDULE_MODULE = "app.schedule"
MQTT_PROTOCOLS = ("3.1.1", "5")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: LOG_FORMAT values: `text` (one readable line) or `json` (one JSON object per line).
LOG_FORMATS = ("text", "json")
#: Port of the dashboard unless DASHBOARD_PORT says otherwise.
DEFAULT_DASHBOARD_PORT = 8089
#: Address the metrics/health server and the dashboard bind unless told otherwise:
#: loopback only, so nothing is reachable from the network by accident.
DEFAULT_HTTP_HOST = "127.0.0.1"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _parse_float(name: str, raw: str, minimum: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _parse_choice(name: str, raw: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _parse_path(raw: str) -> str:
    """A filesystem path; a relative one is taken from the project root, not the cwd."""
    path = Path(raw.strip())
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def _parse_module_path(name: str, raw: str, default: str) -> str:
    """A dotted module path such as `app.jobs` (empty: the default)."""
    value = raw.strip() or default
    if not all(part.isidentifier() for part in value.split(".")):
        raise ConfigError(f"{name} must be a dotted module path such as {default}, got {raw!r}")
    return value


def _parse_addresses(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` -> ((host, port), ...); empty: ()."""
    addresses = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.strip().isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(
                f"{name} must be host:port pairs separated by commas "
                f"(e.g. 10.0.0.1:26379,10.0.0.2:26379), got {item!r}"
            )
        addresses.append((host.strip("[] "), int(port)))
    return tuple(addresses)


def _optional(raw: str) -> str | None:
    stripped = raw.strip()
    return stripped or None


@dataclass(frozen=True)
class Settings:
    """Every setting of the framework, typed and validated.

    Secrets (`redis_password`, `db_pass`, `mqtt_password`, `dashboard_token`, and a
    `db_url` that may embed a password) are excluded from `repr` so they never reach a log line.
    """

    # Redis (seed: ENABLE_REDIS, REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD)
    enable_redis: bool = False
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = field(default=None, repr=False)
    redis_tls: bool = False
    #: Replicas that must acknowledge each dispatch (Redis WAIT) before it returns; 0: none.
    redis_wait_replicas: int = 0
    #: Milliseconds dispatch waits for those acknowledgements before raising.
    redis_wait_timeout_ms: int = 1000
    #: Sentinels (host, port) that find the master; empty: REDIS_HOST/PORT is the server.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    #: Name of the master the sentinels monitor (needed with REDIS_SENTINELS).
    redis_sentinel_master: str | None = None
    #: REDIS_HOST/PORT is a seed node of a Redis Cluster (keys carry hash tags).
    redis_cluster: bool = False

    # Queue selection and leases
    queue_connection: str = "database"
    queue_retry_after: int = 90  #: seconds a reservation lasts without a heartbeat

    # SQL (seed: ENABLE_MYSQL, DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASS)
    enable_mysql: bool = False
    db_connection: str = "mysql"  #: mysql (MySQL/MariaDB) or pgsql (PostgreSQL)
    db_host: str = "localhost"
    db_port: int | None = None  #: None: the default port of db_connection
    db_name: str = "mqtt_framework"
    db_user: str = "root"
    db_pass: str | None = field(default=None, repr=False)
    db_url: str | None = field(default=None, repr=False)
    db_pool_size: int = 5
    db_pool_pre_ping: bool = True
    sqlite_path: str = str(DEFAULT_SQLITE_PATH)

    # Application
    app_name: str = "mqtt-jobs"  #: names this app: part of the derived MQTT client id
    routes_package: str = "routes"  #: package whose modules' `router` objects are served
    jobs_package: str = DEFAULT_JOBS_PACKAGE  #: package whose Job classes workers may run
    schedule_module: str = DEFAULT_SCHEDULE_MODULE  #: module whose `schedule` --schedule runs

    # MQTT
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_client_id: str | None = None
    mqtt_protocol: str = "3.1.1"
    mqtt_tls_ca: str | None = None
    mqtt_tls_cert: str | None = None
    mqtt_tls_key: str | None = None
    mqtt_tls_insecure: bool = False
    mqtt_group_name: str = DEFAULT_GROUP_NAME
    mqtt_persistent_session: bool = True
    mqtt_session_expiry: int = 3600  #: seconds the broker keeps a persistent MQTT 5 session
    mqtt_keepalive: int = 60
    mqtt_max_inflight: int = 100  #: unacknowledged QoS>0 messages held at once
    mqtt_handler_retries: int = 3  #: attempts of a failing handler before dead-lettering
    mqtt_handler_concurrency: int = DEFAULT_HANDLER_CONCURRENCY  #: handler threads
    mqtt_max_payload: int = DEFAULT_MAX_PAYLOAD  #: bytes; per-route `max_payload` overrides
    mqtt_dead_letter_topic: str = "deadletter"
    #: Most bytes of a dead letter (topic + body): keep it under the broker's max_packet_size.
    mqtt_dead_letter_max_bytes: int = 60_000

    # Logging
    log_level: str = "INFO"
    log_format: str = "text"  #: `text` or `json` (one object per line)

    # Operations: metrics, health and the dashboard (support/http_server.py)
    metrics_port: int | None = None  #: /metrics, /health, /ready; None: no server
    metrics_host: str = DEFAULT_HTTP_HOST
    dashboard: bool = False  #: `--run` also serves the dashboard
    dashboard_host: str = DEFAULT_HTTP_HOST
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    #: Token the dashboard's actions (retry, forget) require; None: read-only.
    dashboard_token: str | None = field(default=None, repr=False)

    # TLS and credentials of the backing services. A CA file adds a private CA
    # to the system's trust store; a certificate and key are a client certificate.
    mqtt_tls: bool = False  #: TLS to the broker even with no other MQTT_TLS_* set
    redis_username: str | None = None  #: Redis ACL user (Redis 6+); None is `default`
    redis_tls_ca: str | None = None
    redis_tls_cert: str | None = None
    redis_tls_key: str | None = None
    db_ssl_ca: str | None = None
    db_ssl_cert: str | None = None
    db_ssl_key: str | None = None

    @property
    def mqtt_tls_enabled(self) -> bool:
        """True when MQTT_TLS or any TLS option is set: the MQTT connection then uses TLS."""
        return bool(
            self.mqtt_tls or self.mqtt_tls_ca or self.mqtt_tls_cert or self.mqtt_tls_insecure
        )

    @property
    def redis_tls_enabled(self) -> bool:
        """True when REDIS_TLS or any REDIS_TLS_* file is set: Redis is then reached over TLS."""
        return bool(self.redis_tls or self.redis_tls_ca or self.redis_tls_cert)

    @property
    def sql_server_enabled(self) -> bool:
        """True when the DB_* variables name a server: ENABLE_MYSQL=true or DB_CONNECTION=pgsql."""
        return self.enable_mysql or self.db_connection == "pgsql"

    @property
    def db_port_or_default(self) -> int:
        """DB_PORT, or the default port of DB_CONNECTION (3306 or 5432) when it is unset."""
        return self.db_port or DB_DEFAULT_PORTS[self.db_connection]

    @property
    def db_ssl_enabled(self) -> bool:
        """True when any DB_SSL_* file is set: MySQL/MariaDB is then reached over TLS."""
        return bool(self.db_ssl_ca or self.db_ssl_cert)

    @property
    def uses_embedded_broker(self) -> bool:
        """True when no MQTT_HOST is set: `--run` starts an embedded broker."""
        return self.mqtt_host is None


# Each entry: environment variable -> (field name, parser of the raw string).
_Parser = Callable[[str, str], object]
_VARIABLES: dict[str, tuple[str, _Parser]] = {
    "ENABLE_REDIS": ("enable_redis", _parse_bool),
    "REDIS_HOST": ("redis_host", lambda n, r: r.strip()),
    "REDIS_PORT": ("redis_port", lambda n, r: _parse_int(n, r, 1, 65535)),
    "REDIS_DB": ("redis_db", lambda n, r: _parse_int(n, r, 0)),
    "REDIS_PASSWORD": ("redis_password", lambda n, r: _optional(r)),
    "REDIS_TLS": ("redis_tls", _parse_bool),
    "REDIS_WAIT_REPLICAS": ("redis_wait_replicas", lambda n, r: _parse_int(n, r, 0)),
    "REDIS_WAIT_TIMEOUT_MS": ("redis_wait_timeout_ms", lambda n, r: _parse_int(n, r, 1)),
    "REDIS_SENTINELS": ("redis_sentinels", _parse_addresses),
    "REDIS_SENTINEL_MASTER": ("redis_sentinel_master", lambda n, r: _optional(r)),
    "REDIS_CLUSTER": ("redis_cluster", _parse_bool),
    "QUEUE_CONNECTION": ("queue_connection", lambda n, r: _parse_choice(n, r, QUEUE_CONNECTIONS)),
    "QUEUE_RETRY_AFTER": ("queue_retry_after", lambda n, r: _parse_int(n, r, 1)),
    "ENABLE_MYSQL": ("enable_mysql", _parse_bool),
    "DB_CONNECTION": ("db_connection", lambda n, r: _parse_choice(n, r, DB_CONNECTIONS)),
    "DB_HOST": ("db_host", lambda n, r: r.strip()),
    "DB_PORT": ("db_port", lambda n, r: _parse_int(n, r, 1, 65535) if r.strip() else None),
    "DB_NAME": ("db_name", lambda n, r: r.strip()),
    "DB_USER": ("db_user", lambda n, r: r.strip()),
    "DB_PASS": ("db_pass", lambda n, r: _optional(r)),
    "DB_URL": ("db_url", lambda n, r: _optional(r)),
    "DB_POOL_SIZE": ("db_pool_size", lambda n, r: _parse_int(n, r, 1)),
    "DB_POOL_PRE_PING": ("db_pool_pre_ping", _parse_bool),
    "SQLITE_PATH": ("sqlite_path", lambda n, r: _parse_path(r)),
    "APP_NAME": ("app_name", lambda n, r: r.strip()),
    "ROUTES_PACKAGE": ("routes_package", lambda n, r: r.strip() or "routes"),
    "JOBS_PACKAGE": ("jobs_package", lambda n, r: _parse_module_path(n, r, DEFAULT_JOBS_PACKAGE)),
    "SCHEDULE_MODULE": (
        "schedule_module",
        lambda n, r: _parse_module_path(n, r, DEFAULT_SCHEDULE_MODULE),
    ),
    "MQTT_HOST": ("mqtt_host", lambda n, r: _optional(r)),
    "MQTT_PORT": ("mqtt_port", lambda n, r: _parse_int(n, r, 1, 65535)),
    "MQTT_USERNAME": ("mqtt_username", lambda n, r: _optional(r)),
    "MQTT_PASSWORD": ("mqtt_password", lambda n, r: _optional(r)),
    "MQTT_CLIENT_ID": ("mqtt_client_id", lambda n, r: _optional(r)),
    "MQTT_PROTOCOL": ("mqtt_protocol", lambda n, r: _parse_choice(n, r, MQTT_PROTOCOLS)),
    "MQTT_TLS_CA": ("mqtt_tls_ca", lambda n, r: _optional(r)),
    "MQTT_TLS_CERT": ("mqtt_tls_cert", lambda n, r: _optional(r)),
    "MQTT_TLS_KEY": ("mqtt_tls_key", lambda n, r: _optional(r)),
    "MQTT_TLS_INSECURE": ("mqtt_tls_insecure", _parse_bool),
    "MQTT_GROUP_NAME": ("mqtt_group_name", lambda n, r: r.strip() or DEFAULT_GROUP_NAME),
    "MQTT_PERSISTENT_SESSION": ("mqtt_persistent_session", _parse_bool),
    "MQTT_SESSION_EXPIRY": ("mqtt_session_expiry", lambda n, r: _parse_int(n, r, 0)),
    "MQTT_KEEPALIVE": ("mqtt_keepalive", lambda n, r: _parse_int(n, r, 1)),
    "MQTT_MAX_INFLIGHT": ("mqtt_max_inflight", lambda n, r: _parse_int(n, r, 1, 65535)),
    "MQTT_HANDLER_RETRIES": ("mqtt_handler_retries", lambda n, r: _parse_int(n, r, 1)),
    "MQTT_HANDLER_CONCURRENCY": (
        "mqtt_handler_concurrency",
        lambda n, r: _parse_int(n, r, 1, 1024) if r.strip() else DEFAULT_HANDLER_CONCURRENCY,
    ),
    "MQTT_MAX_PAYLOAD": ("mqtt_max_payload", lambda n, r: _parse_int(n, r, 1, 268_435_455)),
    "MQTT_DEAD_LETTER_TOPIC": ("mqtt_dead_letter_topic", lambda n, r: r.strip()),
    "MQTT_DEAD_LETTER_MAX_BYTES": (
        "mqtt_dead_letter_max_bytes",
        lambda n, r: _parse_int(n, r, 1024, 268_435_455),
    ),
    "LOG_LEVEL": ("log_level", lambda n, r: _parse_choice(n, r, LOG_LEVELS, upper=True)),
    "LOG_FORMAT": ("log_format", lambda n, r: _parse_choice(n, r, LOG_FORMATS)),
    "METRICS_PORT": (
        "metrics_port",
        lambda n, r: _parse_int(n, r, 1, 65535) if r.strip() else None,
    ),
    "METRICS_HOST": ("metrics_host", lambda n, r: r.strip() or DEFAULT_HTTP_HOST),
    "DASHBOARD": ("dashboard", _parse_bool),
    "DASHBOARD_HOST": ("dashboard_host", lambda n, r: r.strip() or DEFAULT_HTTP_HOST),
    "DASHBOARD_PORT": ("dashboard_port", lambda n, r: _parse_int(n, r, 1, 65535)),
    "DASHBOARD_TOKEN": ("dashboard_token", lambda n, r: _optional(r)),
    # TLS and credentials of the backing services
    "MQTT_TLS": ("mqtt_tls", _parse_bool),
    "REDIS_USERNAME": ("redis_username", lambda n, r: _optional(r)),
    "REDIS_TLS_CA": ("redis_tls_ca", lambda n, r: _optional(r)),
    "REDIS_TLS_CERT": ("redis_tls_cert", lambda n, r: _optional(r)),
    "REDIS_TLS_KEY": ("redis_tls_key", lambda n, r: _optional(r)),
    "DB_SSL_CA": ("db_ssl_ca", lambda n, r: _optional(r)),
    "DB_SSL_CERT": ("db_ssl_cert", lambda n, r: _optional(r)),
    "DB_SSL_KEY": ("db_ssl_key", lambda n, r: _optional(r)),
}

#: Variables whose values are secrets: never shown in errors or logs.
SECRET_VARIABLES = frozenset(
    {"REDIS_PASSWORD", "DB_PASS", "DB_URL", "MQTT_PASSWORD", "DASHBOARD_TOKEN"}
)


def variable_names() -> list[str]:
    """Every environment variable the settings read, in documentation order."""
    return list(_VARIABLES)


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | Path | None = DEFAULT_DOTENV,
) -> Settings:
    """Build `Settings` from `environ` (default `os.environ`) over the `.env` file.

    Raises `ConfigError` naming the first variable that is malformed. A secret's
    value is never included in the message.
    """
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)

    values: dict[str, object] = {}
    for name, (attr, parse) in _VARIABLES.items():
        if name not in merged:
            continue
        try:
            values[attr] = parse(name, merged[name])
        except ConfigError as exc:
            if name in SECRET_VARIABLES:
                raise ConfigError(f"{name} is malformed (value hidden)") from None
            raise exc from None
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    _check_tls_files(settings)
    if settings.enable_mysql and settings.db_connection == "pgsql":
        raise ConfigError(
            "ENABLE_MYSQL=true and DB_CONNECTION=pgsql contradict each other: "
            "unset ENABLE_MYSQL to use PostgreSQL"
        )
    if settings.queue_connection == "redis" and not settings.enable_redis:
        raise ConfigError("QUEUE_CONNECTION=redis needs ENABLE_REDIS=true")
    _check_redis_topology(settings)
    if not settings.app_name:
        raise ConfigError("APP_NAME must not be empty: it names the app's MQTT session")
    if not settings.mqtt_group_name or "/" in settings.mqtt_group_name:
        raise ConfigError(
            f"MQTT_GROUP_NAME must be a non-empty name without '/', "
            f"got {settings.mqtt_group_name!r}"
        )


def _check_redis_topology(settings: Settings) -> None:
    """One line for a Sentinel setting without its partner, or Sentinel with Cluster."""
    if settings.redis_sentinels and not settings.redis_sentinel_master:
        raise ConfigError(
            "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER: the name the sentinels monitor "
            "(their `sentinel monitor <name> ...` line, e.g. mymaster)"
        )
    if settings.redis_sentinel_master and not settings.redis_sentinels:
        raise ConfigError(
            "REDIS_SENTINEL_MASTER needs REDIS_SENTINELS: the sentinels' host:port pairs"
        )
    if settings.redis_cluster and settings.redis_sentinels:
        raise ConfigError(
            "REDIS_CLUSTER and REDIS_SENTINELS exclude each other: a Redis Cluster fails over "
            "by itself; unset one of them"
        )
    if settings.redis_cluster and settings.redis_db != 0:
        raise ConfigError(
            f"REDIS_CLUSTER=true needs REDIS_DB=0 (a Redis Cluster has only database 0), "
            f"got {settings.redis_db}"
        )


#: The (certificate, key) variables of each client certificate: set both or neither.
_CLIENT_CERTIFICATES = (
    ("MQTT_TLS_CERT", "MQTT_TLS_KEY"),
    ("REDIS_TLS_CERT", "REDIS_TLS_KEY"),
    ("DB_SSL_CERT", "DB_SSL_KEY"),
)

#: Variables naming a CA, certificate or key file, which must exist when set.
_TLS_FILES = (
    "MQTT_TLS_CA",
    "REDIS_TLS_CA",
    "DB_SSL_CA",
    *(name for pair in _CLIENT_CERTIFICATES for name in pair),
)


def _check_tls_files(settings: Settings) -> None:
    """One line for a certificate without its key, a missing file, or DB_SSL_* without MySQL."""

    def value(name: str) -> object:
        return getattr(settings, _VARIABLES[name][0])

    for cert_name, key_name in _CLIENT_CERTIFICATES:
        if bool(value(cert_name)) != bool(value(key_name)):
            raise ConfigError(f"{cert_name} and {key_name} must be set together")
    for name in _TLS_FILES:
        path = value(name)
        if isinstance(path, str) and not Path(path).is_file():
            raise ConfigError(f"{name} names a file that does not exist: {path}")
    mysql_url = (settings.db_url or "").lower().startswith(("mysql", "mariadb"))
    mysql_server = settings.enable_mysql and settings.db_connection == "mysql"
    if settings.db_ssl_enabled and not (mysql_server or mysql_url):
        raise ConfigError(
            "DB_SSL_CA, DB_SSL_CERT and DB_SSL_KEY need a MySQL/MariaDB server: "
            "set ENABLE_MYSQL=true or a mysql DB_URL"
        )


def describe(settings: Settings) -> dict[str, str]:
    """A printable view of the settings with every secret masked."""
    shown: dict[str, str] = {}
    secret_attrs = {_VARIABLES[name][0] for name in SECRET_VARIABLES}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in secret_attrs and value:
            shown[f.name] = "***"
        else:
            shown[f.name] = str(value)
    return shown
