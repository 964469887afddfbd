"""Queue depths read at scrape time, and the queue backend's readiness.

`QueueDepths` reads `sizes()` of each queue of the given connections (the
drivers' counters and indexes: no scan of the jobs) at most once per
`CACHE_SECONDS`, however often `/metrics`, `/ready` and the dashboard ask:
a Prometheus scraping every second and a compose health check every ten
seconds cost one read per interval. It exports the gauge
`queue_depth{connection,queue,state}` (state: pending, delayed, reserved,
failed) and, as `check()`, the readiness of the backends: None when every
connection answered, else which did not and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from queues.drivers.base import QueueDriver, QueueSizes

#: Seconds a reading of the queue depths is reused.
CACHE_SECONDS = 2.0
#: States of a job that `queue_depth` reports, in QueueSizes' field order.
STATES = ("pending", "delayed", "reserved", "failed")


@dataclass(frozen=True)
class Depth:
    """The sizes of one queue of one connection."""

    connection: str
    queue: str
    sizes: QueueSizes


@dataclass(frozen=True)
class Reading:
    """One reading of every connection: the depths, and the errors of those that failed."""

    depths: list[Depth]
    errors: dict[str, str]
    at: float


class QueueDepths:
    """Cached sizes of the queues of some connections (see the module docstring).

    `drivers` returns the drivers to read (called at each reading, so a
    connection is built lazily); `queues`, when given, fixes the queue names
    (a worker's own), else each connection's known queues are read: those
    holding jobs, those with failed jobs, `default` and `extra_queues`.
    """

    def __init__(
        self,
        drivers: Callable[[], Sequence[QueueDriver]],
        queues: Sequence[str] | None = None,
        extra_queues: Iterable[str] = (),
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._drivers = drivers
        self._queues = list(queues) if queues is not None else None
        self._extra = set(extra_queues) | {"default"}
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._last: Reading | None = None

    def read(self) -> Reading:
        """The depths now, or as read less than `cache_seconds` ago."""
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.at < self._cache_seconds:
                return last
            self._last = self._read()
            return self._last

    def _read(self) -> Reading:
        depths: list[Depth] = []
        errors: dict[str, str] = {}
        try:
            drivers = list(self._drivers())
        except Exception as exc:
            return Reading([], {"queue": _one_line(exc)}, time.monotonic())
        for driver in drivers:
            try:
                for queue in self._names(driver):
                    depths.append(Depth(driver.name, queue, driver.sizes(queue)))
            except Exception as exc:
                errors[driver.name] = _one_line(exc)
        return Reading(depths, errors, time.monotonic())

    def _names(self, driver: QueueDriver) -> list[str]:
        if self._queues is not None:
            return self._queues
        failed = driver.failed_store.counts()
        return sorted(set(driver.queues()) | set(failed) | self._extra)

    def check(self) -> str | None:
        """Readiness: None when every connection answered, else why not."""
        errors = self.read().errors
        if not errors:
            return None
        return "; ".join(f"{name}: {error}" for name, error in sorted(errors.items()))

    def collect(self) -> Iterable[Metric]:
        """The `queue_depth` gauge (prometheus_client's collector interface)."""
        family = GaugeMetricFamily(
            "queue_depth",
            "Jobs per queue, connection and state (pending, delayed, reserved, failed)",
            labels=["connection", "queue", "state"],
        )
        for depth in self.read().depths:
            sizes = depth.sizes
            for state, value in zip(
                STATES, (sizes.pending, sizes.delayed, sizes.reserved, sizes.failed), strict=True
            ):
                family.add_metric([depth.connection, depth.queue, state], value)
        yield family


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
