"""Worker limits that hold: --memory checked at start, --max-time waits, default queues."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from queues import Job, dispatch
from queues.envelope import Envelope
from queues.registry import JobRegistry
from queues.worker import Worker
from tests.driver_factories import driver_for, make_driver
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import main_env, registry, run_main
from tests.test_operator_cli import one_error_line


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_memory_limit_below_a_fresh_workers_own_size_is_refused_at_start(
    workers: str, tmp_path: Path
) -> None:
    result = run_main(
        ["--queue-work", "--memory", "1", "--workers", workers, "--max-time", "5"],
        main_env("database", tmp_path),
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: --memory 1 MB is below what a worker uses right after start")


@pytest.mark.parametrize("name", ["redis", "sqlite"])
def test_max_time_ends_the_wait_for_a_job_at_the_deadline(name: str, tmp_path: Path) -> None:
    driver = make_driver(name, tmp_path)
    queue = f"t-{uuid.uuid4().hex[:10]}"
    late = Envelope(job="RecordJob", data={"path": str(tmp_path / "late"), "value": 1}, queue=queue)
    timer = threading.Timer(1.6, lambda: driver.push(queue, late.to_json()))
    try:
        worker = Worker(driver, [queue], sleep=3.0, max_time=1.0, handle_signals=False,
                        registry=registry())  # fmt: skip
        timer.start()
        started = time.monotonic()
        assert worker.run() == 0
        ran = time.monotonic() - started
        timer.join()
        assert ran < 1.5, f"a --max-time 1 worker waited {ran:.2f} s"
        assert driver.sizes(queue).pending == 1, "no job was taken past the deadline"
        assert lines(tmp_path / "late") == []
    finally:
        timer.cancel()
        driver.close()


def test_default_queues_are_the_registered_classes_queues_in_registry_order() -> None:
    class Alpha(Job):
        queue = "zeta"

    class Beta(Job):
        pass  # inherits "default"

    class Gamma(Job):
        queue = "eta"

    reg = JobRegistry("tests.jobs_fixture")
    for cls in (Gamma, Beta, Alpha):
        reg.register(cls)
    reg._loaded = True  # only these classes, not the package
    assert reg.queues() == ["zeta", "eta", "default"]

    class Declared(Job):
        queue = "default"  # declared, so it keeps its place

    reg.register(Declared)
    assert reg.queues() == ["zeta", "default", "eta"]
    assert registry().queues()[-1] == "default" and "fleet" in registry().queues()


@pytest.mark.parametrize("connection", ["redis", "database"])
def test_a_worker_without_queue_works_every_registered_queue(
    connection: str, tmp_path: Path
) -> None:
    driver = driver_for(connection, tmp_path)
    out = tmp_path / "fleet"
    try:
        dispatch(jobs.FleetJob(path=str(out), value=7), connection=driver, registry=registry())
        dispatch(jobs.RecordJob(path=str(out), value=8), connection=driver, registry=registry())
        result = run_main(
            ["--queue-work", "--sleep", "0.2", "--max-jobs", "2"], main_env(connection, tmp_path)
        )
        assert result.returncode == 0, result.stderr
        assert lines(out) == ["fleet 7", "8"]
        assert "queues=fleet,flow,default" in result.stderr  # flow: StepJob (workflow tests)
    finally:
        driver.close()
