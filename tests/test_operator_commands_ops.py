"""The operator commands for deploys, alerting and bulk fixes, run as real subprocesses.

`--queue-clear`, `--queue-restart`, `--queue-monitor`, `--queue-retry` with several
ids or `--range`, `--queue-flush --hours`, `--once`, `--stop-when-empty`,
`--version`, and the progress bars of long commands (drawn on a terminal only).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from backends.sql_engine import engine_from_url
from cli import COMMANDS, project_version
from config.settings import PROJECT_ROOT
from queues.envelope import Envelope
from queues.worker_board import DatabaseWorkerBoard
from tests.driver_factories import make_driver
from tests.http_helpers import wait_for
from tests.jobs_fixture.support import main_env, run_main, start_main

#: Seconds a worker gets to notice a restart request (board reports every 2 s).
RESTART_WAIT = 15.0


def _record(queue: str, path: Path, value: int) -> str:
    return Envelope(
        job="RecordJob", data={"path": str(path), "value": value}, queue=queue
    ).to_json()


def _fail(driver: Any, queue: str, value: int) -> str:
    """One failed RecordJob (would succeed on retry); returns its failed id."""
    driver.push(queue, _record(queue, Path(os.devnull), value))
    reserved = driver.pop([queue])
    assert driver.fail(reserved, f"ValueError: boom {value}")
    failed: str = next(
        f.id for f in driver.failed_store.all(queue) if f.payload == reserved.payload
    )
    return failed


def run_in_terminal(args: list[str], env: dict[str, str], answer: str = "", timeout: float = 60):
    """Run main.py on a pseudo-terminal; (exit code, everything it wrote)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "main.py"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    output = b""
    deadline = time.monotonic() + timeout
    answered = not answer
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(main, answer.encode() + b"\n")
                answered = True
        elif process.poll() is not None:
            break
    os.close(main)
    return process.wait(timeout), output.decode(errors="replace")


@pytest.fixture
def sqlite(tmp_path: Path) -> Any:
    driver = make_driver("sqlite", tmp_path)
    yield driver, main_env("database", tmp_path), f"o-{uuid.uuid4().hex[:8]}"
    driver.close()


