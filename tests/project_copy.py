"""A copy of the project in a temporary folder, for tests that run its tools or write into it."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The project's code and configuration: enough to run main.py, pytest, ruff and mypy.
PROJECT_FILES = (
    "app",
    "routes",
    "core",
    "queues",
    "backends",
    "support",
    "config",
    "testing",
    "main.py",
    "cli.py",
    "pyproject.toml",
    "tests/__init__.py",
    "tests/app",
)


def copy_project(target: Path) -> Path:
    """Copy `PROJECT_FILES` (no caches, no `.venv`, no `.git`) into `target`; return it.

    The copy's own main.py, settings and `storage/` are used when run from it:
    nothing it does reaches this checkout.
    """
    for name in PROJECT_FILES:
        source, copied = ROOT / name, target / name
        copied.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, copied, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copied)
    (target / "storage").mkdir(exist_ok=True)
    return target
