"""Operator commands of main.py for queues and workers.

Each command is `fn(args, settings) -> exit code`; cli.py declares each
command's options, checks their values and calls it. A wrong argument or an
unreachable server ends the command with ONE line on stderr and a non-zero exit
code: 2 for a wrong argument, 1 for a backend error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from config.settings import Settings
from queues import connections
from queues.drivers.base import QueueDriver, QueueError
from queues.envelope import (
    Envelope,
    EnvelopeError,
    colliding_queue_name,
    decode_json,
    validate_queue_name,
)
from queues.failed_stores import FailedEntry, FailedStores
from support.progress import progress_bar

#: Exit code of a wrong argument.
EXIT_USAGE = 2
#: Exit code of a backend (Redis / SQL) failure.
EXIT_BACKEND = 1
#: Failed jobs listed by --queue-failed (newest first).
FAILED_LIST_LIMIT = 100
#: Failed jobs fetched per round by --queue-retry all.
RETRY_BATCH = 500
#: Longest exception excerpt in the --queue-failed table, characters.
EXCEPTION_COLUMN = 120


class UsageError(ValueError):
    """A command-line argument is wrong; the message names the flag."""


Command = Callable[[argparse.Namespace, Settings], int]


def _backend_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [QueueError, OSError]
    try:
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        pass
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the DBAPI error
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _guarded(command: Callable[[argparse.Namespace, Settings], int]) -> Command:
    """Wrap a command: configure connections, turn failures into one stderr line."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        connections.configure(settings)
        try:
            return command(args, settings)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except _backend_errors() as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BACKEND
        except ValueError as exc:  # e.g. redis connection not enabled
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            connections.reset()

    run.__doc__ = command.__doc__
    run.__name__ = command.__name__
    return run


def _queue_names(args: argparse.Namespace, default: list[str] | None) -> list[str] | None:
    """The `--queue` names, each checked by the one queue-name rule (`validate_queue_name`:
    old names stay readable, but never one whose keys are another queue's)."""
    raw = getattr(args, "queue", None)
    if not raw:
        return default
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--queue needs at least one queue name, got {raw!r}")
    return _checked_queue_names(names, "--queue")


def _checked_queue_names(names: list[str], source: str) -> list[str]:
    """`names` if each passes the queue-name rule for names that are read; else
    UsageError naming `source` (where the names came from)."""
    for name in names:
        try:
            validate_queue_name(name, existing=True)
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
    return names


def _single_queue(args: argparse.Namespace) -> str | None:
    names = _queue_names(args, None)
    if names is not None and len(names) != 1:
        raise UsageError(f"--queue takes one queue name here, got {args.queue!r}")
    return names[0] if names else None


def _driver(name: str | None, settings: Settings) -> QueueDriver:
    connection = name or settings.queue_connection
    if connection == "redis" and not settings.enable_redis:
        raise UsageError("the redis connection is not enabled: set ENABLE_REDIS=true")
    return connections.get_driver(connection, settings)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# -- worker -----------------------------------------------------------------

#: Seconds beyond the workers' shutdown grace period that `--workers N` waits before killing them.
STOP_MARGIN = 15.0


