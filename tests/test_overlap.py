"""WithoutOverlapping: two jobs with the same key never run at once, across worker
processes; the second is released with a delay and runs after the first."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from queues import dispatch
from queues.drivers.base import QueueDriver
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.driver_race_child import PROJECT_ROOT
from tests.jobs_fixture import workflow_jobs
from tests.jobs_fixture.support import registry
from tests.test_unique_jobs import _clear_locks, _kind

#: Worker processes racing for the jobs.
WORKERS = 4
#: Jobs per key.
JOBS = 6


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, tmp_path: Path):
    made = make_driver(request.param, tmp_path)
    _clear_locks(made)
    yield made
    made.close()


#: A worker child: from the instant argv[3], runs jobs until a wait of `sleep` seconds finds none.
WORKER_CHILD = """
import sys
import time
from pathlib import Path
from queues.worker import Worker
from tests.driver_race_child import connect_driver
from tests.jobs_fixture.support import registry
driver = connect_driver(sys.argv[1], Path(sys.argv[2]), 90)
time.sleep(max(float(sys.argv[3]) - time.time(), 0))
Worker(driver, ["default"], sleep=1.5, handle_signals=False, stop_when_empty=True,
       registry=registry()).run()
"""


def test_jobs_with_one_key_never_overlap_across_worker_processes(
    driver: QueueDriver, tmp_path: Path
) -> None:
    reg = registry()
    outs = {key: tmp_path / key for key in ("a", "b")}
    for _ in range(JOBS):
        for key, out in outs.items():
            dispatch(workflow_jobs.Overlapping(path=str(out), key=key, hold=0.15),
                     connection=driver, registry=reg)  # fmt: skip
    start_at = str(time.time() + 3.0)  # every worker is ready before the first job starts
    argv = [sys.executable, "-c", WORKER_CHILD, _kind(driver), str(tmp_path), start_at]
    children = [subprocess.Popen(argv, cwd=PROJECT_ROOT) for _ in range(WORKERS)]
    for child in children:
        assert child.wait(timeout=120) == 0
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for key, out in outs.items():
        spans[key] = sorted(
            (float(start), float(end), pid)
            for start, end, pid in (line.split() for line in out.read_text().splitlines())
        )
        assert len(spans[key]) == JOBS  # every job ran once: released, never failed
        for (_, end, _), (start, _, _) in zip(spans[key], spans[key][1:], strict=False):
            assert start >= end, f"two {key!r} jobs overlapped"
    assert driver.failed_store.counts() == {}
    # Several workers took part, and different keys do run at the same time.
    assert len({pid for key in spans for _, _, pid in spans[key]}) > 1
    assert any(
        a_start < b_end and b_start < a_end
        for a_start, a_end, _ in spans["a"]
        for b_start, b_end, _ in spans["b"]
    )
