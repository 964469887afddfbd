"""Operator commands for deploys, alerting and bulk fixes: clear, restart, monitor, retry many.

* `--queue-clear QUEUE [--connection C] [--force]`: delete every pending,
  delayed and reserved job of one queue, after a confirmation (`--force` skips
  it; without a terminal to ask on, `--force` is required).
* `--queue-restart`: every worker exits after its current job (the supervisor or
  the container's restart policy starts a fresh one: for deploys). Workers hear
  it within a few seconds (queues/worker_board.py REPORT_INTERVAL).
* `--queue-monitor Q:N[,Q:N]`: print each queue's pending count and exit with
  EXIT_TOO_LONG when one has more than N pending jobs (for cron and alerting).
* `--queue-retry ID [ID ...]` and `--queue-retry --range FIRST-LAST`.

Each is `fn(args, settings) -> exit code`, wrapped by `queues.commands._guarded`
for the one-line errors.
"""

from __future__ import annotations

import argparse
import sys

from config.settings import Settings
from queues.commands import EXIT_BACKEND, UsageError, _driver, _guarded, retry_entry
from queues.dashboard import enabled_drivers
from queues.envelope import validate_queue_name
from queues.failed_stores import FailedStores
from queues.worker_board import board_of
from support.progress import progress_bar

#: Exit code of `--queue-monitor` when a queue is longer than its limit.
EXIT_TOO_LONG = 3
#: Most ids one `--range` may span (each is looked up).
MAX_RANGE = 100_000


def _clear(args: argparse.Namespace, settings: Settings) -> int:
    """Delete every pending, delayed and reserved job of one queue (failed jobs stay)."""
    try:
        queue = validate_queue_name(args.queue_clear)
    except ValueError as exc:
        raise UsageError(f"--queue-clear: {exc}") from None
    driver = _driver(args.connection, settings)
    sizes = driver.sizes(queue)
    count = sizes.pending + sizes.delayed + sizes.reserved
    if not args.force:
        question = (
            f"Delete the {count} pending, delayed and reserved job(s) of queue {queue!r} "
            f"on {driver.name}? [y/N] "
        )
        if not sys.stdin.isatty():
            raise UsageError(f"--queue-clear {queue} asks for confirmation: pass --force")
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    deleted = driver.clear(queue)
    print(f"deleted {deleted} job(s) of queue {queue} on {driver.name}")
    return 0


clear_command = _guarded(_clear)


def _restart(args: argparse.Namespace, settings: Settings) -> int:
    """Ask every worker of every enabled connection to exit after its current job."""
    for driver in enabled_drivers(settings):
        board = board_of(driver)
        board.request_restart()
        running = len(board.workers())
        print(f"{driver.name}: restart requested; {running} worker(s) running will exit")
    return 0


restart_command = _guarded(_restart)


def _limits(spec: str) -> list[tuple[str, int]]:
    """`Q:N[,Q:N]` as (queue, limit) pairs; UsageError naming a malformed part."""
    limits: list[tuple[str, int]] = []
    for part in spec.split(","):
        queue, _, limit = part.strip().rpartition(":")
        try:
            validate_queue_name(queue)
            value = int(limit)
        except ValueError:
            raise UsageError(
                f"--queue-monitor takes QUEUE:MAX[,QUEUE:MAX] like default:100, got {part!r}"
            ) from None
        if value < 0:
            raise UsageError(f"--queue-monitor: the limit of {queue} must be >= 0, got {value}")
        limits.append((queue, value))
    return limits


def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    """Print the pending count of each queue; exit EXIT_TOO_LONG when one is over its limit."""
    driver = _driver(args.connection, settings)
    over = []
    for queue, limit in _limits(args.queue_monitor):
        pending = driver.sizes(queue).pending
        state = "OK" if pending <= limit else "TOO LONG"
        print(f"{driver.name}/{queue}: {pending} pending (limit {limit}) {state}")
        if pending > limit:
            over.append(queue)
    if over:
        print(f"error: longer than their limit: {', '.join(over)}", file=sys.stderr)
        return EXIT_TOO_LONG
    return 0


monitor_command = _guarded(_monitor)


def retry_ids(ids: list[str], stores: FailedStores, settings: Settings) -> int:
    """Retry each failed job of `ids` (failed ids or job ids); report each; EXIT_BACKEND
    if one could not be."""
    problems = 0
    for failed_id in ids:
        entry = stores.find(failed_id)
        if entry is None:
            print(
                f"error: no failed job with id {failed_id!r} (see --queue-failed)", file=sys.stderr
            )
            problems += 1
            continue
        failed = entry.job
        try:
            job_id = retry_entry(entry, stores, settings)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            problems += 1
            continue
        print(
            f"retried failed job {failed.id} as job {job_id} on {failed.connection}/{failed.queue}"
        )
    return EXIT_BACKEND if problems else 0


def retry_range(spec: str, stores: FailedStores, settings: Settings) -> int:
    """Retry the failed jobs whose numeric ids lie in `FIRST-LAST`; ids not found are skipped."""
    first_text, _, last_text = spec.partition("-")
    try:
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise UsageError(
            f"--range takes FIRST-LAST failed job ids like 10-20, got {spec!r}"
        ) from None
    if last < first:
        raise UsageError(f"--range {spec}: the last id is below the first")
    if last - first + 1 > MAX_RANGE:
        raise UsageError(f"--range {spec} spans more than {MAX_RANGE} ids; split it")
    retried = problems = 0
    with progress_bar("retrying", last - first + 1, unit="id") as bar:
        for number in range(first, last + 1):
            entry = stores.find(str(number))
            if entry is not None:
                try:
                    retry_entry(entry, stores, settings)
                    retried += 1
                except UsageError as exc:
                    bar.write(f"error: {exc}", file=sys.stderr)
                    problems += 1
            bar.update(1)
    print(f"retried {retried} failed job(s) with ids {first} to {last}")
    return EXIT_BACKEND if problems else 0
