"""The operations side of a `--queue-work` process: metrics, health, board, restarts.

A single worker process (`serve_worker`) serves `/metrics`, `/health` (its loop
turns) and `/ready` (its queue backend answers) on METRICS_PORT when set, and
reports itself on the worker board (queues/worker_board.py) so the dashboard
lists it and `--queue-restart` reaches it. A supervisor of `--workers N`
(`supervise_workers`) serves one endpoint for all of them: the children's
metrics merged (support/metrics.py), ready when the backend answers and at
least one worker runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from config.settings import Settings
from queues.drivers.base import QueueDriver
from queues.queue_metrics import QueueDepths
from queues.worker_board import board_of
from queues.worker_monitor import WorkerMonitor
from support.logging_setup import process_name
from support.metrics import MetricsRun, child_environment, live_gauge_sum
from support.ops import Ops
from support.supervisor import Child, Supervisor

log = logging.getLogger("queues.worker")

#: Exit code when METRICS_PORT cannot be listened on.
EXIT_USAGE = 2


class RunnableWorker(Protocol):
    """What `serve_worker` runs: anything with `run() -> exit code` (queues.worker.Worker)."""

    def run(self) -> int:
        """Run until stopped; return the exit code."""


def worker_monitor(settings: Settings, driver: QueueDriver, ops: Ops) -> WorkerMonitor:
    """The monitor of this process's worker: on the board of its connection, with metrics
    when the process records them."""
    return WorkerMonitor(process_name(), board_of(driver), ops.records_metrics)


def serve_worker(
    settings: Settings,
    driver: QueueDriver,
    queues: Sequence[str],
    build: Callable[[WorkerMonitor], RunnableWorker],
) -> int:
    """Run the worker `build(monitor)` makes, with its health, metrics and board entry."""
    ops = Ops(settings)
    monitor = worker_monitor(settings, driver, ops)
    ops.health.add_liveness("loop", monitor.loop.check)
    if ops.metrics is not None:
        depths = QueueDepths(lambda: [driver], queues)
        ops.metrics.add_collector(depths)
        ops.health.add_readiness("queue", depths.check)
    worker = build(monitor)
    try:
        ops.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return worker.run()
    finally:
        ops.stop()


def supervise_workers(
    settings: Settings,
    children: list[Child],
    drivers: Callable[[], Sequence[QueueDriver]],
    queues: Sequence[str],
    stop_timeout: float,
    restart_planned: bool,
) -> int:
    """Run the supervisor of `--queue-work --workers N` with one metrics/health endpoint."""
    run = MetricsRun() if settings.metrics_port is not None else None
    ops = Ops(settings, run.path if run is not None else None)
    supervisor = Supervisor(
        children,
        stop_timeout=stop_timeout,
        env=child_environment(run),
        on_exit=run.child_exited if run is not None else None,
        restart_planned=restart_planned,
    )
    ops.health.add_liveness("supervisor", supervisor.check_alive)
    if run is not None and ops.metrics is not None:
        depths = QueueDepths(drivers, queues)
        ops.metrics.add_collector(depths)
        ops.health.add_readiness("queue", depths.check)
        ops.health.add_readiness("workers", lambda: _workers_up(run.path))
    try:
        ops.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if run is not None:
            run.close()
        return EXIT_USAGE
    try:
        return supervisor.run()
    finally:
        ops.stop()
        if run is not None:
            run.close()


def _workers_up(path: str) -> str | None:
    """None when at least one worker runs, else why not."""
    if live_gauge_sum(path, "queue_worker_up") >= 1:
        return None
    return "no worker process is running"
