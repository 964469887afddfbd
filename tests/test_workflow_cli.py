"""`python main.py --job-status ID` and `--batch-status ID` against real state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from queues import batch, chain
from tests.driver_factories import driver_for
from tests.jobs_fixture.jobs import StepJob
from tests.jobs_fixture.support import main_env, registry, run_main


@pytest.mark.parametrize("connection", ["redis", "database"])
def test_job_status_prints_a_finished_job_and_a_stopped_chain(
    connection: str, tmp_path: Path
) -> None:
    driver = driver_for(connection, tmp_path)
    out = str(tmp_path / "steps")
    chain_id = chain(StepJob(path=out, value=0), StepJob(path=out, value=1)).dispatch(
        driver, registry=registry()
    )
    first = driver.pop(["flow"])
    assert first is not None and driver.fail(first, "RuntimeError: the valve is stuck\n...")
    env = main_env(connection, tmp_path)
    shown = run_main(["--job-status", f"{chain_id}.0"], env)
    assert shown.returncode == 0, shown.stderr
    assert "state:       failed" in shown.stdout
    assert "reason:      RuntimeError: the valve is stuck" in shown.stdout
    walked = run_main(["--job-status", chain_id], env)
    assert walked.returncode == 0, walked.stderr
    assert "link 1: StepJob failed (RuntimeError: the valve is stuck)" in walked.stdout
    assert "stopped at link 1" in walked.stdout
    as_json = run_main(["--job-status", f"{chain_id}.0", "--json"], env)
    assert json.loads(as_json.stdout)["state"] == "failed"
    missing = run_main(["--job-status", "no-such-job"], env)
    assert missing.returncode == 2 and "JOB_STATUS_RETENTION" in missing.stderr
    driver.close()


@pytest.mark.parametrize("connection", ["redis", "database"])
def test_batch_status_prints_progress(connection: str, tmp_path: Path) -> None:
    driver = driver_for(connection, tmp_path)
    out = str(tmp_path / "steps")
    batch_id = batch([StepJob(path=out, value=i) for i in range(3)], name="import").dispatch(
        driver, registry=registry()
    )
    env = main_env(connection, tmp_path)
    shown = run_main(["--batch-status", batch_id], env)
    assert shown.returncode == 0, shown.stderr
    assert f"batch:       {batch_id} (import)" in shown.stdout
    assert "pending:     3" in shown.stdout
    run_main(["--queue-work", "--queue", "flow", "--stop-when-empty"], env, timeout=60)
    done = json.loads(run_main(["--batch-status", batch_id, "--json"], env).stdout)
    assert (done["total"], done["pending"], done["done"], done["failed"]) == (3, 0, 3, 0)
    assert done["finished_at"] is not None
    driver.close()
