"""core.discovery and `main.py --routes`: every route module merged into one table."""

from __future__ import annotations

import argparse
import json

import pytest

from config.settings import Settings
from core import routes_table
from core.discovery import RouteDiscoveryError, load_routes
from core.message import Message, PayloadError


def test_load_routes_merges_every_module_including_sub_packages():
    router = load_routes("tests.fixture_routes")
    patterns = sorted(r.pattern for r in router.routes())
    assert patterns == ["alerts/#", "devices/{device_id}/commands", "devices/{device_id}/telemetry"]
    import tests.fixture_routes.helpers as helpers

    assert helpers.IMPORTED is True


def test_merged_router_keeps_each_module_middleware_and_dispatches():
    from tests.fixture_routes import devices

    devices.received.clear()
    router = load_routes("tests.fixture_routes")
    assert router.dispatch(Message("devices/d1/commands", b'{"cmd": "reboot"}')) is True
    assert devices.received == [("command", {"device_id": "d1"})]
    with pytest.raises(PayloadError, match="missing required key"):
        router.dispatch(Message("devices/d1/commands", b"{}"))
    found = router.match("devices/1/commands")
    assert found is not None
    names = [type(m).__name__ for m in router.middleware_for(found.route)]
    assert names == ["Stamp", "RequestLogging", "JsonValidation"]


def test_the_packages_all_routes_middleware_runs_first_for_every_modules_routes():
    import tests.fixture_routes as package

    package.stamped.clear()
    router = load_routes("tests.fixture_routes")
    assert router.dispatch(Message("alerts/a/b", b""))  # nested module, no middleware of its own
    assert router.dispatch(Message("devices/d1/telemetry", b""))
    assert package.stamped == ["alerts/a/b", "devices/d1/telemetry"]
    from tests.fixture_routes import devices

    module_route = devices.router.routes()[0]  # a module's own router is left as it was
    assert [type(m).__name__ for m in devices.router.middleware_for(module_route)] == [
        "RequestLogging"
    ]


def test_all_routes_middleware_that_is_not_a_list_is_an_error_naming_it(monkeypatch):
    import tests.fixture_routes as package

    monkeypatch.setattr(package, "all_routes_middleware", "RequestLogging")
    with pytest.raises(RouteDiscoveryError, match=r"fixture_routes\.all_routes_middleware must be"):
        load_routes("tests.fixture_routes")


def test_import_error_names_the_route_module():
    with pytest.raises(
        RouteDiscoveryError, match=r"tests\.fixture_routes_broken\.bad_module.*boom"
    ):
        load_routes("tests.fixture_routes_broken")


def test_two_modules_routing_one_filter_is_an_error_naming_the_module():
    with pytest.raises(
        RouteDiscoveryError, match=r"fixture_routes_duplicate\.second.*sensors/\+/value"
    ):
        load_routes("tests.fixture_routes_duplicate")


def test_missing_routes_package_is_an_error_naming_it():
    with pytest.raises(RouteDiscoveryError, match=r"tests\.no_such_routes"):
        load_routes("tests.no_such_routes")


def run_routes_command(capsys, package: str, as_json: bool) -> str:
    settings = Settings(mqtt_group_name="workers", routes_package=package)
    assert routes_table.routes_command(argparse.Namespace(json=as_json), settings) == 0
    out: str = capsys.readouterr().out
    return out


def test_routes_table_shows_subscription_qos_handler_and_middleware(capsys):
    out = run_routes_command(capsys, "tests.fixture_routes", as_json=False)
    lines = out.splitlines()
    assert lines[0].split() == ["pattern", "subscription", "qos", "shared", "handler", "middleware"]
    telemetry = next(line for line in lines if "telemetry" in line)
    assert "$share/workers/devices/+/telemetry" in telemetry
    assert "tests.fixture_routes.devices.telemetry" in telemetry and "RequestLogging" in telemetry
    command = next(line for line in lines if "commands" in line)
    assert "RequestLogging, JsonValidation" in command


def test_routes_json_lists_every_route(capsys):
    out = run_routes_command(capsys, "tests.fixture_routes", as_json=True)
    rows = {row["pattern"]: row for row in json.loads(out)}
    assert rows["devices/{device_id}/telemetry"]["subscription"] == (
        "$share/workers/devices/+/telemetry"
    )
    assert rows["devices/{device_id}/commands"]["qos"] == 2
    assert rows["alerts/#"]["shared"] is False and rows["alerts/#"]["middleware"] == ["Stamp"]


def test_routes_table_says_when_there_are_no_routes(capsys):
    out = run_routes_command(capsys, "tests.fixture_routes_empty", as_json=False)
    assert "No routes were found in" in out
    assert run_routes_command(capsys, "tests.fixture_routes_empty", True).strip() == "[]"
