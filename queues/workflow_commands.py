"""`--job-status ID` and `--batch-status ID`: a job's, a chain's or a batch's progress.

Commands of cli.py (`fn(args, settings) -> exit code`, guarded like the other
queue commands: one stderr line and exit 2 for an unknown id, 1 for a backend
error). A finished job, chain link or batch stays readable for
JOB_STATUS_RETENTION seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from queues.commands import UsageError, _driver, _guarded, _print_json
from queues.drivers.base import JobStatus, QueueDriver
from queues.workflows import store_of

#: Most links of a chain `--job-status CHAIN_ID` walks.
MAX_CHAIN_LINKS = 1000


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


def _print_status(status: JobStatus) -> None:
    print(f"{'job id:':<13}{status.job_id}")
    print(f"{'state:':<13}{status.state}")
    print(f"{'job:':<13}{status.job or '-'}")
    print(f"{'queue:':<13}{status.queue} ({status.connection})")
    print(f"{'attempts:':<13}{'-' if status.attempts is None else status.attempts}")
    if status.started_at is not None:
        print(f"{'started at:':<13}{_when(status.started_at)}")
    if status.finished_at is not None:
        print(f"{'finished at:':<13}{_when(status.finished_at)}")
    if status.reason:
        print(f"{'reason:':<13}{status.reason}")


def chain_links(driver: QueueDriver, chain_id: str) -> list[JobStatus]:
    """The known links of a chain (ids `<chain>.0`, `<chain>.1`, ...), up to the first unknown."""
    links: list[JobStatus] = []
    for index in range(MAX_CHAIN_LINKS):
        status = driver.job_status(f"{chain_id}.{index}")
        if status is None:
            break
        links.append(status)
    return links


def _job_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print a job's status by its id; for a chain id, the status of each link."""
    key = args.job_status
    driver = _driver(args.connection, settings)
    status = driver.job_status(key)
    if status is not None:
        if args.json:
            _print_json(asdict(status))
        else:
            _print_status(status)
        return 0
    links = chain_links(driver, key)
    if not links:
        raise UsageError(
            f"no job or chain with id {key!r} on the {driver.name} connection (finished jobs "
            f"are kept JOB_STATUS_RETENTION={settings.job_status_retention} s; try --connection)"
        )
    stopped = next((link for link in links if link.state == "failed"), None)
    if args.json:
        _print_json({"chain": key, "links": [asdict(link) for link in links]})
        return 0
    print(f"chain {key}: {len(links)} link(s) queued so far")
    for index, link in enumerate(links):
        reason = f" ({link.reason})" if link.reason else ""
        print(f"  link {index + 1}: {link.job or '-'} {link.state}{reason}")
    if stopped is not None:
        print(f"stopped at link {links.index(stopped) + 1}: the links after it were not queued")
    return 0


job_status_command = _guarded(_job_status)


def batch_view(driver: QueueDriver, batch_id: str) -> dict[str, Any] | None:
    """A batch's progress as JSON-ready data, or None if unknown."""
    state = store_of(driver).get(batch_id)
    return None if state is None else state.as_dict()


def _batch_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print a batch's progress: total, pending, done, failed, and when it finished."""
    driver = _driver(args.connection, settings)
    view = batch_view(driver, args.batch_status)
    if view is None:
        raise UsageError(
            f"no batch with id {args.batch_status!r} on the {driver.name} connection (finished "
            f"batches are kept JOB_STATUS_RETENTION={settings.job_status_retention} s)"
        )
    if args.json:
        _print_json(view)
        return 0
    print(f"{'batch:':<13}{view['id']}" + (f" ({view['name']})" if view["name"] else ""))
    for key in ("total", "pending", "done", "failed"):
        print(f"{key + ':':<13}{view[key]}")
    print(f"{'created at:':<13}{_when(view['created_at'])}")
    print(f"{'finished at:':<13}{_when(view['finished_at'])}")
    print(f"{'callbacks:':<13}{', '.join(view['callbacks']) or '-'}")
    return 0


batch_status_command = _guarded(_batch_status)
