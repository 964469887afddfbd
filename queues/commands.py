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
from queues.drivers.base import FailedJob, FailedStore, QueueDriver, QueueError
from queues.envelope import Envelope, EnvelopeError
from support.progress import progress_bar

#: Exit code of a wrong argument.
EXIT_USAGE = 2
#: Exit code of a backend (Redis / SQL) failure.
EXIT_BACKEND = 1
#: Failed jobs listed by --queue-failed (newest first).
FAILED_LIST_LIMIT = 100
#: Failed jobs fetched per round by --queue-retry all.
RETRY_BATCH = 500


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
    raw = getattr(args, "queue", None)
    if not raw:
        return default
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--queue needs at least one queue name, got {raw!r}")
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
    """Run one worker, or a supervisor of `--workers N` worker processes."""
    from queues.backoff import parse_backoff
    from queues.registry import DuplicateJobError, get_registry

    backoff = None if args.backoff is None else parse_backoff(args.backoff)
    queues = _queue_names(args, ["default"])
    assert queues is not None
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

    try:
        registry = get_registry()
    except (ImportError, DuplicateJobError) as exc:
        raise UsageError(f"cannot load the jobs package: {exc}") from None
    driver = _driver(args.connection, settings)
    driver.sizes(queues[0])  # fail fast, with one line, when the server is unreachable

    from queues.worker import Worker
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
    """Pending, delayed, reserved and failed jobs per queue of each connection."""
    names = [args.connection] if args.connection else ["redis", "database"]
    wanted = _queue_names(args, None)
    report: list[dict[str, Any]] = []
    for name in names:
        if name == "redis" and not settings.enable_redis:
            report.append({"connection": name, "enabled": False, "queues": []})
            continue
        driver = connections.get_driver(name, settings)
        queues = wanted if wanted is not None else sorted(set(driver.queues()) | {"default"})
        rows = []
        for queue in queues:
            sizes = driver.sizes(queue)
            rows.append(
                {
                    "queue": queue,
                    "pending": sizes.pending,
                    "delayed": sizes.delayed,
                    "reserved": sizes.reserved,
                    "failed": sizes.failed,
                    "oldest_pending_age": sizes.oldest_pending_age,
                }
            )
        report.append({"connection": name, "enabled": True, "queues": rows})
    if args.json:
        _print_json({"connections": report})
        return 0
    table: list[list[str]] = []
    for entry in report:
        if not entry["enabled"]:
            table.append([entry["connection"], "(not enabled)", "-", "-", "-", "-", "-"])
            continue
        for row in entry["queues"]:
            table.append(
                [
                    entry["connection"],
                    row["queue"],
                    str(row["pending"]),
                    str(row["delayed"]),
                    str(row["reserved"]),
                    str(row["failed"]),
                    _age(row["oldest_pending_age"]),
                ]
            )
    _table(
        ["CONNECTION", "QUEUE", "PENDING", "DELAYED", "RESERVED", "FAILED", "OLDEST PENDING"],
        table,
    )
    return 0


status_command = _guarded(_status)


# -- failed jobs ------------------------------------------------------------


def _job_name(payload: str) -> str:
    try:
        return Envelope.from_json(payload).job
    except EnvelopeError:
        return "?"


def failed_entry(failed: FailedJob, full: bool) -> dict[str, Any]:
    """A failed job as operators see it: the exception's first line, or everything
    (full traceback and decoded payload) with `full`."""
    exception_lines = failed.exception.splitlines()
    entry: dict[str, Any] = {
        "id": failed.id,
        "connection": failed.connection,
        "queue": failed.queue,
        "job": _job_name(failed.payload),
        "failed_at": _iso(failed),
        "exception": failed.exception if full else (exception_lines[0] if exception_lines else ""),
    }
    if full:
        try:
            entry["payload"] = json.loads(failed.payload)
        except ValueError:
            entry["payload"] = failed.payload
    return entry


def _iso(failed: FailedJob) -> str:
    stamp = failed.failed_at
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.isoformat(timespec="seconds")


def _failed(args: argparse.Namespace, settings: Settings) -> int:
    """The newest failed jobs: id, queue, job name, time and first exception line."""
    store = connections.get_failed_store(settings)
    entries = [
        failed_entry(f, full=False) for f in store.all(_single_queue(args), FAILED_LIST_LIMIT)
    ]
    if args.json:
        _print_json(entries)
        return 0
    if not entries:
        print("no failed jobs")
        return 0
    _table(
        ["ID", "CONNECTION", "QUEUE", "JOB", "FAILED AT", "EXCEPTION"],
        [
            [e["id"], e["connection"], e["queue"], e["job"], e["failed_at"], e["exception"][:120]]
            for e in entries
        ],
    )
    return 0


failed_command = _guarded(_failed)


def _get_failed(store: FailedStore, failed_id: str) -> FailedJob:
    failed = store.get(failed_id)
    if failed is None:
        raise UsageError(f"no failed job with id {failed_id!r} (see --queue-failed)")
    return failed


