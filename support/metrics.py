"""Prometheus metrics of one process, or of a supervisor and all its children.

A process records metrics when it serves them (METRICS_PORT set) or when its
supervisor collects them (`PROMETHEUS_MULTIPROC_DIR` set in its environment).

`--workers N` uses prometheus_client's multiprocess mode: the supervisor makes
one directory per run (`MetricsRun`), starts its children with
`PROMETHEUS_MULTIPROC_DIR` pointing at it (and METRICS_PORT empty, so only the
supervisor listens), and each child writes its counters, histograms and gauges
to memory-mapped files there. The supervisor's `/metrics` merges the files of
every child that ever ran in this run: counters and histograms of a child that
died or was restarted stay in the sums (a restart never makes a total go
down), while its gauges (`livesum`: worker up, MQTT connected, in flight) are
removed by `mark_process_dead` as soon as the supervisor sees it exit. Why not
scrape the children instead: a restarted child's counters start again at 0,
so the supervisor would have to remember every dead child's last values, and a
child killed between two scrapes would lose what it counted since the last
one; the files hold every increment the moment it happens.

Values the process reads at scrape time (queue depths) come from collectors
registered on the serving registry (`MetricsEndpoint.add_collector`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import REGISTRY

#: Environment variable naming the directory a child writes its metrics to.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Content type of the text exposition format.
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Collector(Protocol):
    """A source of metrics read at scrape time (prometheus_client's collector interface)."""

    def collect(self) -> Iterable[Metric]:
        """The current metrics."""


def multiprocess_dir() -> str | None:
    """The directory this process writes its metrics to for a supervisor, or None."""
    return os.environ.get(MULTIPROC_ENV) or None


def recording(metrics_port: int | None) -> bool:
    """True when this process records metrics: it serves them or a supervisor collects them."""
    return metrics_port is not None or multiprocess_dir() is not None


class MetricsEndpoint:
    """What `/metrics` of this process returns: its own metrics, or a run's merged ones.

    `run_directory` given (a supervisor): the merged files of its children plus the
    collectors added here. Otherwise this process's own metrics (the default
    registry) plus the collectors added here.
    """

    def __init__(self, run_directory: str | None = None) -> None:
        self._lock = threading.Lock()
        self._extra = CollectorRegistry(auto_describe=False)
        self._sources: list[CollectorRegistry | MultiProcessCollector] = [self._extra]
        if run_directory is not None:
            self._sources.append(
                MultiProcessCollector(None, path=run_directory)  # type: ignore[no-untyped-call]
            )
        else:
            self._sources.append(REGISTRY)

    def add_collector(self, collector: Collector) -> None:
        """Read `collector` at every scrape (e.g. queue depths)."""
        self._extra.register(collector)

    def collect(self) -> Iterable[Metric]:
        """Every metric of every source (the registry protocol of `generate_latest`)."""
        for source in self._sources:
            yield from source.collect()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        with self._lock:
            return generate_latest(self)


def live_gauge_sum(run_directory: str, name: str) -> float:
    """The sum of gauge `name` over the live processes of a run (0 when none set it)."""
    total = 0.0
    collector = MultiProcessCollector(None, path=run_directory)  # type: ignore[no-untyped-call]
    for metric in collector.collect():  # type: ignore[no-untyped-call]
        if metric.name == name:
            total += sum(sample.value for sample in metric.samples)
    return total


def child_environment(run: MetricsRun | None = None) -> dict[str, str]:
    """Environment of a supervised child: it never listens itself (no METRICS_PORT, no
    dashboard: its supervisor serves them), and writes its metrics to `run`'s directory."""
    env = {**os.environ, "METRICS_PORT": "", "DASHBOARD": "false"}
    if run is not None:
        env[MULTIPROC_ENV] = run.path
    return env


class MetricsRun:
    """The metrics directory of one supervisor run, removed when the run ends."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="mqtt-jobs-metrics-")

    def child_exited(self, pid: int) -> None:
        """Drop the live gauges of a child that exited (its counters stay in the sums)."""
        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Delete the directory."""
        shutil.rmtree(self.path, ignore_errors=True)
