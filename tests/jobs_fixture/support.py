"""Helpers shared by the queue tests: the fixture registry and main.py subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from queues.registry import JobRegistry
from tests.conftest import REDIS_HOST, REDIS_PORT, REDIS_TEST_DB

#: Dotted name of this package, for JOBS_PACKAGE.
PACKAGE = "tests.jobs_fixture"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
MAIN = PROJECT_ROOT / "main.py"


def registry() -> JobRegistry:
    """A loaded registry of this package's jobs."""
    return JobRegistry(PACKAGE).load()


def main_env(connection: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a `main.py` child on the test Redis db or a temp SQLite file."""
    env = dict(os.environ)
    env.update(
        {
            "JOBS_PACKAGE": PACKAGE,
            "QUEUE_CONNECTION": connection,
            "ENABLE_REDIS": "true" if connection == "redis" else "false",
            "REDIS_HOST": REDIS_HOST,
            "REDIS_PORT": str(REDIS_PORT),
            "REDIS_DB": str(REDIS_TEST_DB),
            "ENABLE_MYSQL": "false",
            "DB_URL": "",
            "SQLITE_PATH": str(tmp_path / "queue.db"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_main(
    args: list[str], env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `python main.py ARGS` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, str(MAIN), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_main(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `python main.py ARGS` in the background, output captured."""
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
