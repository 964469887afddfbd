"""Scenario 1: workers killed with SIGKILL at random points, and restarted.

2,000 probe jobs of 5-20 ms, 4 workers, one SIGKILL every 0.25 s for 20 s (scaled),
each killed worker restarted at once. Expect 0 lost; every duplicate is a kill
between a job's end (its line in the run log) and its ack, so duplicates <= kills.
"""

from __future__ import annotations

import random
import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import (
    DRIVERS,
    Case,
    Outcome,
    Probe,
    SystemProcess,
    base_env,
    judge,
    processes,
    scale,
    scaled,
)
from benchmarks.faults.probe.jobs import ProbeJob

FAMILY = "worker_kill"
SCENARIOS = {
    "1 worker SIGKILL": "0 lost; duplicates <= kills (a kill after a job's end, before its ack)"
}
#: Workers running at once, and the pause between two kills.
WORKERS = 4
KILL_EVERY = 0.25
#: Seconds a reservation outlives its killed worker (QUEUE_RETRY_AFTER of this scenario).
RETRY_AFTER = 3
#: Seconds allowed, after the kills stop, for every job to run.
DRAIN_TIMEOUT = 120.0


def run(driver: str, folder: Path) -> Outcome:
    """Scenario 1 on `driver`."""
    name = "1 worker SIGKILL"
    count, kill_for = scaled(2000, 50), max(3.0, 20.0 * scale())
    outcome = Outcome(name, driver, count, 0, 0, 0, 0, 0, SCENARIOS[name])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    env = base_env(probe, QUEUE_RETRY_AFTER=str(RETRY_AFTER))
    with backend(driver, folder / "backend", env) as found, processes() as running:
        jobs = [ProbeJob(n=n, ms=random.uniform(5, 20)) for n in range(count)]
        outcome.acknowledged = outcome.queued = found.dispatch(jobs)
        args = ["--queue-work", "--connection", found.connection, "--sleep", "0.2"]
        workers = [SystemProcess(f"worker-{i}", args, found.env, folder) for i in range(WORKERS)]
        running.extend(worker.start() for worker in workers)
        kills = 0
        kill_until = time.monotonic() + kill_for
        while time.monotonic() < kill_until and len(probe.runs()) < count:
            time.sleep(KILL_EVERY)
            victim = random.choice(workers)
            victim.kill()
            victim.start()
            kills += 1
        probe.wait_for(set(range(count)), DRAIN_TIMEOUT)
        runs = probe.settle(quiet=RETRY_AFTER + 1.0)
    outcome.seconds = round(time.monotonic() - started, 1)
    outcome.extra = {"kills": kills}
    judge(outcome, set(range(count)), runs)
    duplicates = sum(1 for c in runs.values() if c > 1)
    extra_runs = sum(c - 1 for c in runs.values() if c > 1)
    if outcome.verdict == "pass" and extra_runs > kills:
        outcome.verdict = "FAIL"
        outcome.explanation = f"{extra_runs} extra runs but only {kills} kills: unexplained"
    elif outcome.verdict == "pass":
        outcome.explanation = (
            f"{kills} kills; {duplicates} duplicated ({extra_runs} extra runs <= kills: "
            "each a kill after the job wrote, before its ack)"
        )
    return outcome


def cases() -> list[Case]:
    """Scenario 1 on every driver."""
    return [
        Case(name, driver, expectation, partial(run, driver))
        for name, expectation in SCENARIOS.items()
        for driver in DRIVERS
    ]