def test_queue_clear_asks_first_and_force_deletes_pending_delayed_and_reserved(
    sqlite: Any, tmp_path: Path
) -> None:
    driver, env, queue = sqlite
    for value in range(3):
        driver.push(queue, _record(queue, tmp_path / "x", value))
    driver.later(queue, _record(queue, tmp_path / "x", 9), 600)
    driver.pop([queue])
    failed_id = _fail(driver, queue, 7)
    refused = run_main(["--queue-clear", queue], env)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert driver.sizes(queue).pending == 2, "a refused clear deleted jobs"
    code, output = run_in_terminal(["--queue-clear", queue], env, answer="n")
    assert code == 0 and "Delete the 4 pending, delayed and reserved job(s)" in output
    assert "nothing deleted" in output and driver.sizes(queue).pending == 2
    code, output = run_in_terminal(["--queue-clear", queue], env, answer="y")
    assert code == 0 and f"deleted 4 job(s) of queue {queue}" in output
    sizes = driver.sizes(queue)
    assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)
    assert driver.failed_store.get(failed_id) is not None, "clear must keep failed jobs"
    driver.push(queue, _record(queue, tmp_path / "x", 1))
    forced = run_main(["--queue-clear", queue, "--force"], env)
    assert forced.returncode == 0 and "deleted 1 job(s)" in forced.stdout
    bad = run_main(["--queue-clear", "a:b", "--force"], env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_queue_monitor_exits_3_when_a_queue_is_longer_than_its_limit(
    sqlite: Any, tmp_path: Path
) -> None:
    driver, env, queue = sqlite
    for value in range(3):
        driver.push(queue, _record(queue, tmp_path / "x", value))
    over = run_main(["--queue-monitor", f"{queue}:2,default:0"], env)
    assert over.returncode == 3, over.stderr
    assert f"database/{queue}: 3 pending (limit 2) TOO LONG" in over.stdout
    assert "default: 0 pending (limit 0) OK" in over.stdout
    fine = run_main(["--queue-monitor", f"{queue}:3"], env)
    assert fine.returncode == 0, fine.stderr
    bad = run_main(["--queue-monitor", f"{queue}"], env)
    assert bad.returncode == 2 and "QUEUE:MAX" in bad.stderr


def test_queue_retry_takes_several_ids_or_a_range(sqlite: Any) -> None:
    driver, env, queue = sqlite
    ids = [_fail(driver, queue, value) for value in range(5)]
    result = run_main(["--queue-retry", ids[0], ids[1]], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("retried failed job") == 2
    assert {f.id for f in driver.failed_store.all(queue)} == set(ids[2:])
    numbers = sorted(int(i) for i in ids[2:])
    ranged = run_main(["--queue-retry", "--range", f"{numbers[0]}-{numbers[1]}"], env)
    assert ranged.returncode == 0, ranged.stderr
    assert "retried 2 failed job(s)" in ranged.stdout
    assert [f.id for f in driver.failed_store.all(queue)] == [str(numbers[2])]
    assert driver.sizes(queue).pending == 4
    missing = run_main(["--queue-retry", str(numbers[2]), "999999"], env)
    assert missing.returncode == 1 and "no failed job with id '999999'" in missing.stderr
    assert run_main(["--queue-retry"], env).returncode == 2
    assert run_main(["--queue-retry", "--range", "5-1"], env).returncode == 2


def test_queue_flush_hours_keeps_newer_failed_jobs(sqlite: Any) -> None:
    driver, env, queue = sqlite
    _fail(driver, queue, 1)
    kept = run_main(["--queue-flush", "--hours", "1"], env)
    assert kept.returncode == 0 and "deleted 0 failed job(s) older than 1 hours" in kept.stdout
    both = run_main(["--queue-flush", "--hours", "1", "--older-than", "1"], env)
    assert both.returncode == 2 and "not both" in both.stderr
    gone = run_main(["--queue-flush", "--hours", "0"], env)
    assert gone.returncode == 0 and "deleted 1 failed job(s)" in gone.stdout


def test_once_runs_one_job_and_stop_when_empty_drains_the_queue(
    sqlite: Any, tmp_path: Path
) -> None:
    driver, env, queue = sqlite
    out = tmp_path / "out"
    for value in range(4):
        driver.push(queue, _record(queue, out, value))
    once = run_main(["--queue-work", "--queue", queue, "--once", "--sleep", "0.1"], env)
    assert once.returncode == 0, once.stderr
    assert out.read_text().splitlines() == ["0"]
    drain = run_main(["--queue-work", "--queue", queue, "--stop-when-empty", "--sleep", "0.1"], env)
    assert drain.returncode == 0, drain.stderr
    assert out.read_text().splitlines() == ["0", "1", "2", "3"]
    assert "exiting: no job waiting" in drain.stderr
    empty = run_main(["--queue-work", "--queue", queue, "--once", "--sleep", "0.1"], env)
    assert empty.returncode == 0, "--once on an empty queue exits after its wait"


def test_workers_n_with_stop_when_empty_end_when_the_queue_is_drained(
    sqlite: Any, tmp_path: Path
) -> None:
    driver, env, queue = sqlite
    out = tmp_path / "out"
    for value in range(6):
        driver.push(queue, _record(queue, out, value))
    args = [
        "--queue-work",
        "--queue",
        queue,
        "--workers",
        "2",
        "--stop-when-empty",
        "--sleep",
        "0.2",
    ]
    result = run_main(args, env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().splitlines()) == [str(v) for v in range(6)]
    assert result.stderr.count("finished its work") == 2


def test_queue_restart_makes_running_workers_exit_and_the_supervisor_start_fresh_ones(
    sqlite: Any,
) -> None:
    _, env, queue = sqlite
    single = start_main(["--queue-work", "--queue", queue, "--sleep", "0.2"], env)
    supervised = start_main(
        ["--queue-work", "--queue", queue, "--sleep", "0.2", "--workers", "2"], env
    )
    try:
        engine = engine_from_url(f"sqlite:///{env['SQLITE_PATH']}", create_sqlite_tables=False)
        board = DatabaseWorkerBoard(engine)
        assert wait_for(lambda: len(board.workers()) == 3), "workers did not report"
        before = {w["pid"] for w in board.workers()}
        result = run_main(["--queue-restart"], env)
        assert result.returncode == 0, result.stderr
        assert "database: restart requested; 3 worker(s) running will exit" in result.stdout
        assert single.wait(RESTART_WAIT) == 0, "a restart is a planned exit"
        fresh = wait_for(
            lambda: (
                {w["pid"] for w in board.workers()}.isdisjoint(before) and len(board.workers()) == 2
            ),
            RESTART_WAIT,
        )
        assert fresh, board.workers()
        assert supervised.poll() is None, "the supervisor itself keeps running"
        engine.dispose()
    finally:
        for process in (single, supervised):
            if process.poll() is None:
                process.terminate()
            process.communicate(timeout=60)


def test_progress_bars_show_on_a_terminal_only(tmp_path: Path, redis_client: Any) -> None:
    source = make_driver("sqlite", tmp_path)
    queue = f"p-{uuid.uuid4().hex[:8]}"
    source.bulk([(queue, _record(queue, tmp_path / "x", v), 0.0) for v in range(300)])
    env = main_env("database", tmp_path, ENABLE_REDIS="true")
    code, output = run_in_terminal(["--queue-migrate", "--from", "database", "--to", "redis"], env)
    assert code == 0, output
    assert re.search(r"moving to redis: +\d+%\|.*\| \d+/300 ", output), output
    assert "moved 300 job(s) from database to redis" in output
    source.bulk([(queue, _record(queue, tmp_path / "x", v), 0.0) for v in range(5)])
    plain = run_main(["--queue-migrate", "--from", "database", "--to", "redis"], env)
    assert plain.returncode == 0 and "moving to" not in plain.stderr, "a bar in a pipe"
    source.close()


def test_version_and_every_option_described_in_help(tmp_path: Path) -> None:
    env = main_env("database", tmp_path)
    result = run_main(["--version"], env)
    assert result.returncode == 0 and result.stdout.strip() == f"mqtt-jobs {project_version()}"
    for command in COMMANDS:
        assert command.help, f"{command.flag} has no description"
        for option in command.options:
            assert option.hidden or option.help, f"{command.flag} {option.flag} has no description"
    help_text = run_main(["--help"], env).stdout
    for flag in ("--queue-clear", "--queue-restart", "--queue-monitor", "--dashboard", "--once"):
        assert flag in help_text
    assert "--queue-clear options:" in help_text and "--force" in help_text
