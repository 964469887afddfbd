"""The deployment files: compose-spec valid, secure by default, in step with the settings.

No Docker engine is needed: docker-compose.yml is validated against the
compose-spec JSON schema that check-jsonschema ships, and the Mosquitto
configuration and ACL are parsed and checked rule by rule. The broker's rules are
also run for real in tests/test_deployment_broker.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from config.settings import load_settings, variable_names
from queues.worker import GRACE_PERIOD

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = ROOT / "docker" / "mosquitto"
#: Variables docker-compose.yml interpolates that are not settings of the app.
COMPOSE_ONLY_VARIABLES = {"MARIADB_ROOT_PASSWORD"}
#: Services whose secrets must come from .env, never from a default.
PASSWORD_VARIABLE = re.compile(r"(PASSWORD|PASS|AUTH)$")
#: `${NAME:?message}`: compose stops with the message when NAME is unset or empty.
REQUIRED = re.compile(r"^\$\{([A-Z_0-9]+):\?[^}]+\}$")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _compose_variables() -> set[str]:
    text = (ROOT / "docker-compose.yml").read_text()
    return set(re.findall(r"(?<!\$)\$\{([A-Z_0-9]+)", text))


def _directives(path: Path) -> list[tuple[str, str]]:
    """(keyword, value) of each non-comment line of a mosquitto config or ACL file."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            keyword, _, value = line.strip().partition(" ")
            pairs.append((keyword, value.strip()))
    return pairs


# -- docker-compose.yml ----------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_compose_schema_check_catches_a_wrong_file() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    broken = _compose()
    broken["services"]["worker"]["stop_grace_period"] = ["45s"]
    broken["services"]["app"]["healthchek"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compose_states_the_compose_version_it_needs() -> None:
    header = (ROOT / "docker-compose.yml").read_text().split("\n\n")[0]
    assert re.search(r"Docker Compose v2\.\d+\.\d+ or newer", header)


def test_compose_has_the_whole_system_and_scalable_workers() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "mosquitto-init", "redis", "mariadb", "app", "worker"} <= set(services)
    for name in ("app", "worker"):
        assert "container_name" not in services[name], f"{name} must stay scalable"
        assert services[name]["build"] == "."
    for name in ("mosquitto", "redis", "mariadb", "app", "worker"):
        assert "healthcheck" in services[name], f"{name} needs a health check"
    assert services["worker"]["command"][:3] == ["python", "main.py", "--queue-work"]


def test_app_and_worker_health_checks_ask_ready_on_the_metrics_port() -> None:
    compose = _compose()
    port = compose["x-app-env"]["METRICS_PORT"]
    for name in ("app", "worker"):
        check = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/ready" in check, check
    settings = load_settings(
        {k: v for k, v in compose["x-app-env"].items() if "${" not in str(v)}, dotenv_path=None
    )
    assert settings.metrics_port == int(port) and settings.metrics_host == "0.0.0.0"


