"""--make-job and --make-route: skeletons whose tests pass as written, lint- and type-clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from support.scaffold import ScaffoldError, make_job, make_route, snake_case
from tests.project_copy import copy_project

#: Seconds each tool may take on the copy.
TOOL_TIMEOUT = 240


def run(copy: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=copy, capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.mark.slow
def test_make_job_and_make_route_write_skeletons_whose_tests_pass(project_copy: Path) -> None:
    job = run(project_copy, "main.py", "--make-job", "SendReport")
    assert job.returncode == 0, job.stderr
    assert job.stdout.strip() == (
        "created app/jobs/send_report.py and tests/app/test_send_report.py"
    )
    route = run(project_copy, "main.py", "--make-route", "cold_rooms")
    assert route.returncode == 0, route.stderr
    assert route.stdout.strip() == (
        "created routes/cold_rooms.py and tests/app/test_cold_rooms_routes.py"
    )
    written = [
        "app/jobs/send_report.py",
        "tests/app/test_send_report.py",
        "routes/cold_rooms.py",
        "tests/app/test_cold_rooms_routes.py",
    ]
    generated_tests = [path for path in written if path.startswith("tests/")]
    tests = run(project_copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *generated_tests)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout
    lint = run(project_copy, "-m", "ruff", "check", "--no-cache", *written)
    assert lint.returncode == 0, lint.stdout
    style = run(project_copy, "-m", "ruff", "format", "--check", "--no-cache", *written)
    assert style.returncode == 0, style.stdout
    types = run(project_copy, "-m", "mypy", "--cache-dir", str(project_copy / ".mypy"), *written)
    assert types.returncode == 0, types.stdout
    listed = run(project_copy, "main.py", "--routes")
    assert "cold_rooms/{device_id}/event" in listed.stdout


def test_an_existing_file_is_never_overwritten(project_copy: Path) -> None:
    first = run(project_copy, "main.py", "--make-job", "Twice")
    assert first.returncode == 0, first.stderr
    again = run(project_copy, "main.py", "--make-job", "Twice")
    assert again.returncode == 2
    assert again.stderr.strip() == "error: app/jobs/twice.py exists already; nothing was written"


@pytest.mark.parametrize(
    ("make", "name", "problem"),
    [
        (make_job, "send_report", "--make-job needs a class name such as SendReport"),
        (make_job, "Send Report", "--make-job needs a class name"),
        (make_route, "Fleet", "--make-route needs a module name such as fleet"),
        (make_route, "class", "--make-route needs a module name"),
        (make_route, "../evil", "--make-route needs a module name"),
    ],
)
def test_an_unusable_name_is_refused_and_nothing_is_written(
    make, name: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ScaffoldError, match=problem):
        make(name, Settings(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_class_names_become_module_names():
    assert snake_case("SendReport") == "send_report"
    assert snake_case("HTTPPing2") == "httpping2"