def _failed_show(args: argparse.Namespace, settings: Settings) -> int:
    """Everything about one failed job, including its traceback and payload."""
    failed = _get_failed(connections.get_failed_store(settings), args.queue_failed_show)
    entry = failed_entry(failed, full=True)
    if args.json:
        _print_json(entry)
        return 0
    for key in ("id", "connection", "queue", "job", "failed_at"):
        print(f"{key + ':':<12}{entry[key]}")
    print("payload:")
    print(json.dumps(entry["payload"], indent=2, ensure_ascii=False))
    print("exception:")
    print(failed.exception.rstrip())
    return 0


failed_show_command = _guarded(_failed_show)


def retry_failed(failed: FailedJob, store: FailedStore, settings: Settings) -> str:
    """Push one failed job back to its queue with attempts 0, then forget it.

    Push first, forget second, so a crash in between cannot lose the job; a
    re-run then finds the job's id already queued and only forgets it. Window:
    if that re-queued copy already finished before the re-run, the re-run
    queues it once more. A `retry_until` that has passed is cleared.
    """
    try:
        envelope = Envelope.from_json(failed.payload)
    except EnvelopeError as exc:
        raise UsageError(f"failed job {failed.id} cannot be retried: {exc}") from None
    envelope.attempts = 0
    if envelope.retry_until is not None and envelope.retry_until <= time.time():
        envelope.retry_until = None
    driver = _driver(failed.connection, settings)
    if not driver.contains(failed.queue, envelope.id):
        driver.push(failed.queue, envelope.to_json())
    store.forget(failed.id)
    return envelope.id


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    """Retry failed jobs: by id (several ids allowed), `--range FIRST-LAST` of ids, or
    `all` (optionally of one --queue)."""
    from queues.control_commands import retry_ids, retry_range

    store = connections.get_failed_store(settings)
    given = args.queue_retry
    targets = [given] if isinstance(given, str) else list(given or [])
    span = getattr(args, "range", None)
    if span is not None:
        if targets:
            raise UsageError("give failed job ids or --range, not both")
        return retry_range(span, store, settings)
    if not targets:
        raise UsageError("--queue-retry needs failed job ids, all, or --range FIRST-LAST")
    if targets != ["all"]:
        if "all" in targets:
            raise UsageError("--queue-retry all takes no ids besides it")
        return retry_ids(targets, store, settings)
    queue = _single_queue(args)
    retried, problems = 0, 0
    skipped: set[str] = set()
    counts = store.counts()
    bar = progress_bar("retrying", sum(counts.values()) if queue is None else counts.get(queue, 0))
    with bar:
        while True:
            # Fetch past the ones that could not be retried, or they would fill every batch.
            batch = [f for f in store.all(queue, RETRY_BATCH + len(skipped)) if f.id not in skipped]
            if not batch:
                break
            for failed in batch:
                try:
                    retry_failed(failed, store, settings)
                    retried += 1
                except UsageError as exc:
                    bar.write(f"error: {exc}", file=sys.stderr)
                    skipped.add(failed.id)
                    problems += 1
                bar.update(1)
    print(f"retried {retried} failed job(s)" + (f", {problems} could not be" if problems else ""))
    return EXIT_BACKEND if problems else 0


retry_command = _guarded(_retry)


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    """Delete one failed job."""
    if not connections.get_failed_store(settings).forget(args.queue_forget):
        raise UsageError(f"no failed job with id {args.queue_forget!r} (see --queue-failed)")
    print(f"forgot failed job {args.queue_forget}")
    return 0


forget_command = _guarded(_forget)


def _flush(args: argparse.Namespace, settings: Settings) -> int:
    """Delete all failed jobs, or those older than --older-than DAYS or --hours H."""
    hours = getattr(args, "hours", None)
    if args.older_than is not None and hours is not None:
        raise UsageError("give --older-than DAYS or --hours H, not both")
    days = args.older_than if hours is None else hours / 24.0
    store = connections.get_failed_store(settings)
    with progress_bar("deleting", sum(store.counts().values())) as bar:
        count = store.flush(days)
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
    """Move pending and delayed jobs between connections without loss or duplicates."""
    from queues.transfer import transfer

    source_name, target_name = args.from_connection, args.to_connection
    if source_name == target_name:
        raise UsageError(f"--from and --to must differ, both are {source_name!r}")
    source = _driver(source_name, settings)
    target = _driver(target_name, settings)
    queues = _queue_names(args, None)
    names = queues if queues is not None else source.queues()
    sizes = [source.sizes(queue) for queue in names]
    total = sum(size.pending + size.delayed for size in sizes)
    with progress_bar(f"moving to {target_name}", total) as bar:
        report = transfer(source, target, names, progress=bar.update)
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
    return 0


migrate_command = _guarded(_migrate)
