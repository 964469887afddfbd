"""A dispatching process for the failover tests: `python -m tests.ha_dispatch_child RUNS ACKED N`.

Dispatches RecordJob(path=RUNS, value=i) for i in 0..N-1 on QUEUE_CONNECTION
(settings from the environment), pacing a few ms apart. After each dispatch
returns, it appends i to ACKED (O_APPEND), so the test knows every job whose
dispatch was acknowledged. An outage (BackendUnavailable: the master is gone,
or WAIT got too few replicas) is retried with support/backoff.py, as the MQTT
intake does; a retry may queue the job twice (at-least-once), never lose it.
"""

from __future__ import annotations

import sys
import time

from queues import dispatch
from support.backoff import Backoff
from support.errors import caused_by_outage
from tests.jobs_fixture import jobs
from tests.jobs_fixture.support import registry

#: Seconds between two dispatches: enough load to be mid-stream during a failover.
PACE = 0.005
#: Backoff of the retry after an outage, seconds.
RETRY_BASE, RETRY_CAP = 0.05, 0.5


def main(runs: str, acked: str, count: int) -> int:
    """Dispatch `count` jobs, recording each acknowledged one; return 0."""
    loaded = registry()
    backoff = Backoff(RETRY_BASE, RETRY_CAP)
    for value in range(count):
        while True:
            try:
                dispatch(jobs.RecordJob(path=runs, value=value), registry=loaded)
                break
            except Exception as exc:
                if not caused_by_outage(exc):
                    raise
                print(f"outage: {exc}", file=sys.stderr, flush=True)
                time.sleep(backoff.next_delay())
        backoff.reset()
        with open(acked, "a", encoding="utf-8") as handle:
            handle.write(f"{value}\n")
        time.sleep(PACE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
