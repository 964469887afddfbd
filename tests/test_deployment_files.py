"""docker-compose.yml and .env.example stay in step with the settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from config.settings import load_settings, variable_names

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_env_example_lists_every_setting_and_loads_cleanly() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^([A-Z_0-9]+)=", text, flags=re.M)
    assert sorted(listed) == sorted(variable_names())
    load_settings({}, dotenv_path=ROOT / ".env.example")


def test_compose_has_the_whole_system_and_scalable_workers() -> None:
    services = _compose()["services"]
    assert {"mosquitto", "redis", "mariadb", "app", "worker"} <= set(services)
    for name in ("app", "worker"):
        assert "container_name" not in services[name], f"{name} must stay scalable"
        assert services[name]["build"] == "."
    for name in ("mosquitto", "redis", "mariadb"):
        assert "healthcheck" in services[name], f"{name} needs a health check"
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["command"][:3] == ["python", "main.py", "--queue-work"]


def test_compose_environment_names_only_real_settings() -> None:
    known = set(variable_names())
    for name, service in _compose()["services"].items():
        for variable in service.get("environment", {}) or {}:
            if name in ("app", "worker", "migrate"):
                assert variable in known, f"{name} sets unknown variable {variable}"


def test_mosquitto_config_keeps_queued_messages_and_nodelay() -> None:
    conf = (ROOT / "docker" / "mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", conf, flags=re.M)
    queued = re.search(r"^max_queued_messages (\d+)$", conf, flags=re.M)
    assert queued and int(queued.group(1)) > 1000
    assert re.search(r"^set_tcp_nodelay true$", conf, flags=re.M)
