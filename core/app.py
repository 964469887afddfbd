"""`python main.py --run [--workers N]`: broker, routes and MQTT runtime wired together.

With no MQTT_HOST an embedded broker starts first (its log line is the first
one). With `--workers 1` (the default) this process loads the routes and runs
one `MqttRuntime`. With `--workers N` it supervises N spawned processes, each
initialised from scratch like a main process (settings, queue connections,
routes) and each its own MQTT client `{client id}-{index}`: every worker
subscribes to the shared (`$share/...`) routes, so the broker spreads their
messages over the workers; only worker 0 subscribes to the non-shared routes, so
those are handled once. A worker that dies is restarted (with backoff if it keeps
dying); SIGTERM/SIGINT stop everything cleanly: workers disconnect, then the
embedded broker stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from config.settings import ConfigError, Settings, load_settings
from core.broker import BrokerStartError, EmbeddedBroker, start_embedded_broker
from core.logging_setup import configure_logging
from core.mqtt import MqttRuntime, SubscriptionSpec, default_client_id

log = logging.getLogger(__name__)

#: Package whose modules' `router` objects make up the route table.
DEFAULT_ROUTES_PACKAGE = "routes"
#: Seconds between two checks of the worker processes by the supervisor.
SUPERVISE_INTERVAL = 0.2
#: Seconds before a dead worker is restarted; doubles while it keeps dying young.
RESTART_DELAY = 1.0
#: Longest wait before restarting a worker that keeps dying, in seconds.
MAX_RESTART_DELAY = 30.0
#: Seconds a worker must have lived for its death to reset the restart backoff.
HEALTHY_UPTIME = 10.0
#: Seconds the supervisor waits for workers to exit after forwarding SIGTERM.
WORKER_STOP_TIMEOUT = 15.0
#: Seconds between checks that the MQTT network thread is still alive.
HEALTH_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs beyond its own settings (picklable for spawn)."""

    index: int
    count: int
    client_id: str
    mqtt_host: str
    mqtt_port: int
    shared_supported: bool
    routes_package: str


@dataclass(frozen=True)
class _PlainSubscription:
    """A shared route's filter subscribed without `$share` (broker lacks it)."""

    topic: str
    qos: int


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """`--run`: start the embedded broker if needed, then serve routes until SIGTERM/SIGINT.

    Returns 0 after a clean stop, 2 for a configuration problem (printed as one line).
    """
    workers = int(getattr(args, "workers", 1) or 1)
    if workers < 1:
        print(f"error: --workers must be at least 1, got {workers}", file=sys.stderr)
        return 2
    broker: EmbeddedBroker | None = None
    if settings.uses_embedded_broker:
        try:
            broker = start_embedded_broker(settings)
        except (ConfigError, BrokerStartError) as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, mqtt_host=broker.host, mqtt_port=broker.port)
    try:
        return serve(
            settings,
            workers,
            shared_supported=broker is None or broker.supports_shared_subscriptions,
        )
    finally:
        if broker is not None:
            broker.stop()
            log.info("embedded MQTT broker stopped")


def serve(
    settings: Settings,
    workers: int = 1,
    routes_package: str = DEFAULT_ROUTES_PACKAGE,
    shared_supported: bool = True,
) -> int:
    """Serve the routes of `routes_package` with `workers` processes until SIGTERM/SIGINT.

    `settings.mqtt_host` must be set (the embedded broker's address, if any).
    """
    if settings.mqtt_host is None:
        raise ConfigError("serve() needs MQTT_HOST: start the embedded broker first")
    if workers > 1 and not shared_supported:
        log.warning(
            "the broker has no $share subscriptions: running 1 process instead of --workers %d",
            workers,
        )
        workers = 1
    base_id = default_client_id(settings)

    def spec(index: int) -> WorkerSpec:
        return WorkerSpec(
            index=index,
            count=workers,
            client_id=base_id if workers == 1 else f"{base_id}-{index}",
            mqtt_host=settings.mqtt_host or "",
            mqtt_port=settings.mqtt_port,
            shared_supported=shared_supported,
            routes_package=routes_package,
        )

    stop = threading.Event()
    with _stop_on_signals(stop):
        if workers == 1:
            return run_worker(settings, spec(0), stop)
        return _supervise([spec(i) for i in range(workers)], stop)


