"""Child process of the workflow races (tests/test_workflow_races.py), any driver.

Run as `python -m tests.workflow_race_child --driver NAME --mode MODE ...` from
the project root, on the state the parent prepared (nothing is cleared). Each
child waits until `--start-at` (unix time), so all start at once, then:

* `finish`: counts every job id `0..--count-1` of batch `--batch` as done, in
  a shuffled order, through the batch store; writes `<job id> <new> <pending>`
  per call.
* `step`: pops one job of queue `flow` (lease `--retry-after`), runs the
  worker's outcome hook for it as if it succeeded (a chain queues its next
  link), writes the job id, then sleeps until killed: a worker that dies
  between "queue the next link" and "ack".
* `once`: dispatches job ids `once-0..once-{count-1}` to queue `flow` with
  `dispatch_once`, in a shuffled order; writes `<job id> <added>` per call.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from queues.envelope import Envelope
from queues.workflows import before_settle, store_of
from tests.driver_race_child import connect_driver

#: Seconds a `step` child sleeps after its hook; far longer than any test waits to kill it.
STEP_HOLD_SECONDS = 300.0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one child; exit status 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--mode", choices=("finish", "once", "step"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("."))
    parser.add_argument("--batch", default="")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--retry-after", type=int, default=90)
    args = parser.parse_args(argv)

    driver = connect_driver(args.driver, args.state_dir, args.retry_after)
    if args.mode == "step":
        job = driver.pop(["flow"], block=10)
        if job is None:
            return 1
        before_settle(driver, job, "ack")
        args.out.write_text(job.id + "\n", encoding="utf-8")
        time.sleep(STEP_HOLD_SECONDS)
        return 0
    order = list(range(args.count))
    random.shuffle(order)
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    with args.out.open("a", encoding="utf-8") as out:
        for i in order:
            if args.mode == "finish":
                finished = store_of(driver).finish(args.batch, f"{args.batch}.{i}", "done")
                if finished is None:
                    print(f"batch {args.batch} unknown", file=sys.stderr)
                    return 2
                out.write(f"{args.batch}.{i} {int(finished.new)} {finished.pending}\n")
            else:
                payload = Envelope(job="StepJob", data={}, queue="flow", id=f"once-{i}")
                added = driver.dispatch_once("flow", payload.to_json())
                out.write(f"once-{i} {int(added)}\n")
            out.flush()
    driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
