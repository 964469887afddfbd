"""Scenario 9: load. 4 workers on 20,000 probe jobs (scaled), 10% of them failing their
first attempt on purpose: every job runs exactly once to success, the failed store
stays empty, and done + failed = dispatched, exactly.

The SQL drivers run a quarter of the jobs: their workers' throughput on two cores
(about 100-200 jobs/s before issue 15's prefetch) would otherwise take the harness's
whole ten-minute budget.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import DRIVERS, Case, Outcome, Probe, base_env, judge, scaled
from benchmarks.faults.probe.jobs import ProbeJob
from benchmarks.faults.system import start_workers

FAMILY = "load"
NAME = "9 load, 10% fail once"
SCENARIOS = {NAME: "done + failed = dispatched exactly; each failed-once job runs once more"}
#: Workers, one job in FAIL_EVERY fails its first attempt, jobs per dispatch call.
WORKERS = 4
FAIL_EVERY = 10
CHUNK = 1000
#: Jobs per driver at FAULTS_SCALE=1.
JOBS = {"redis": 20000, "mariadb": 5000, "sqlite": 5000}
#: Seconds allowed for the whole load to run.
RUN_TIMEOUT = 300.0


def run(driver: str, folder: Path) -> Outcome:
    """Scenario 9 on `driver`."""
    count = scaled(JOBS[driver], 200)
    outcome = Outcome(NAME, driver, count, 0, 0, 0, 0, 0, SCENARIOS[NAME])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    with backend(driver, folder / "backend", base_env(probe)) as found:
        for first in range(0, count, CHUNK):
            jobs = [
                ProbeJob(n=n, fail_once=n % FAIL_EVERY == 0)
                for n in range(first, min(count, first + CHUNK))
            ]
            outcome.acknowledged += found.dispatch(jobs)
        outcome.queued = found.queued()
        running = start_workers(found, folder, WORKERS)
        load_started = time.monotonic()
        try:
            probe.wait_for(set(range(count)), RUN_TIMEOUT)
            runs = probe.settle()
            failed = found.queue_driver().sizes("default").failed
        finally:
            for worker in running:
                worker.stop()
        rate = count / max(0.001, time.monotonic() - load_started)
    outcome.seconds = round(time.monotonic() - started, 1)
    markers = len(list(probe.folder.glob("failed-*")))
    expected_markers = len(range(0, count, FAIL_EVERY))
    done = len(runs)
    outcome.extra = {"failed_store": failed, "failed_first_attempts": markers, "jobs_per_s": rate}
    outcome.explanation = (
        f"done {done} + failed {failed} = {done + failed} of {count}; "
        f"{markers} first attempts failed on purpose; ~{rate:.0f} jobs/s"
    )
    exact = done + failed == count and markers == expected_markers and failed == 0
    return judge(outcome, set(range(count)), runs, exact, "done + failed != dispatched")


def cases() -> list[Case]:
    """Scenario 9 on every driver."""
    return [Case(NAME, d, SCENARIOS[NAME], partial(run, d)) for d in DRIVERS]
