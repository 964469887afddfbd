"""Prometheus metrics of the router process (`--run`), labelled by route pattern.

Route labels are patterns (`devices/{device_id}/telemetry`), never raw topics,
so a million devices make one series per route; a message no route matched is
counted under `route="(none)"`. What each costs on the per-message path:

* `mqtt_messages_total{route,outcome}` (handled, unmatched, dead_lettered):
  one increment per finished message, made by the intake once per batch.
* `mqtt_handler_seconds{route}` and `mqtt_handler_failures_total{route}`: the
  router call is timed (two clock reads and one observation per attempt).
* The rest is read from the intake's and the runtime's own counters once per
  `HEALTH_INTERVAL` by `sample()` (nothing on the per-message path):
  `mqtt_messages_received_total`, `mqtt_qos0_dropped_total`,
  `mqtt_reconnects_total`, and the gauges `mqtt_intake_in_flight`,
  `mqtt_backend_outage` (1 while messages are held for a queue outage: the
  intake's backpressure), `mqtt_connected` and `mqtt_subscribed`.

Gauges are `livesum` in a `--workers N` run: the sum over the live processes
(support/metrics.py), so `mqtt_connected` is the number of connected clients.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from core.delivery import Dispatcher, Outcome, route_pattern
from core.message import Message

#: Route label of a message that no route matched.
NO_ROUTE = "(none)"
#: Upper bounds of the handler duration buckets, seconds.
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RouterMetrics:
    """The metric objects of the router (one set per process: see `router_metrics`)."""

    def __init__(self) -> None:
        self.messages = Counter(
            "mqtt_messages", "Messages finished, by route pattern and outcome", ["route", "outcome"]
        )
        self.received = Counter("mqtt_messages_received", "Messages received from the broker")
        self.qos0_dropped = Counter(
            "mqtt_qos0_dropped", "QoS 0 messages dropped because the intake backlog was full"
        )
        self.handler_seconds = Histogram(
            "mqtt_handler_seconds",
            "Time of one handler attempt (middleware included), by route pattern",
            ["route"],
            buckets=HANDLER_BUCKETS,
        )
        self.handler_failures = Counter(
            "mqtt_handler_failures", "Handler attempts that raised, by route pattern", ["route"]
        )
        self.reconnects = Counter("mqtt_reconnects", "Connections to the broker after the first")
        self.in_flight = Gauge(
            "mqtt_intake_in_flight",
            "Messages received and not finished yet",
            multiprocess_mode="livesum",
        )
        self.outage = Gauge(
            "mqtt_backend_outage",
            "1 while messages are held unacknowledged because the queue backend is down",
            multiprocess_mode="livesum",
        )
        self.connected = Gauge(
            "mqtt_connected", "Clients connected to the broker", multiprocess_mode="livesum"
        )
        self.subscribed = Gauge(
            "mqtt_subscribed",
            "Clients connected with every subscription acknowledged",
            multiprocess_mode="livesum",
        )


@functools.cache
def router_metrics() -> RouterMetrics:
    """The process's router metrics, registered on first use."""
    return RouterMetrics()


class RouterObserver:
    """Feeds `RouterMetrics` from one runtime: outcomes per batch, samples per interval."""

    def __init__(self, metrics: RouterMetrics | None = None) -> None:
        self.metrics = metrics or router_metrics()
        self._seen: dict[str, int] = {}
        self._outcomes: dict[tuple[str, str], Any] = {}

    def timed(self, dispatcher: Dispatcher) -> Dispatcher:
        """`dispatcher` with each call timed and each failure counted, by route."""
        return _TimedDispatcher(dispatcher, self.metrics)

    def finished(self, outcomes: Sequence[Outcome]) -> None:
        """Count the outcomes of one batch (called by the intake after the batch's store)."""
        counts: dict[tuple[str, str], int] = {}
        for outcome in outcomes:
            pattern = route_pattern(outcome.message)
            if outcome.error is not None:
                kind = "dead_lettered"
            elif outcome.routed:
                kind = "handled"
            else:
                kind = "unmatched"
            key = (NO_ROUTE if pattern == "-" else pattern, kind)
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():  # one increment per route and outcome of the batch
            child = self._outcomes.get(key)
            if child is None:
                child = self._outcomes[key] = self.metrics.messages.labels(*key)
            child.inc(count)

    def sample(self, runtime: Any) -> None:
        """Bring the sampled counters and gauges up to date from `runtime` (an MqttRuntime)."""
        stats = runtime.stats
        metrics = self.metrics
        self._advance(metrics.received, "received", stats.received)
        self._advance(metrics.qos0_dropped, "qos0_dropped", stats.qos0_dropped)
        self._advance(metrics.reconnects, "reconnects", max(runtime.connections - 1, 0))
        metrics.in_flight.set(runtime.intake.backlog)
        metrics.outage.set(1 if runtime.intake.in_outage else 0)
        metrics.connected.set(1 if runtime.connected else 0)
        metrics.subscribed.set(1 if runtime.ready.is_set() else 0)

    def stopped(self) -> None:
        """The runtime stopped: it holds nothing and is not connected."""
        for gauge in (
            self.metrics.in_flight,
            self.metrics.outage,
            self.metrics.connected,
            self.metrics.subscribed,
        ):
            gauge.set(0)

    def _advance(self, counter: Counter, name: str, total: int) -> None:
        """Increase `counter` by what `total` grew since the last sample."""
        delta = total - self._seen.get(name, 0)
        if delta > 0:
            counter.inc(delta)
            self._seen[name] = total


class _TimedDispatcher:
    """A dispatcher whose calls are timed per route pattern."""

    def __init__(self, inner: Dispatcher, metrics: RouterMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._children: dict[str, tuple[Any, Any]] = {}

    def dispatch(self, message: Message) -> bool:
        """Run the route (see core.delivery.Dispatcher); time it under its pattern."""
        started = time.perf_counter()
        failed = True
        try:
            routed = self._inner.dispatch(message)
            failed = False
            return routed
        finally:
            elapsed = time.perf_counter() - started
            route = message.route
            if route is not None:
                pattern = str(getattr(route, "pattern", route))
                children = self._children.get(pattern)
                if children is None:
                    children = self._children[pattern] = (
                        self._metrics.handler_seconds.labels(pattern),
                        self._metrics.handler_failures.labels(pattern),
                    )
                children[0].observe(elapsed)
                if failed:
                    children[1].inc()