def _work(args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker, or a supervisor of `--workers N` worker processes.

    Everything that would make every worker fail is checked once, here, before
    any worker starts: the flags, the jobs package, the queue names, the
    connection, and a `--memory` limit below what a worker uses right after
    start (it would exit after every job).
    """
    from queues.backoff import parse_backoff
    from queues.registry import DuplicateJobError, get_registry
    from queues.worker import Worker, current_rss_mb

    backoff = None if args.backoff is None else parse_backoff(args.backoff)
    try:
        registry = get_registry()
    except (ImportError, DuplicateJobError) as exc:
        raise UsageError(f"cannot load the jobs package: {exc}") from None
    queues = _queue_names(args, None) or _checked_queue_names(
        registry.queues(), "a registered job class's queue"
    )
    driver = _driver(args.connection, settings)
    driver.sizes(queues[0])  # fail fast, with one line, when the server is unreachable
    baseline = current_rss_mb()
    if args.memory and args.memory <= baseline:
        raise UsageError(
            f"--memory {args.memory} MB is below what a worker uses right after start "
            f"({baseline:.0f} MB): it would exit after every job; give it more than that"
        )
    once = bool(getattr(args, "once", False))
    finite = once or bool(getattr(args, "stop_when_empty", False))
    if args.workers > 1:
        from queues.worker import GRACE_PERIOD
        from queues.worker_process import supervise_workers
        from support.supervisor import Child

        argv = tuple(worker_arguments(args))
        children = [Child(f"queue-worker-{i}", argv) for i in range(args.workers)]
        return supervise_workers(
            settings,
            children,
            lambda: [_driver(args.connection, settings)],
            queues,
            stop_timeout=GRACE_PERIOD + STOP_MARGIN,
            restart_planned=not finite,
        )

    from queues.worker_monitor import WorkerMonitor
    from queues.worker_process import serve_worker

    def build(monitor: WorkerMonitor) -> Worker:
        return Worker(
            driver,
            queues,
            sleep=args.sleep,
            max_jobs=1 if once else args.max_jobs,
            max_time=args.max_time,
            memory_mb=args.memory,
            default_timeout=args.timeout,
            default_tries=args.tries,
            default_backoff=backoff,
            registry=registry,
            stop_when_empty=finite,
            events=monitor,
            prefetch=args.prefetch,
            concurrency=args.concurrency,
        )

    return serve_worker(settings, driver, queues, build)


work_command = _guarded(_work)


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The `main.py` flags of one worker child: the parent's worker flags minus --workers."""
    argv = ["--queue-work"]
    for flag, attribute in (
        ("--connection", "connection"),
        ("--queue", "queue"),
        ("--sleep", "sleep"),
        ("--max-jobs", "max_jobs"),
        ("--max-time", "max_time"),
        ("--memory", "memory"),
        ("--timeout", "timeout"),
        ("--tries", "tries"),
        ("--backoff", "backoff"),
        ("--prefetch", "prefetch"),
        ("--concurrency", "concurrency"),
    ):
        value = getattr(args, attribute, None)
        if value is not None:
            argv += [flag, str(value)]
    for flag, attribute in (("--once", "once"), ("--stop-when-empty", "stop_when_empty")):
        if getattr(args, attribute, False):
            argv.append(flag)
    return argv


# -- status -----------------------------------------------------------------


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """Pending, delayed and reserved jobs per queue of each connection, then the failed
    jobs of each failed store, each counted once, with where they live."""
    names = [args.connection] if args.connection else ["redis", "database"]
    wanted = _queue_names(args, None)
    failed = [
        count
        for count in connections.failed_stores(settings).counts()
        if wanted is None or count.queue in wanted
    ]
    # A failed list written by hand under a name whose keys are another queue's
    # is still counted below, but has no queue row to read.
    failed_queues = {count.queue for count in failed if colliding_queue_name(count.queue) is None}
    report: list[dict[str, Any]] = []
    for name in names:
        if name == "redis" and not settings.enable_redis:
            report.append({"connection": name, "enabled": False, "queues": []})
            continue
        driver = connections.get_driver(name, settings)
        queues = (
            wanted
            if wanted is not None
            else sorted(set(driver.queues()) | failed_queues | {"default"})
        )
        rows = []
        for queue in queues:
            sizes = driver.sizes(queue)
            rows.append(
                {
                    "queue": queue,
                    "pending": sizes.pending,
                    "delayed": sizes.delayed,
                    "reserved": sizes.reserved,
                    "oldest_pending_age": sizes.oldest_pending_age,
                }
            )
        report.append({"connection": name, "enabled": True, "queues": rows})
    failed_rows: list[dict[str, Any]] = [
        {"store": c.store, "queue": c.queue, "failed": c.count, "where": c.where} for c in failed
    ]
    if args.json:
        _print_json({"connections": report, "failed": failed_rows})
        return 0
    table: list[list[str]] = []
    for entry in report:
        if not entry["enabled"]:
            table.append([entry["connection"], "(not enabled)", "-", "-", "-", "-"])
            continue
        for row in entry["queues"]:
            table.append(
                [
                    entry["connection"],
                    row["queue"],
                    str(row["pending"]),
                    str(row["delayed"]),
                    str(row["reserved"]),
                    _age(row["oldest_pending_age"]),
                ]
            )
    _table(["CONNECTION", "QUEUE", "PENDING", "DELAYED", "RESERVED", "OLDEST PENDING"], table)
    print()
    if not failed_rows:
        print("no failed jobs")
        return 0
    _table(
        ["FAILED", "QUEUE", "STORE"],
        [[str(row["failed"]), row["queue"], row["where"]] for row in failed_rows],
    )
    return 0


status_command = _guarded(_status)


# -- failed jobs ------------------------------------------------------------


def _job_name(payload: str) -> str:
    """The job name a payload gives, also when the envelope was refused ("?" if none)."""
    try:
        decoded = decode_json(payload)
    except EnvelopeError:
        return "?"
    job = decoded.get("job") if isinstance(decoded, dict) else None
    return job if isinstance(job, str) and job else "?"


def failed_entry(entry: FailedEntry, full: bool) -> dict[str, Any]:
    """A failed job as operators see it: the exception's first line, or everything
    (full traceback and decoded payload) with `full`; with the store it lives in."""
    failed = entry.job
    exception_lines = failed.exception.splitlines()
    result: dict[str, Any] = {
        "id": failed.id,
        "job_id": failed.job_id,
        "connection": failed.connection,
        "queue": failed.queue,
        "job": _job_name(failed.payload),
        "failed_at": _iso(failed.failed_at),
        "store": entry.store.kind,
        "where": entry.store.where(failed.queue),
        "exception": failed.exception if full else (exception_lines[0] if exception_lines else ""),
    }
    if full:
        try:
            result["payload"] = decode_json(failed.payload)
        except EnvelopeError:
            result["payload"] = failed.payload  # shown as stored text
    return result


def _iso(stamp: Any) -> str:
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return str(stamp.isoformat(timespec="seconds"))


def _failed(args: argparse.Namespace, settings: Settings) -> int:
    """The newest failed jobs of every failed store: ids, queue, job, time, first line."""
    stores = connections.failed_stores(settings)
    entries = [
        failed_entry(entry, full=False)
        for entry in stores.all(_single_queue(args), FAILED_LIST_LIMIT)
    ]
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print("no failed jobs")
        return 0
    _table(
        ["ID", "JOB ID", "STORE", "QUEUE", "JOB", "FAILED AT", "EXCEPTION"],
        [
            [
                e["id"],
                e["job_id"] or "-",
                e["store"],
                e["queue"],
                e["job"],
                e["failed_at"],
                e["exception"][:EXCEPTION_COLUMN],
            ]
            for e in entries
        ],
    )
    return 0


failed_command = _guarded(_failed)


def _get_failed(stores: FailedStores, key: str) -> FailedEntry:
    """The failed job with this failed id or job id; UsageError naming `key` if none."""
    entry = stores.find(key)
    if entry is None:
        raise UsageError(
            f"no failed job with id {key!r} (a failed id or a job id; see --queue-failed)"
        )
    return entry


def _failed_show(args: argparse.Namespace, settings: Settings) -> int:
    """Everything about one failed job (by failed id or job id): traceback and payload."""
    entry = _get_failed(connections.failed_stores(settings), args.queue_failed_show)
    shown = failed_entry(entry, full=True)
    if args.json:
        _print_json(shown)
        return 0
    for key in ("id", "job_id", "connection", "queue", "job", "failed_at", "where"):
        print(f"{key + ':':<12}{shown[key]}")
    print("payload:")
    print(json.dumps(shown["payload"], indent=2, ensure_ascii=False))
    print("exception:")
    print(entry.job.exception.rstrip())
    return 0


failed_show_command = _guarded(_failed_show)


def retry_entry(entry: FailedEntry, stores: FailedStores, settings: Settings) -> str:
    """Push one failed job back to its queue, then remove its record; return the job id."""
    job_id = requeue_failed(entry, settings)
    stores.remove([entry])
    return job_id


def requeue_failed(entry: FailedEntry, settings: Settings) -> str:
    """Push one failed job back to its queue with attempts 0; return its job id.

    The caller removes the record afterwards (push first, remove second, so a
    crash in between cannot lose the job; a re-run then finds the job's id
    already queued and only removes the record. Window: if that re-queued copy
    already finished before the re-run, the re-run queues it once more). A
    `retry_until` that has passed is cleared.
    """
    failed = entry.job
    try:
        envelope = Envelope.from_json(failed.payload)
    except EnvelopeError as exc:
        raise UsageError(f"failed job {failed.id} cannot be retried: {exc}") from None
    envelope.attempts = 0
    if envelope.retry_until is not None and envelope.retry_until <= time.time():
        envelope.retry_until = None
    try:
        driver = _driver(failed.connection, settings)
        if not driver.contains(failed.queue, envelope.id):
            driver.push(failed.queue, envelope.to_json())
    except ValueError as exc:  # a queue name or connection that takes no new jobs
        raise UsageError(f"failed job {failed.id} cannot be retried: {exc}") from None
    return envelope.id


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    """Retry failed jobs: by failed id or job id (several allowed), `--range FIRST-LAST`
    of numeric failed ids, or `all` (optionally of one --queue)."""
    from queues.control_commands import retry_ids, retry_range

    stores = connections.failed_stores(settings)
    given = args.queue_retry
    targets = [given] if isinstance(given, str) else list(given or [])
    span = getattr(args, "range", None)
    if span is not None:
        if targets:
            raise UsageError("give failed job ids or --range, not both")
        return retry_range(span, stores, settings)
    if not targets:
        raise UsageError("--queue-retry needs failed job ids, all, or --range FIRST-LAST")
    if targets != ["all"]:
        if "all" in targets:
            raise UsageError("--queue-retry all takes no ids besides it")
        return retry_ids(targets, stores, settings)
    queue = _single_queue(args)
    retried, problems = 0, 0
    skipped: set[tuple[int, str]] = set()
    total = sum(c.count for c in stores.counts() if queue is None or c.queue == queue)
    with progress_bar("retrying", total) as bar:
        while True:
            # Oldest first, in batches; fetch past the ones that could not be retried.
            batch = [
                e
                for e in stores.oldest(queue, RETRY_BATCH + len(skipped))
                if (id(e.store), e.job.id) not in skipped
            ][:RETRY_BATCH]
            if not batch:
                break
            done: list[FailedEntry] = []
            for entry in batch:
                try:
                    requeue_failed(entry, settings)
                    done.append(entry)
                except UsageError as exc:
                    bar.write(f"error: {exc}", file=sys.stderr)
                    skipped.add((id(entry.store), entry.job.id))
                    problems += 1
                bar.update(1)
            retried += stores.remove(done)
    print(f"retried {retried} failed job(s)" + (f", {problems} could not be" if problems else ""))
    return EXIT_BACKEND if problems else 0


retry_command = _guarded(_retry)


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    """Delete one failed job, by failed id or job id."""
    stores = connections.failed_stores(settings)
    entry = _get_failed(stores, args.queue_forget)
    if not stores.remove([entry]):
        raise UsageError(f"no failed job with id {args.queue_forget!r} (see --queue-failed)")
    print(f"forgot failed job {entry.job.id}")
    return 0


forget_command = _guarded(_forget)


def _flush(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the failed jobs of every store, or those older than --older-than DAYS or --hours H."""
    hours = getattr(args, "hours", None)
    if args.older_than is not None and hours is not None:
        raise UsageError("give --older-than DAYS or --hours H, not both")
    days = args.older_than if hours is None else hours / 24.0
    stores = connections.failed_stores(settings)
    with progress_bar("deleting", sum(c.count for c in stores.counts())) as bar:
        count = stores.flush(days)
        bar.update(count)
    if hours is not None:
        scope = f" older than {hours:g} hours"
    else:
        scope = "" if args.older_than is None else f" older than {args.older_than:g} days"
    print(f"deleted {count} failed job(s){scope}")
    return 0


flush_command = _guarded(_flush)


# -- dispatch and migrate ---------------------------------------------------


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Queue a registered job from the shell: `--dispatch NAME --data JSON`."""
    from queues.dispatcher import dispatch
    from queues.job import JobDataError
    from queues.registry import get_registry

    registry = get_registry()
    name = args.dispatch
    if name not in registry:
        known = ", ".join(registry.names()) or "none"
        raise UsageError(f"unknown job {name!r}: registered jobs in {registry.package}: {known}")
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--data must be a JSON object, got {type(data).__name__}")
    cls = registry.resolve(name)
    try:
        job = cls(**data)
        job_id = dispatch(
            job,
            delay=args.delay or None,
            queue=_single_queue(args),
            connection=_driver(args.connection, settings),
        )
    except (TypeError, JobDataError) as exc:
        raise UsageError(f"cannot dispatch {name} with --data {args.data}: {exc}") from None
    print(job_id)
    return 0


dispatch_command = _guarded(_dispatch)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Move pending and delayed jobs, then failed jobs, between connections without loss."""
    from queues.transfer import transfer, transfer_failed

    source_name, target_name = args.from_connection, args.to_connection
    if source_name == target_name:
        raise UsageError(f"--from and --to must differ, both are {source_name!r}")
    source = _driver(source_name, settings)
    target = _driver(target_name, settings)
    wanted = _queue_names(args, None)
    names = wanted if wanted is not None else source.queues()
    total = sum(size.pending + size.delayed for size in (source.sizes(q) for q in names))
    with progress_bar(f"moving to {target_name}", total) as bar:
        report = transfer(source, target, names, progress=bar.update)
    moved_failed = transfer_failed(
        connections.get_failed_store_of(source_name, settings),
        connections.get_failed_store_of(target_name, settings),
        wanted,
    )
    for queue in sorted(report.moved):
        line = f"{queue}: moved {report.moved[queue]}"
        if report.already_there[queue]:
            line += (
                f", {report.already_there[queue]} already in {target_name} (removed from source)"
            )
        if report.lost_lease[queue]:
            line += f", {report.lost_lease[queue]} lease(s) lost (re-run to finish)"
        print(line)
    print(f"moved {report.total_moved} job(s) from {source_name} to {target_name}")
    for queue, count in sorted(moved_failed.items()):
        print(f"{queue}: moved {count} failed job(s)")
    if moved_failed:
        print(
            f"moved {sum(moved_failed.values())} failed job(s) from the {source_name} "
            f"failed store to the {target_name} one"
        )
    return 0


migrate_command = _guarded(_migrate)
