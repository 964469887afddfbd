"""`python main.py --run [--workers N]`: broker, routes and MQTT runtime wired together.

With no MQTT_HOST an embedded broker starts first (its log line is the first
one). With `--workers 1` (the default) this process loads the routes and runs
one `MqttRuntime`. With `--workers N` it supervises (support/supervisor.py) N
child processes `main.py --run --child-index I ...`, each initialised from
scratch like a main process (settings, queue connections, routes) and each its
own MQTT client `{client id}-{index}`: every worker subscribes to the shared
(`$share/...`) routes, so the broker spreads their messages over the workers;
only worker 0 subscribes to the non-shared routes, so those are handled once.
The supervisor's rules apply: a worker that dies is restarted (with a jittered
backoff if it keeps dying), workers exit when the parent is gone, and
SIGTERM/SIGINT stop everything cleanly: workers disconnect, then the embedded
broker stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from config.settings import ConfigError, Settings
from core.broker import BrokerStartError, EmbeddedBroker, start_embedded_broker
from core.intake import Outbox
from core.mqtt import MqttRuntime, SubscriptionSpec, default_client_id
from support.supervisor import Child, Supervisor

log = logging.getLogger(__name__)

#: Package whose modules' `router` objects make up the route table.
DEFAULT_ROUTES_PACKAGE = "routes"
#: Seconds the supervisor waits for workers to exit after forwarding SIGTERM.
WORKER_STOP_TIMEOUT = 15.0
#: Seconds between checks that the MQTT network thread is still alive.
HEALTH_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs beyond its own settings (see `child_arguments`)."""

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


def run_command(args: argparse.Namespace, settings: Settings, outbox: Outbox | None = None) -> int:
    """`--run`: start the embedded broker if needed, then serve routes until SIGTERM/SIGINT.

    Returns 0 after a clean stop, 2 for a configuration problem (printed as one line).
    In a child of `--run --workers N` (`--child-index` given) it serves that
    worker's share instead. `outbox` records what handlers dispatch (core/intake.py).
    """
    if getattr(args, "child_index", None) is not None:
        return _run_child(args, settings, outbox)
    workers = int(getattr(args, "workers", 1) or 1)
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
            routes_package=settings.routes_package,
            shared_supported=broker is None or broker.supports_shared_subscriptions,
            outbox=outbox,
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
    outbox: Outbox | None = None,
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

    if workers > 1:
        children = [
            Child(f"run-worker-{i}", tuple(child_arguments(spec(i)))) for i in range(workers)
        ]
        return Supervisor(children, stop_timeout=WORKER_STOP_TIMEOUT).run()
    stop = threading.Event()
    with _stop_on_signals(stop):
        return run_worker(settings, spec(0), stop, outbox)


def child_arguments(spec: WorkerSpec) -> list[str]:
    """The `main.py` arguments of the `--run` child serving `spec` (read by `spec_of_child`)."""
    argv = ["--run", "--child-index", str(spec.index), "--child-count", str(spec.count)]
    argv += ["--child-client-id", spec.client_id, "--child-routes", spec.routes_package]
    argv += ["--child-mqtt-host", spec.mqtt_host, "--child-mqtt-port", str(spec.mqtt_port)]
    if not spec.shared_supported:
        argv.append("--child-no-shared")
    return argv


def spec_of_child(args: argparse.Namespace) -> WorkerSpec:
    """The `WorkerSpec` a supervisor passed to this child on its command line."""
    return WorkerSpec(
        index=args.child_index,
        count=args.child_count,
        client_id=args.child_client_id,
        mqtt_host=args.child_mqtt_host,
        mqtt_port=args.child_mqtt_port,
        shared_supported=not args.child_no_shared,
        routes_package=args.child_routes,
    )


def _run_child(args: argparse.Namespace, settings: Settings, outbox: Outbox | None) -> int:
    """Serve one worker's share of the routes until SIGTERM/SIGINT (or the parent's death)."""
    spec = spec_of_child(args)
    settings = dataclasses.replace(settings, mqtt_host=spec.mqtt_host, mqtt_port=spec.mqtt_port)
    stop = threading.Event()
    with _stop_on_signals(stop):
        return run_worker(settings, spec, stop, outbox)


def run_worker(
    settings: Settings, spec: WorkerSpec, stop: threading.Event, outbox: Outbox | None = None
) -> int:
    """Load the routes and route messages until `stop`.

    Returns 0 after `stop`, 1 if the MQTT network loop died (the supervisor restarts us).
    The queues `dispatch()` uses are configured by the command line (cli.py).
    """
    from core.discovery import load_routes

    router = load_routes(spec.routes_package)
    router.default_max_payload = settings.mqtt_max_payload
    subscriptions = worker_subscriptions(
        router.subscriptions(settings.mqtt_group_name), spec.index, spec.shared_supported
    )
    if not subscriptions:
        log.warning("worker %d has no routes to subscribe to (no shared routes?)", spec.index)
    runtime = MqttRuntime(settings, router, subscriptions, client_id=spec.client_id, outbox=outbox)
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
