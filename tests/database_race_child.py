"""Child process of the database driver's race and crash tests.

Run as `python -m tests.database_race_child URL OUT MODE [--retry-after N]` from
the project root. It opens the engine the way the application does
(`core.database.engine_from_url`: WAL, busy timeout and `BEGIN IMMEDIATE` on
SQLite, READ COMMITTED on MariaDB) on the state the parent prepared, and appends
one flushed line per event to OUT, so a SIGKILL loses nothing already written:

* `work`: pop and ack jobs of `default` until a 0.5 s blocking pop finds
  nothing; writes `<job id> <attempts>` per handled job. A refused ack or any
  exception is written to stderr and ends the child with a non-zero status.
* `hold`: pop one job, write `<job id> <attempts>`, then sleep until killed.

`--start-at` (unix time) makes every child start popping at the same instant.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

#: Project root: children run with it as working directory so `tests` imports.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Seconds a `hold` child sleeps; far longer than any test waits before killing it.
HOLD_SECONDS = 300.0

#: Seconds an idle `work` child waits for one more job before it exits.
IDLE_SECONDS = 0.5


def spawn(
    url: str, out: Path, mode: str, retry_after: int = 90, start_at: float = 0.0
) -> subprocess.Popen[bytes]:
    """Start one child process."""
    command = [sys.executable, "-m", "tests.database_race_child", url, str(out), mode]
    command += ["--retry-after", str(retry_after), "--start-at", str(start_at)]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.PIPE)


def read_handled(outs: list[Path]) -> list[tuple[str, int]]:
    """Every `(job id, attempts)` line the children wrote."""
    handled: list[tuple[str, int]] = []
    for path in outs:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                job_id, attempts = line.split()
                handled.append((job_id, int(attempts)))
    return handled


def main(argv: list[str] | None = None) -> int:
    """Run one child; exit status 0 when every handled job was acked."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("mode", choices=("work", "hold"))
    parser.add_argument("--retry-after", type=int, default=90)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args(argv)

    from core.database import engine_from_url
    from queues.drivers.database import DatabaseDriver, DatabaseFailedStore

    engine = engine_from_url(args.url, create_sqlite_tables=False)
    driver = DatabaseDriver(engine, DatabaseFailedStore(engine), args.retry_after)
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    with args.out.open("a", encoding="utf-8") as out:
        if args.mode == "hold":
            job = driver.pop(["default"], block=10)
            if job is None:
                print("hold: no job to take", file=sys.stderr)
                return 1
            out.write(f"{job.id} {job.attempts}\n")
            out.flush()
            time.sleep(HOLD_SECONDS)
            return 0
        while (job := driver.pop(["default"], block=IDLE_SECONDS)) is not None:
            if not driver.ack(job):
                print(f"ack refused for job {job.id}", file=sys.stderr)
                return 2
            out.write(f"{job.id} {job.attempts}\n")
            out.flush()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
