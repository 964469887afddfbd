"""Scenario 6: MariaDB `KILL CONNECTION` of the workers' connections, 10 rounds.

2,000 probe jobs of 5-20 ms (scaled) and 2 workers on the harness's own database;
every 0.5 s every connection to that database is killed (looked up in
information_schema.processlist by database: only the harness's own), so some die
mid-COMMIT. Expect: the workers survive (reconnect), 0 lost; a duplicate needs a
kill between a job's end and its ack, so extra runs <= rounds x workers.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import Case, Outcome, Probe, base_env, judge, scaled
from benchmarks.faults.probe.jobs import ProbeJob
from benchmarks.faults.system import start_workers

FAMILY = "sql_kill"
NAME = "6 MariaDB KILL CONNECTION"
SCENARIOS = {NAME: "workers survive; 0 lost; extra runs <= rounds x workers"}
#: Rounds of kills, the pause between them, workers.
ROUNDS = 10
EVERY = 0.5
WORKERS = 2
#: Seconds a reservation outlives a worker that lost it (QUEUE_RETRY_AFTER here).
RETRY_AFTER = 3
#: Seconds allowed for every job to run after the last round.
DRAIN_TIMEOUT = 120.0


def run(folder: Path) -> Outcome:
    """Scenario 6 on MariaDB."""
    count = scaled(2000, 200)
    outcome = Outcome(NAME, "mariadb", count, 0, 0, 0, 0, 0, SCENARIOS[NAME])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    env = base_env(probe, QUEUE_RETRY_AFTER=str(RETRY_AFTER))
    with backend("mariadb", folder / "backend", env) as found:
        jobs = [ProbeJob(n=n, ms=random.uniform(5, 20)) for n in range(count)]
        outcome.acknowledged = outcome.queued = found.dispatch(jobs)
        workers = start_workers(found, folder, WORKERS)
        killed = 0
        try:
            for _ in range(ROUNDS):
                time.sleep(EVERY)
                killed += found.kill_connections()
            probe.wait_for(set(range(count)), DRAIN_TIMEOUT)
            runs = probe.settle(quiet=RETRY_AFTER + 1.0)
            alive = all(worker.alive() for worker in workers)
        finally:
            for worker in workers:
                worker.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    extra_runs = sum(c - 1 for c in runs.values() if c > 1)
    outcome.extra = {"connections_killed": killed, "extra_runs": extra_runs}
    outcome.explanation = (
        f"{ROUNDS} rounds, {killed} connections killed; workers survived: {alive}; "
        f"{extra_runs} extra runs"
    )
    ok = alive and extra_runs <= ROUNDS * WORKERS
    return judge(outcome, set(range(count)), runs, ok, "a worker died or unexplained duplicates")


def cases() -> list[Case]:
    """Scenario 6 (MariaDB only: the fault is a server-side KILL)."""
    return [Case(NAME, "mariadb", SCENARIOS[NAME], run)]
