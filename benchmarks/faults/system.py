"""The system under test around MQTT: a private broker, the app (`main.py --run`) and
queue workers (`main.py --queue-work`), all on the probe app, all started as a user would.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.faults.backends import Backend
from benchmarks.faults.common import SystemProcess, unique, wait_until
from tests.mqtt_helpers import PrivateMosquitto

#: The app's log line once a connection has subscribed every route.
SUBSCRIBED = "subscribed to"
#: Queue workers of the MQTT scenarios.
WORKERS = 2
#: Seconds the queue must stop growing before the harness counts it.
QUEUE_QUIET = 1.5


def mqtt_env(
    env: dict[str, str], broker: PrivateMosquitto, protocol: str = "3.1.1"
) -> dict[str, str]:
    """`env` pointed at `broker`, with the defaults (persistent session under a derived
    client id); the app name and share group are the run's own."""
    return dict(
        env,
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_PROTOCOL=protocol,
        APP_NAME=unique("faults-"),
        MQTT_GROUP_NAME=unique("faults"),
    )


class App:
    """`main.py --run [--workers N]`, which can be stopped, killed and started again."""

    def __init__(self, env: dict[str, str], folder: Path, workers: int = 1) -> None:
        args = ["--run"] + (["--workers", str(workers)] if workers > 1 else [])
        self.workers = workers
        self.process = SystemProcess("app", args, dict(env, LOG_LEVEL="INFO"), folder)
        self._subscriptions = 0

    def start(self, wait: bool = True) -> App:
        """Start the app; with `wait`, until each of its clients has subscribed."""
        self._subscriptions = self.process.log.read_text().count(SUBSCRIBED) if (
            self.process.log.exists()
        ) else 0  # fmt: skip
        self.process.start()
        if wait:
            self.process.wait_for_log(SUBSCRIBED, self._subscriptions + self.workers)
        return self

    def kill(self) -> None:
        """SIGKILL the app (its `--workers` children exit by themselves)."""
        self.process.kill()

    def stop(self) -> None:
        """SIGTERM: a graceful stop."""
        self.process.stop()


def start_workers(found: Backend, folder: Path, count: int = WORKERS) -> list[SystemProcess]:
    """`count` queue workers on the backend's connection (started)."""
    args = ["--queue-work", "--connection", found.connection, "--sleep", "0.2"]
    return [SystemProcess(f"worker-{i}", args, found.env, folder).start() for i in range(count)]


def queued_when_still(found: Backend, at_least: int, timeout: float) -> int:
    """Jobs in the probe queue once it holds `at_least` and stopped growing (or `timeout`)."""
    deadline = time.monotonic() + timeout
    wait_until(lambda: found.queued() >= at_least, timeout, step=0.1)
    last, since = found.queued(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < QUEUE_QUIET:
        time.sleep(0.1)
        now = found.queued()
        if now != last:
            last, since = now, time.monotonic()
    return last
