"""`make typecheck` holds the framework to mypy --strict, not a new user's untyped app code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.project_copy import copy_project

#: Seconds mypy may take on the copy (a cold run takes about ten on the CI machine).
MYPY_TIMEOUT = 240

UNTYPED_ROUTE = """\
from core.router import Router
from queues import Job, dispatch

router = Router()


class Shout(Job):
    def handle(self):
        print(self.text.upper())


@router.on("shout/{who}")
def shout(message):
    dispatch(Shout(text=message.params["who"]))


def helper(value, default=None):
    return value or default
"""

UNTYPED_TEST = """\
from testing import TestClient, fake_queue


def test_shout(tmp_path):
    with fake_queue() as queue:
        TestClient("routes").publish("shout/me", b"")
    assert queue.jobs
"""


@pytest.mark.slow
def test_untyped_routes_jobs_and_app_tests_pass_the_typecheck_that_framework_code_fails(
    tmp_path: Path,
) -> None:
    copy_project(tmp_path)
    (tmp_path / "routes" / "shouting.py").write_text(UNTYPED_ROUTE)
    (tmp_path / "app" / "jobs" / "shouting.py").write_text(UNTYPED_ROUTE.replace("Shout", "Yell"))
    (tmp_path / "tests" / "app" / "test_shouting.py").write_text(UNTYPED_TEST)
    (tmp_path / "core" / "shouting.py").write_text(UNTYPED_ROUTE)  # the framework: strict
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "routes/shouting.py",
            "app/jobs/shouting.py",
            "tests/app/test_shouting.py",
            "core/shouting.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=MYPY_TIMEOUT,
    )
    flagged = set(re.findall(r"^([\w/]+\.py):\d+: error", result.stdout, flags=re.M))
    assert flagged == {"core/shouting.py"}, result.stdout + result.stderr
    assert "Function is missing a type annotation" in result.stdout
