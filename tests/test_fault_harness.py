"""The fault harness itself cannot rot: one scenario of each family runs at a tiny scale
and holds its expectation (no job lost, nothing unexplained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults.common import SCALE_ENV
from benchmarks.faults.scenarios import all_cases
from tests.conftest import MQTT_HOST, need_binaries, need_service

pytestmark = pytest.mark.slow

#: One (scenario prefix, driver) per family, the cheapest of each.
ONE_PER_FAMILY = [
    ("1 ", "redis"),
    ("4 ", "sqlite"),
    ("5 ", "redis"),
    ("3 ", "sqlite"),
    ("7 ", "mariadb"),
    ("6 ", "mariadb"),
    ("8 ", "sqlite"),
    ("9 ", "sqlite"),
]


@pytest.mark.parametrize(("prefix", "driver"), ONE_PER_FAMILY)
def test_each_scenario_family_runs_and_keeps_its_promise(
    prefix: str, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_binaries("redis-server", "mosquitto")
    if driver == "mariadb":
        need_service("MariaDB", MQTT_HOST, 3306)
    monkeypatch.setenv(SCALE_ENV, "0.05")
    [case] = [c for c in all_cases() if c.scenario.startswith(prefix) and c.driver == driver][:1]
    outcome = case.run(tmp_path)
    assert outcome.acknowledged > 0, "the scenario acknowledged nothing"
    assert outcome.verdict != "FAIL", f"{outcome.scenario} on {driver}: {outcome.explanation}"
    assert outcome.lost == 0 or outcome.verdict == "known"
