"""Every command and snippet of README.md runs: the ```python runnable and ```sh runnable blocks
are executed in a copy of the project, and a block that shows a file (`# routes/devices.py`
on its first line) holds only code that file really has."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REDIS_TEST_DB
from tests.project_copy import copy_project

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: Seconds one block may run (the operator tour waits out two jobs' backoffs, about 6 s).
BLOCK_TIMEOUT = 180
#: Code blocks that are not run, by their first line, and why.
NOT_RUNNABLE = {
    "make run     # embedded MQTT broker + SQLite queue + one worker; no servers needed": (
        "`make run` serves until stopped (tests/test_make_run.py starts and stops it); "
        "`make test` is this suite"
    ),
    "mosquitto_pub -p <port from the log> -t devices/d1/telemetry -q 1 -m '{\"value\": 21.5}'": (
        "needs the port of a running `make run`"
    ),
    "docker/make-certs.sh example.org     # private CA + broker certificate in docker/certs/": (
        "needs Docker; tests/test_deployment_*.py check those files"
    ),
}
#: Variables of the settings, cleared so that a block sees only what this test sets.
SETTINGS_PREFIXES = (
    *("MQTT_", "REDIS_", "DB_", "QUEUE_", "ENABLE_", "SQLITE_", "JOBS_", "ROUTES_"),
    *("METRICS_", "DASHBOARD", "LOG_FORMAT"),
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    language: str
    runnable: bool
    code: str
    line: int  #: README line of the opening fence

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0] if self.code else ""

    @property
    def shown_file(self) -> str | None:
        """The file a python block shows (`# routes/devices.py` first), if any."""
        found = re.fullmatch(r"# ([\w/]+\.py)", self.first_line)
        return found.group(1) if found else None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.first_line[:50]})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```(\w*)([^\n]*)\n(.*?)^```$", text, flags=re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        flags = match.group(2).split()
        blocks.append(Block(match.group(1), "runnable" in flags, match.group(3), line))
    return blocks


RUNNABLE = [block for block in readme_blocks() if block.runnable]


def test_every_python_and_shell_block_is_run_or_says_why_not():
    blocks = [b for b in readme_blocks() if b.language in ("python", "sh")]
    unaccounted = [str(b) for b in blocks if not b.runnable and b.first_line not in NOT_RUNNABLE]
    assert unaccounted == [], "mark these ```python runnable / ```sh runnable, or say why not"
    assert {b.first_line for b in blocks if not b.runnable} == set(NOT_RUNNABLE)
    assert {b.language for b in RUNNABLE} == {"python", "sh"}
    assert len(RUNNABLE) >= 8


def missing_statements(
    shown: list[ast.stmt], shipped: list[ast.stmt], where: str = ""
) -> list[str]:
    """Statements of `shown` the `shipped` code lacks; a class may show part of its body,
    an import part of its names."""
    dumps = {ast.dump(statement) for statement in shipped}
    classes = {s.name: s for s in shipped if isinstance(s, ast.ClassDef)}
    imported = {
        s.module: {alias.name for alias in s.names}
        for s in shipped
        if isinstance(s, ast.ImportFrom)
    }
    missing: list[str] = []
    for statement in shown:
        if ast.dump(statement) in dumps:
            continue
        if isinstance(statement, ast.ClassDef) and statement.name in classes:
            missing += missing_statements(
                statement.body, classes[statement.name].body, f"{where}{statement.name}."
            )
            continue
        if isinstance(statement, ast.ImportFrom) and {a.name for a in statement.names} <= (
            imported.get(statement.module, set())
        ):
            continue
        missing.append(f"{where}{ast.unparse(statement).splitlines()[0]}")
    return missing


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.shown_file], ids=str)
def test_a_block_showing_a_file_holds_only_code_of_that_file(block: Block):
    assert block.shown_file is not None
    shipped = ast.parse((ROOT / block.shown_file).read_text()).body
    missing = missing_statements(ast.parse(block.code).body, shipped)
    assert missing == [], f"{block} shows code {block.shown_file} does not have"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def block_environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(settings)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_block(block: Block, copy: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.language == "sh":
        script = copy / "readme_block.sh"
        script.write_text(block.code)
        argv = ["sh", "-e", str(script)]
    elif "def test_" in block.code:
        script = copy / "tests" / "app" / f"test_readme_block_{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        script = copy / f"readme_block_{block.line}.py"
        script.write_text(block.code)
        argv = [sys.executable, str(script)]
    return subprocess.run(
        argv, cwd=copy, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.language == "python"], ids=str)
def test_each_python_block_runs_with_no_server_at_all(block: Block, tmp_path: Path):
    dead = str(closed_port())  # nothing answers there: a block that reached for a server fails
    env = block_environment(
        MQTT_HOST="127.0.0.1",
        MQTT_PORT=dead,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=dead,
        DB_HOST="127.0.0.1",
        DB_PORT=dead,
    )
    result = run_block(block, copy_project(tmp_path / "project"), env)
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
    if "pytest" in result.args:
        assert re.search(r"^\d+ passed", result.stdout, flags=re.M), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.language == "sh"], ids=str)
def test_each_shell_block_runs(block: Block, tmp_path: Path, redis_client: object):
    env = block_environment(
        ENABLE_REDIS="true",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT="6379",
        REDIS_DB=str(REDIS_TEST_DB),
    )
    result = run_block(block, copy_project(tmp_path / "project"), env)
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