def run_worker(settings: Settings, spec: WorkerSpec, stop: threading.Event) -> int:
    """Initialise this process (queue connections, routes) and route messages until `stop`.

    Returns 0 after `stop`, 1 if the MQTT network loop died (the supervisor restarts us).
    """
    from core.discovery import load_routes
    from queues import connections

    connections.configure(settings)
    router = load_routes(spec.routes_package)
    router.default_max_payload = settings.mqtt_max_payload
    subscriptions = worker_subscriptions(
        router.subscriptions(settings.mqtt_group_name), spec.index, spec.shared_supported
    )
    if not subscriptions:
        log.warning("worker %d has no routes to subscribe to (no shared routes?)", spec.index)
    runtime = MqttRuntime(settings, router, subscriptions, client_id=spec.client_id)
    runtime.start()
    try:
        while not stop.wait(HEALTH_INTERVAL):
            if not runtime.alive:
                log.error("MQTT network loop of %s ended; exiting", runtime.describe)
                return 1
    finally:
        runtime.stop()
    return 0


def worker_subscriptions(
    subscriptions: Sequence[Any], index: int, shared_supported: bool = True
) -> list[SubscriptionSpec]:
    """What worker `index` subscribes to: shared routes always, the others in worker 0 only.

    Without broker support for `$share`, shared routes subscribe to their plain
    filter (with a warning) and every route lives in worker 0.
    """
    if shared_supported:
        return [sub for sub in subscriptions if index == 0 or sub.shared]
    if index != 0:
        return []
    merged: dict[str, int] = {}
    for sub in subscriptions:
        if sub.shared:
            log.warning(
                "shared route %r subscribes without $share: the broker does not support it",
                sub.filter,
            )
        merged[sub.filter] = max(merged.get(sub.filter, 0), sub.qos)
    return [_PlainSubscription(topic, qos) for topic, qos in merged.items()]


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM/SIGINT while inside (main thread only), then restore handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _worker_main(spec: WorkerSpec) -> None:
    """Entry point of a spawned worker: initialise like a main process, then serve."""
    settings = load_settings()
    settings = dataclasses.replace(settings, mqtt_host=spec.mqtt_host, mqtt_port=spec.mqtt_port)
    configure_logging(settings.log_level)
    stop = threading.Event()
    with _stop_on_signals(stop):
        code = run_worker(settings, spec, stop)
    sys.exit(code)


class _Supervised:
    """One worker slot: its current process and its restart backoff."""

    def __init__(self, spec: WorkerSpec, context: Any) -> None:
        self.spec = spec
        self.context = context
        self.process: Any = None
        self.started_at = 0.0
        self.delay = RESTART_DELAY
        self.restart_at: float | None = None

    def start(self) -> None:
        self.process = self.context.Process(
            target=_worker_main, args=(self.spec,), name=f"mqtt-worker-{self.spec.index}"
        )
        self.process.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("worker %d started (pid %d)", self.spec.index, self.process.pid)

    def check(self) -> None:
        """Schedule a restart of a dead process, and do it when its delay has passed."""
        now = time.monotonic()
        if self.restart_at is None:
            if self.process.is_alive():
                return
            if now - self.started_at >= HEALTHY_UPTIME:
                self.delay = RESTART_DELAY
            wait = self.delay
            self.delay = min(self.delay * 2, MAX_RESTART_DELAY)
            log.warning(
                "worker %d (pid %d) exited with code %s; restarting in %.1f s",
                self.spec.index,
                self.process.pid,
                self.process.exitcode,
                wait,
            )
            self.restart_at = now + wait
        if now >= self.restart_at:
            self.start()


def _supervise(specs: list[WorkerSpec], stop: threading.Event) -> int:
    """Run one process per spec, restart those that die, stop them all on `stop`."""
    context = multiprocessing.get_context("spawn")
    slots = [_Supervised(spec, context) for spec in specs]
    for slot in slots:
        slot.start()
    while not stop.wait(SUPERVISE_INTERVAL):
        for slot in slots:
            slot.check()
    log.info("stopping %d worker(s)", len(slots))
    for slot in slots:
        if slot.process.is_alive():
            slot.process.terminate()  # SIGTERM: the worker disconnects cleanly
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    for slot in slots:
        slot.process.join(max(0.0, deadline - time.monotonic()))
        if slot.process.is_alive():
            log.warning("worker %d did not stop in time; killing it", slot.spec.index)
            slot.process.kill()
            slot.process.join()
    return 0
