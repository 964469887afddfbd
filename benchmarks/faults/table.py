"""The printed table of a harness run and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.faults.common import Outcome

#: Where `python -m benchmarks.faults` writes its rows.
RESULTS = Path(__file__).resolve().parents[1] / "results" / "faults.json"
COLUMNS = ("scenario", "driver", "variant", "published", "acknowledged", "queued", "run", "lost",
           "duplicated", "verdict")  # fmt: skip
HEADERS = (
    "scenario",
    "driver",
    "variant",
    "publ",
    "acked",
    "queued",
    "run",
    "lost",
    "dup",
    "verdict",
)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def format_table(rows: list[Outcome]) -> str:
    """One line per row, aligned, each followed by its explanation."""
    cells = [[_cell(getattr(row, column)) for column in COLUMNS] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row, cell in zip(rows, cells, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)))
        lines.append(f"    {row.seconds:.1f} s; {row.explanation or row.expectation}")
    return "\n".join(lines)


def write_results(rows: list[Outcome], scale: float, seconds: float, path: Path = RESULTS) -> None:
    """Write the rows with the scale and duration as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "scale": scale,
        "seconds": round(seconds, 1),
        "rows": [row.as_dict() for row in rows],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def read_results(path: Path = RESULTS) -> dict[str, Any]:
    """The JSON a previous run wrote; SystemExit naming the file and the fix if absent."""
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `make faults` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
