"""`--run --workers N`: N `main.py --run` child processes sharing `$share` routes, supervised.

The app runs as a real process tree against the shared Mosquitto; handlers append
`pid:message` lines to a file (O_APPEND writes of one line are atomic), so the
test can check that every message was handled exactly once and that both
workers got a share. (A file, not Redis: other suites flush Redis db 9.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import PROJECT_ROOT
from core.app import worker_subscriptions
from core.router import Router
from tests.mqtt_helpers import WAIT_TIMEOUT, publisher, unique_prefix, wait_until

#: Seconds for the process tree to start or stop.
APP_TIMEOUT = 30.0

ROUTES_MODULE = """
import os

from core.router import Router

PREFIX = os.environ["TEST_PREFIX"]
OUT = os.environ["TEST_OUT"]
router = Router()


def record(kind, value):
    fd = os.open(OUT + "." + kind, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{os.getpid()}:{value}\\n".encode())
    finally:
        os.close(fd)


@router.on(PREFIX + "/jobs/{n}", qos=1, shared=True)
def job(message):
    record("shared", message.params["n"])


@router.on(PREFIX + "/solo", qos=1)
def solo(message):
    record("solo", 0)
"""

RUNNER = """
import sys
from config.settings import load_settings
from core.app import serve
from support.logging_setup import configure_logging

settings = load_settings()
configure_logging(settings.log_level)
sys.exit(serve(settings, int(sys.argv[1]), routes_package=sys.argv[2]))
"""


class RunningApp:
    """The app with `workers` processes, its log file, and its Redis counters."""

    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.prefix = unique_prefix("workers")
        self.out = tmp_path / "handled"
        package = f"wroutes_{uuid.uuid4().hex[:8]}"
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(ROUTES_MODULE)
        self.log_path = tmp_path / "app.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]),
            "TEST_PREFIX": self.prefix,
            "TEST_OUT": str(self.out),
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": "1883",
            "MQTT_PROTOCOL": "5",
            "MQTT_CLIENT_ID": f"test-workers-{uuid.uuid4().hex[:8]}",
            "MQTT_GROUP_NAME": f"g{uuid.uuid4().hex[:8]}",
            "MQTT_PERSISTENT_SESSION": "false",
            "LOG_LEVEL": "INFO",
            "QUEUE_CONNECTION": "database",
            "SQLITE_PATH": str(tmp_path / "queue.db"),
        }
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(RUNNER), str(workers), package],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_subscribed(self, count: int) -> None:
        """Wait until `count` SUBSCRIBE acknowledgements were logged in total."""
        ok = wait_until(lambda: self.log().count("subscribed to") >= count, APP_TIMEOUT)
        assert ok, f"workers did not subscribe; log:\n{self.log()}"

    def handled(self, kind: str = "shared") -> list[tuple[int, int]]:
        """(worker pid, message number) of each message handled by the `kind` route."""
        path = Path(f"{self.out}.{kind}")
        if not path.exists():
            return []
        rows = [line.split(":") for line in path.read_text().splitlines()]
        return [(int(pid), int(n)) for pid, n in rows]

    def publish_jobs(self, numbers: range) -> None:
        with publisher("127.0.0.1", 1883) as pub:
            for n in numbers:
                pub.publish(f"{self.prefix}/jobs/{n}", b"{}", qos=1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(APP_TIMEOUT)


@pytest.fixture
def app_factory(tmp_path: Path, redis_client: Any, mqtt_broker: tuple[str, int]) -> Iterator[Any]:
    apps: list[RunningApp] = []

    def start(workers: int) -> RunningApp:
        app = RunningApp(tmp_path, workers)
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_a_shared_route_and_handle_each_message_exactly_once(
    app_factory: Any,
) -> None:
    app = app_factory(2)
    app.wait_subscribed(2)
    count = 200
    app.publish_jobs(range(count))
    with publisher("127.0.0.1", 1883) as pub:
        pub.publish(f"{app.prefix}/solo", b"once", qos=1)
    assert wait_until(lambda: len(app.handled()) >= count and app.handled("solo"))
    wait_until(lambda: len(app.handled()) > count, 0.5)  # give duplicates a chance to show
    handled = app.handled()
    assert sorted(n for _, n in handled) == list(range(count)), "a message was lost or doubled"
    pids = {pid for pid, _ in handled}
    assert len(pids) == 2, f"one worker got every message: {pids}"
    assert len(app.handled("solo")) == 1, "a non-shared route ran in two workers"
    assert app.stop() == 0
    assert not any(_alive(pid) for pid in pids), "a worker outlived SIGTERM to the parent"


def test_supervisor_restarts_a_worker_that_died(app_factory: Any) -> None:
    app = app_factory(2)
    app.wait_subscribed(2)
    app.publish_jobs(range(40))
    assert wait_until(lambda: len(app.handled()) >= 40)
    first_pids = {pid for pid, _ in app.handled()}
    assert len(first_pids) == 2
    victim = min(first_pids)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: "exited with code -9" in app.log(), WAIT_TIMEOUT)
    app.wait_subscribed(3)
    app.publish_jobs(range(40, 120))
    assert wait_until(lambda: len(app.handled()) >= 120)
    later_pids = {pid for pid, n in app.handled() if n >= 40}
    assert victim not in later_pids
    assert len(later_pids) == 2, f"the restarted worker took no share: {later_pids}"
    assert app.stop() == 0


def _router_with_shared_and_plain_routes() -> Router:
    router = Router()
    router.on("fleet/{id}/jobs", lambda m: None, qos=1, shared=True)
    router.on("fleet/{id}/status", lambda m: None, qos=0)
    return router


def test_worker_zero_subscribes_everything_and_other_workers_only_shared_routes() -> None:
    subs = _router_with_shared_and_plain_routes().subscriptions("grp")
    assert [(s.topic, s.qos) for s in worker_subscriptions(subs, 0)] == [
        ("$share/grp/fleet/+/jobs", 1),
        ("fleet/+/status", 0),
    ]
    assert [(s.topic, s.qos) for s in worker_subscriptions(subs, 1)] == [
        ("$share/grp/fleet/+/jobs", 1)
    ]


def test_without_share_support_shared_routes_use_plain_filters_in_worker_zero_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subs = _router_with_shared_and_plain_routes().subscriptions("grp")
    plain = worker_subscriptions(subs, 0, shared_supported=False)
    assert [(s.topic, s.qos) for s in plain] == [("fleet/+/jobs", 1), ("fleet/+/status", 0)]
    assert worker_subscriptions(subs, 1, shared_supported=False) == []
    assert "fleet/+/jobs" in caplog.text and "$share" in caplog.text
