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

Operations (support/ops.py): with METRICS_PORT set, the process serves
`/metrics` (core/metrics.py), `/health` (the main loop turns and paho's network
thread lives) and `/ready` (connected with every subscription acknowledged,
plus the checks the command line adds: the queue backend answers). With
`--workers N` the supervisor serves them for all its workers: metrics merged
from every worker, ready when every worker is subscribed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from config.settings import ConfigError, Settings
from core.broker import BrokerStartError, EmbeddedBroker, start_embedded_broker
from core.intake import Outbox
from core.metrics import RouterObserver
from core.mqtt import MqttRuntime, SubscriptionSpec, default_client_id
from support.health import LoopMonitor
from support.metrics import MetricsRun, child_environment, live_gauge_sum
from support.ops import Ops
from support.supervisor import Child, Supervisor

log = logging.getLogger(__name__)

#: Package whose modules' `router` objects make up the route table.
DEFAULT_ROUTES_PACKAGE = "routes"
#: Seconds the supervisor waits for workers to exit after forwarding SIGTERM.
WORKER_STOP_TIMEOUT = 15.0
#: Seconds between checks that the MQTT network thread is still alive (and metric samples).
HEALTH_INTERVAL = 1.0
#: Seconds without a turn of the main loop after which /health fails.
LOOP_STALL_AFTER = 30.0

#: Adds the command line's parts to a process's operations surface (the queue
#: backend's readiness check and depth gauges, the dashboard) before it starts.
OpsSetup = Callable[[Ops], None]


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


def run_command(
    args: argparse.Namespace,
    settings: Settings,
    outbox: Outbox | None = None,
    ops_setup: OpsSetup | None = None,
) -> int:
    """`--run`: start the embedded broker if needed, then serve routes until SIGTERM/SIGINT.

    Returns 0 after a clean stop, 2 for a configuration problem (printed as one line).
    In a child of `--run --workers N` (`--child-index` given) it serves that
    worker's share instead. `outbox` records what handlers dispatch (core/intake.py);
    `ops_setup` adds the command line's checks and pages to the process's server.
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
            ops_setup=ops_setup,
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
    ops_setup: OpsSetup | None = None,
) -> int:
    """Serve the routes of `routes_package` with `workers` processes until SIGTERM/SIGINT.

    `settings.mqtt_host` must be set (the embedded broker's address, if any).
    Returns 2 (one line printed) when METRICS_PORT or the dashboard cannot listen.
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
        return _supervise(settings, children, ops_setup)
    ops = Ops(settings)
    if ops_setup is not None:
        ops_setup(ops)
    stop = threading.Event()
    with _stop_on_signals(stop):
        return run_worker(settings, spec(0), stop, outbox, ops)


def _supervise(settings: Settings, children: list[Child], ops_setup: OpsSetup | None) -> int:
    """Run the supervisor of `--run --workers N`, serving its workers' metrics and health."""
    run = MetricsRun() if settings.metrics_port is not None else None
    ops = Ops(settings, run.path if run is not None else None)
    if ops_setup is not None:
        ops_setup(ops)
    supervisor = Supervisor(
        children,
        stop_timeout=WORKER_STOP_TIMEOUT,
        env=child_environment(run),
        on_exit=run.child_exited if run is not None else None,
    )
    ops.health.add_liveness("supervisor", supervisor.check_alive)
    if run is not None:
        ops.health.add_readiness("mqtt", lambda: _children_subscribed(run.path, len(children)))
    try:
        ops.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if run is not None:
            run.close()
        return 2
    try:
        return supervisor.run()
    finally:
        ops.stop()
        if run is not None:
            run.close()


def _children_subscribed(path: str, count: int) -> str | None:
    """None when all `count` workers are connected and subscribed, else how many are."""
    subscribed = int(live_gauge_sum(path, "mqtt_subscribed"))
    if subscribed >= count:
        return None
    return f"{subscribed} of {count} workers connected and subscribed"


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
        return run_worker(settings, spec, stop, outbox, Ops(settings))


def run_worker(
    settings: Settings,
    spec: WorkerSpec,
    stop: threading.Event,
    outbox: Outbox | None = None,
    ops: Ops | None = None,
) -> int:
    """Load the routes and route messages until `stop`.

    Returns 0 after `stop`, 1 if the MQTT network loop died (the supervisor restarts us),
    2 if `ops` cannot listen on its port. The queues `dispatch()` uses are configured
    by the command line (cli.py); `ops` gets the runtime's health checks and metrics.
    """
    from core.discovery import load_routes

    router = load_routes(spec.routes_package)
    router.default_max_payload = settings.mqtt_max_payload
    subscriptions = worker_subscriptions(
        router.subscriptions(settings.mqtt_group_name), spec.index, spec.shared_supported
    )
    if not subscriptions:
        log.warning("worker %d has no routes to subscribe to (no shared routes?)", spec.index)
    ops = ops or Ops(settings)
    observer = RouterObserver() if ops.records_metrics else None
    runtime = MqttRuntime(
        settings,
        observer.timed(router) if observer is not None else router,
        subscriptions,
        client_id=spec.client_id,
        outbox=outbox,
        observer=observer,
    )
    loop = LoopMonitor("the router's main loop", LOOP_STALL_AFTER)
    ops.health.add_liveness("loop", loop.check)
    ops.health.add_liveness(
        "mqtt_network_thread", lambda: None if runtime.alive else "paho's network thread ended"
    )
    ops.health.add_readiness("mqtt", lambda: _mqtt_readiness(runtime))
    try:
        ops.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runtime.start()
    try:
        while not stop.wait(HEALTH_INTERVAL):
            loop.beat()
            if observer is not None:
                observer.sample(runtime)
            if not runtime.alive:
                log.error("MQTT network loop of %s ended; exiting", runtime.describe)
                return 1
    finally:
        runtime.stop()
        if observer is not None:
            observer.sample(runtime)
            observer.stopped()
        ops.stop()
    return 0


def _mqtt_readiness(runtime: MqttRuntime) -> str | None:
    """None when connected with every subscription acknowledged, else what is missing."""
    if runtime.ready.is_set():
        return None
    if runtime.connected:
        return f"connected to {runtime.host}:{runtime.port}, subscriptions not acknowledged yet"
    return f"not connected to the MQTT broker {runtime.host}:{runtime.port}"


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
