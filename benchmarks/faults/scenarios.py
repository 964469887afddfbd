"""Every scenario family's cases, in the issue's priority order."""

from __future__ import annotations

from benchmarks.faults import (
    app_restart,
    backend_outage,
    broker_kill,
    load,
    poison,
    sql_kill,
    worker_kill,
)
from benchmarks.faults.common import Case

__all__ = ["FAMILIES", "Case", "all_cases", "scenario_names"]


#: The families in the order they run; each module has SCENARIOS and `cases()`.
FAMILIES = (worker_kill, app_restart, broker_kill, backend_outage, sql_kill, poison, load)


def scenario_names() -> dict[str, str]:
    """Every scenario the harness defines, with its expectation."""
    names: dict[str, str] = {}
    for family in FAMILIES:
        names.update(family.SCENARIOS)
    return names


def all_cases() -> list[Case]:
    """Every case, family by family."""
    return [case for family in FAMILIES for case in family.cases()]
