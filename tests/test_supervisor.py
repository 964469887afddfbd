"""`--queue-work --workers N`: N worker processes, restarted when they die, stopped on SIGTERM."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from queues import dispatch
from tests.driver_factories import make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, start_main

#: Seconds to wait for processes to appear, restart or finish jobs.
PATIENCE = 20.0


def children_of(pid: int) -> set[int]:
    """Pids whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def queue() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def test_supervisor_restarts_a_killed_worker_and_stops_all_on_sigterm(tmp_path, queue):
    driver = make_driver("sqlite", tmp_path)
    args = ["--queue-work", "--workers", "2", "--sleep", "0.2", "--queue", queue]
    supervisor = start_main(args, main_env("database", tmp_path))
    try:
        wait_for(lambda: len(children_of(supervisor.pid)) == 2, "two workers")
        first = children_of(supervisor.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                len(children_of(supervisor.pid)) == 2 and victim not in children_of(supervisor.pid)
            ),
            "the killed worker to be replaced",
        )
        out = tmp_path / "out"
        dispatch(
            jobs.RecordJob(path=str(out), value=1),
            connection=driver,
            queue=queue,
            registry=registry(),
        )
        wait_for(lambda: lines(out) == ["1"], "the job to run")
        workers = children_of(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=PATIENCE) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    driver.close()


def test_workers_that_exit_after_max_jobs_are_restarted(tmp_path, queue):
    driver = make_driver("sqlite", tmp_path)
    out = tmp_path / "out"
    for value in range(3):
        dispatch(
            jobs.RecordJob(path=str(out), value=value),
            connection=driver,
            queue=queue,
            registry=registry(),
        )
    args = ["--queue-work", "--workers", "2", "--max-jobs", "1", "--sleep", "0.2", "--queue", queue]
    supervisor = start_main(args, main_env("database", tmp_path))
    try:
        wait_for(lambda: sorted(lines(out)) == ["0", "1", "2"], "three jobs by one-job workers")
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=PATIENCE) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    _, stderr = supervisor.communicate()
    assert "processed 1 jobs (--max-jobs 1)" in stderr
    assert "restarting" in stderr
    driver.close()
