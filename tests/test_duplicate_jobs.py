"""A second copy of a job never takes the running copy's reservation or leaves a phantom.

Every job is queued twice in a row (once through the driver, once written by
hand: what a push re-sent after a lost reply, or an operator, leaves behind),
and worker processes race over the queue. Every ack is accepted (a refused ack
ends its child with an error) and nothing is left reserved. On Redis each copy
is either run or, when it is met while the other copy is reserved, failed as a
duplicate; on SQL each copy is its own fenced row and runs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from queues.drivers.base import QueueDriver
from queues.envelope import Envelope
from tests.driver_factories import DRIVER_NAMES, make_driver
from tests.driver_race_child import read_handled, spawn
from tests.test_poison_entries import raw_add

#: Jobs queued (each twice) for the race.
JOBS = 300
#: Racing worker processes.
CHILDREN = 4
#: Seconds every child may take.
CHILD_TIMEOUT = 90.0


@pytest.mark.slow
@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_racing_workers_fail_copies_of_running_jobs_and_leave_no_phantom(
    name: str, tmp_path: Path
) -> None:
    driver: QueueDriver = make_driver(name, tmp_path)
    try:
        envs = [Envelope(job="tests.noop", data={"n": i}) for i in range(JOBS)]
        for env in envs:
            driver.push("default", env.to_json())
            raw_add(driver, "default", env.to_json())
        outs = [tmp_path / f"worker{i}.txt" for i in range(CHILDREN)]
        start_at = time.time() + 1.5
        children = [spawn(name, "work", out, tmp_path, start_at=start_at, idle=0.5) for out in outs]
        for child in children:
            assert child.wait(timeout=CHILD_TIMEOUT) == 0, (
                child.stderr.read() if child.stderr else ""
            )
        acked = Counter(job_id for job_id, _ in read_handled(outs))
        dups = Counter(
            line
            for out in outs
            if out.with_suffix(".dup").exists()
            for line in out.with_suffix(".dup").read_text().splitlines()
        )
        assert set(acked) == {env.id for env in envs}, "every job ran at least once"
        assert sum(acked.values()) + sum(dups.values()) == 2 * JOBS, "no copy lost or doubled"
        assert all(acked[job_id] == 1 for job_id in dups), "a failed copy's job ran once"
        if name.startswith("redis"):
            assert dups, "racing workers met copies of running jobs"
        else:
            assert not dups and set(acked.values()) == {2}, "each row ran once"
        assert len(driver.failed_store.all("default", limit=2 * JOBS)) == sum(dups.values())
        sizes = driver.sizes("default")
        assert (sizes.pending, sizes.delayed, sizes.reserved) == (0, 0, 0)
        if name.startswith("redis"):
            client = driver.client  # type: ignore[attr-defined]
            keys = driver.keys("default")  # type: ignore[attr-defined]
            assert client.hlen(keys.reservations) == 0
            assert client.zcard(keys.leases) == 0
            assert client.hlen(keys.ids) == 0
    finally:
        driver.close()
