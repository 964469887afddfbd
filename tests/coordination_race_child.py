"""Child process of the workflow race tests (unique jobs, rate limits), for any driver.

Run as `python -m tests.coordination_race_child --driver NAME --mode MODE ...` from
the project root, on the state the parent prepared (tests/driver_race_child.py
connects the same way). Every child waits for `--start-at` (unix time), then:

* `dispatch`: dispatches `--count` `UniqueRecord` jobs for device `--key` and
  writes each returned id with `new` or `existing`.
* `take`: takes passes of rate limit `--key` (`--limit` per `--per` s) until
  `--seconds` have passed, writing `before after` for each granted pass: the
  unix times around the call, between which the store granted it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from tests.driver_race_child import PROJECT_ROOT, connect_driver


def spawn(
    driver: str, mode: str, out: Path, state_dir: Path, **options: object
) -> subprocess.Popen[bytes]:
    """Start one child; `options` map to flags (`start_at=1.5` -> `--start-at 1.5`)."""
    command = [sys.executable, "-m", "tests.coordination_race_child", "--driver", driver]
    command += ["--mode", mode, "--out", str(out), "--state-dir", str(state_dir)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one child; exit status 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", required=True)
    parser.add_argument("--mode", choices=("dispatch", "take"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, default=Path("."))
    parser.add_argument("--key", default="k")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--per", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args(argv)

    from queues import dispatch
    from queues.coordination import coordinator_for
    from queues.unique import ExistingJobId
    from tests.jobs_fixture.support import registry
    from tests.jobs_fixture.workflow_jobs import UniqueRecord

    driver = connect_driver(args.driver, args.state_dir, 90)
    reg = registry()
    coordinator = coordinator_for(driver)
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    lines = []
    if args.mode == "dispatch":
        for n in range(args.count):
            job = UniqueRecord(path="-", value=n, device_id=args.key)
            job_id = dispatch(job, connection=driver, registry=reg)
            lines.append(f"{job_id} {'existing' if isinstance(job_id, ExistingJobId) else 'new'}")
    else:
        end = time.time() + args.seconds
        while (before := time.time()) < end:
            if coordinator.take(args.key, args.limit, args.per) == 0:
                lines.append(f"{before!r} {time.time()!r}")
    args.out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
