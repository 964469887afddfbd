"""The sync connection: dispatch() runs the job at once, with its retries and failed() hook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import load_settings
from queues import connections, dispatch, dispatch_many
from queues.connections import SYNC_HAS_NO_QUEUE
from queues.job import Job
from queues.sync import sync_queue
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def sync_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """QUEUE_CONNECTION=sync, as a `.env` or the environment would set it."""
    monkeypatch.setattr(connections, "_settings", None)  # restored after the test
    connections.configure(
        load_settings(
            {"QUEUE_CONNECTION": "sync", "SQLITE_PATH": str(tmp_path / "q.db")}, dotenv_path=None
        )
    )
    yield
    connections.reset()


def test_queue_connection_sync_runs_the_job_before_dispatch_returns(tmp_path, sync_settings):
    out = tmp_path / "out"
    job_id = dispatch(jobs.RecordJob(path=str(out), value=7), delay=60, registry=registry())
    assert lines(out) == ["7"]  # ran now: the delay is ignored
    assert len(job_id) == 36


def test_a_failing_job_is_retried_at_once_then_failed_is_called_and_its_error_raised(tmp_path):
    out = tmp_path / "attempts"
    started = time.monotonic()
    with sync_queue(), pytest.raises(ValueError, match="boom 5"):
        dispatch(jobs.FailingJob(path=str(out), value=5), registry=registry())
    # FailingJob: max_tries 3, backoff [0.2, 0.5]; the backoff is skipped, not slept.
    assert len(lines(out)) == 3
    assert time.monotonic() - started < 0.7
    assert lines(Path(f"{out}.failed")) == ["ValueError: boom 5"]


def test_a_flaky_job_succeeds_on_a_retry_and_sees_its_attempt_number(tmp_path):
    out = tmp_path / "flaky"
    with sync_queue():
        dispatch(jobs.FlakyJob(path=str(out), succeed_on=3), registry=registry())
    assert lines(out) == ["attempt"] * 3
    assert lines(Path(f"{out}.done")) == ["ok"]


def test_the_job_is_rebuilt_from_json_with_its_id_attempts_and_models(tmp_path):
    seen: list[tuple[object, ...]] = []

    class Spy(Job):
        point: jobs.Point

        def handle(self) -> None:
            seen.append((self.job_id, self.attempts, self.point, self.data))

    reg = registry()
    reg.register(Spy)
    with sync_queue():
        job_id = dispatch(Spy(point=jobs.Point(x=1)), registry=reg)
    assert seen == [(job_id, 1, jobs.Point(x=1), {"point": {"x": 1.0, "y": 0.0}})]


def test_async_handle_runs_even_from_inside_a_running_event_loop(tmp_path):
    out = tmp_path / "async"
    with sync_queue():
        dispatch(jobs.AsyncJob(path=str(out), seconds=0, value=1), registry=registry())

        async def from_a_coroutine() -> None:
            dispatch(jobs.AsyncJob(path=str(out), seconds=0, value=2), registry=registry())

        asyncio.run(from_a_coroutine())
    assert lines(out) == ["async 1", "async 2"]


def test_dispatch_many_runs_in_order_and_stops_at_the_first_failure(tmp_path):
    out = tmp_path / "many"
    batch = [
        jobs.RecordJob(path=str(out), value=1),
        jobs.FailingJob(path=str(tmp_path / "f"), value=2),
        jobs.RecordJob(path=str(out), value=3),
    ]
    with sync_queue(), pytest.raises(ValueError):
        dispatch_many(batch, registry=registry())
    assert lines(out) == ["1"]


def test_the_sync_queue_still_refuses_data_that_is_not_json(tmp_path):
    with sync_queue(), pytest.raises(TypeError, match="argument 'value'"):
        dispatch(jobs.RecordJob(path=str(tmp_path / "x"), value=object()), registry=registry())
    assert not (tmp_path / "x").exists()


def test_operator_commands_that_need_a_queue_refuse_sync_in_one_line(tmp_path):
    env = main_env("database", tmp_path, QUEUE_CONNECTION="sync")
    for argv in (
        ["--queue-work", "--max-jobs", "1"],
        ["--dispatch", "RecordJob", "--data", '{"path": "p", "value": 1}'],
    ):
        result = run_main(argv, env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {SYNC_HAS_NO_QUEUE}"]
    status = run_main(["--queue-status"], env)  # reads the real queues: still works
    assert status.returncode == 0, status.stderr
    explicit = run_main(["--queue-status", "--connection", "database"], env)
    assert explicit.returncode == 0 and "default" in explicit.stdout