def test_every_secret_is_required_and_has_no_default() -> None:
    compose = _compose()
    seen = set()
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if PASSWORD_VARIABLE.search(variable):
                assert REQUIRED.match(str(value)), f"{name}: {variable} must be ${{VAR:?message}}"
                seen.add(variable)
    assert {"MQTT_PASSWORD", "REDIS_PASSWORD", "DB_PASS", "MARIADB_ROOT_PASSWORD"} <= seen
    assert REQUIRED.match(compose["x-app-env"]["MQTT_GROUP_NAME"]), "the $share group is a secret"
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_the_app_never_uses_a_database_root_account() -> None:
    compose = _compose()
    assert compose["x-app-env"]["DB_USER"] not in ("root", "${DB_USER}")
    mariadb = compose["services"]["mariadb"]
    assert mariadb["environment"]["MARIADB_ROOT_HOST"] == "localhost"
    assert "MARIADB_USER" not in mariadb["environment"], "the image's user gets ALL privileges"
    init = [v for v in mariadb["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert init == ["./docker/mariadb/10-app-user.sh:/docker-entrypoint-initdb.d/10-app-user.sh:ro"]


def test_redis_requires_the_password_the_app_uses() -> None:
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "exec docker-entrypoint.sh redis-server" in command, "keep the image's privilege drop"
    assert redis["environment"]["REDIS_PASSWORD"] == _compose()["x-app-env"]["REDIS_PASSWORD"]


def test_only_the_brokers_tls_port_is_published_and_backends_are_internal() -> None:
    compose = _compose()
    published = {
        name: service["ports"]
        for name, service in compose["services"].items()
        if "ports" in service
    }
    assert published == {"mosquitto": ["8883:8883"]}
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("redis", "mariadb"):
        assert compose["services"][name]["networks"] == ["backend"]


def test_stop_grace_period_outlasts_the_workers_grace_period() -> None:
    services = _compose()["services"]
    for name in ("app", "worker"):
        period = re.fullmatch(r"(\d+)s", services[name]["stop_grace_period"])
        assert period, f"{name}: stop_grace_period in seconds, like 45s"
        assert int(period.group(1)) > GRACE_PERIOD + 5, f"{name} would be killed mid-job"


def test_images_are_pinned_to_a_minor_version() -> None:
    images = [s["image"] for s in _compose()["services"].values() if "image" in s]
    images += re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert images
    for image in images:
        assert re.fullmatch(r"[a-z0-9./-]+:\d+\.\d+[\w.-]*", image), f"{image} is not pinned"


def test_compose_environment_names_only_real_settings() -> None:
    known = set(variable_names())
    compose = _compose()
    for variable in compose["x-app-env"]:
        assert variable in known, f"the app gets unknown variable {variable}"


def test_env_example_lists_every_setting_and_compose_variable_and_loads_cleanly() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^([A-Z_0-9]+)=", text, flags=re.M)
    assert sorted(listed) == sorted(set(variable_names()) | COMPOSE_ONLY_VARIABLES)
    assert _compose_variables() <= set(listed), "compose reads variables .env.example omits"
    assert _compose_variables() >= COMPOSE_ONLY_VARIABLES
    load_settings({}, dotenv_path=ROOT / ".env.example")


# -- Dockerfile and .dockerignore --------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a pattern matches the path or a parent folder."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates)
        if hit:
            ignored = not negate
    return ignored


def test_the_image_gets_the_app_but_no_tests_benchmarks_or_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    shipped = [path for path in tracked if not _ignored(path, patterns)]
    for prefix in ("tests/", "benchmarks/", "docker/", ".ci/"):
        assert not [p for p in shipped if p.startswith(prefix)], f"{prefix} goes into the image"
    for secret in (".env", "docker/certs/ca.key", "docker/secrets/mqtt-devices"):
        assert _ignored(secret, patterns), f"{secret} would go into the image"
    for needed in ("main.py", "requirements.txt", "core/mqtt.py", "queues/worker.py", "routes"):
        assert any(p == needed or p.startswith(needed + "/") for p in shipped), needed
    assert "COPY . ." in (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER app$", (ROOT / "Dockerfile").read_text(), flags=re.M)


# -- Mosquitto ---------------------------------------------------------------------


def test_mosquitto_requires_passwords_and_an_acl_on_every_listener() -> None:
    conf = dict(_directives(MOSQUITTO / "mosquitto.conf"))
    assert conf["per_listener_settings"] == "false", "one set of auth rules for all listeners"
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == "/mosquitto/auth/passwords"
    assert conf["acl_file"] == "/mosquitto/auth/acl"


def test_mosquitto_plain_listener_is_compose_internal_and_tls_listener_has_certificates() -> None:
    directives = _directives(MOSQUITTO / "mosquitto.conf")
    listeners = [value for keyword, value in directives if keyword == "listener"]
    assert listeners == ["1883", "8883"]
    tls_block = directives[directives.index(("listener", "8883")) :]
    tls = dict(tls_block)
    assert tls["certfile"] == "/mosquitto/auth/server.crt"
    assert tls["keyfile"] == "/mosquitto/auth/server.key"
    mosquitto = _compose()["services"]["mosquitto"]
    assert mosquitto["ports"] == ["8883:8883"], "plain 1883 must not be published"


def test_mosquitto_limits_packets_and_saves_state_every_second() -> None:
    conf = dict(_directives(MOSQUITTO / "mosquitto.conf"))
    assert 0 < int(conf["max_packet_size"]) <= 1024 * 1024
    assert conf["persistence"] == "true"
    assert conf["autosave_on_changes"] == "false", "autosave_interval counts seconds"
    assert int(conf["autosave_interval"]) <= 1
    assert int(conf["max_queued_messages"]) > 1000
    assert conf["set_tcp_nodelay"] == "true"


def test_mosquitto_acl_scopes_each_device_to_its_own_prefix() -> None:
    rules = _directives(MOSQUITTO / "acl")
    user = None
    anonymous_rules: list[str] = []
    patterns: list[str] = []
    users: dict[str, list[str]] = {}
    for keyword, value in rules:
        if keyword == "user":
            user = value
            users[user] = []
        elif keyword == "pattern":
            patterns.append(value)
        elif keyword == "topic":
            (users[user] if user else anonymous_rules).append(value)
    assert anonymous_rules == [], "rules before any `user` line apply to anonymous clients"
    assert patterns, "devices need a pattern rule"
    for pattern in patterns:
        _access, topic = pattern.split(" ", 1)
        levels = topic.split("/")
        first_wildcard = next(i for i, level in enumerate([*levels, "#"]) if level in ("+", "#"))
        assert "%u" in levels[:first_wildcard], f"pattern {pattern!r} is not scoped to %u"
        assert not topic.startswith(("deadletter", "$", "#", "+")), pattern
    assert set(users) == {"app", "healthcheck"}
    assert "read devices/#" in users["app"] and "write devices/#" in users["app"]
    assert "readwrite deadletter/#" in users["app"]
    assert users["healthcheck"] == ["read $SYS/broker/uptime"]


def test_compose_mounts_what_the_broker_config_names() -> None:
    services = _compose()["services"]
    init = services["mosquitto-init"]
    assert services["mosquitto"]["depends_on"]["mosquitto-init"] == {
        "condition": "service_completed_successfully"
    }
    script = (MOSQUITTO / "init-auth.sh").read_text()
    for name in ("passwords", "acl", "server.crt", "server.key", "healthcheck.pw"):
        assert name in script, f"init-auth.sh does not write {name}"
    assert "mosquitto-auth:/mosquitto/auth:ro" in services["mosquitto"]["volumes"]
    assert "mosquitto-auth:/mosquitto/auth" in init["volumes"]
