"""README's "Delivery guarantees" table is the fault harness's: it names only scenarios
the harness defines, covers both paths on every driver, and is what `--readme` writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.faults.common import DRIVERS
from benchmarks.faults.readme import BEGIN, END, GUARANTEES, INTAKE, JOBS, rewrite_readme, section
from benchmarks.faults.scenarios import scenario_names

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    assert 0 <= start < end, "README lacks the generated delivery-guarantee table's markers"
    return text[start:end]


def test_the_readme_table_names_only_scenarios_the_harness_defines() -> None:
    named = set(re.findall(r"\*\*(.+?)\*\*", _section(README.read_text())))
    assert named, "the table names no scenario"
    assert named <= set(scenario_names()), f"unknown scenarios: {named - set(scenario_names())}"


def test_the_table_has_both_paths_on_every_driver() -> None:
    assert {(g.path, g.driver) for g in GUARANTEES} == {
        (path, driver) for path in (INTAKE, JOBS) for driver in DRIVERS
    }
    for guarantee in GUARANTEES:
        assert set(guarantee.scenarios) <= set(scenario_names())


def test_readme_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{BEGIN}\nold table\n{END}\nafter\n")
    results = tmp_path / "faults.json"
    row = {"scenario": "1 worker SIGKILL", "driver": "redis", "acknowledged": 10, "lost": 0,
           "duplicated": 1, "verdict": "pass"}  # fmt: skip
    results.write_text(json.dumps({"scale": 0.1, "seconds": 5, "rows": [row]}))
    rewrite_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n")
    assert "old table" not in text
    assert "**1 worker SIGKILL**: 10 acked, 0 lost, 1 twice (pass)" in text
    assert section({"scale": 0.1, "seconds": 5, "rows": [row]}) in text
