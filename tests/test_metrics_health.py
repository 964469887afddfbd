"""Metrics, /health and /ready of real `main.py` processes after real traffic.

Each test starts `--run` or `--queue-work` as a subprocess with METRICS_PORT on a
free port, sends real messages or jobs through the shared servers (or a private
Redis it stops), then scrapes the endpoint and checks the values.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import PROJECT_ROOT
from queues.envelope import Envelope
from tests.driver_factories import make_driver
from tests.http_helpers import free_port, get_json, sample, scrape, total, wait_for
from tests.jobs_fixture.support import main_env, start_main
from tests.mqtt_helpers import publisher, unique_prefix
from tests.private_servers import PrivateRedis

#: Seconds a process gets to stop after SIGTERM.
STOP_TIMEOUT = 30.0

ROUTES_MODULE = """
import os

from core.message import PayloadError
from core.router import Router

PREFIX = os.environ["TEST_PREFIX"]
router = Router()


@router.on(PREFIX + "/devices/{device_id}/telemetry", qos=1)
def telemetry(message):
    message.json()


@router.on(PREFIX + "/devices/{device_id}/broken", qos=1)
def broken(message):
    raise PayloadError("not a reading")
"""


class Process:
    """A main.py child whose output goes to a file; stopped (and killed if need be) at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "main.py"), *args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def _push(driver: Any, queue: str, job: str, data: dict[str, Any]) -> str:
    envelope = Envelope(job=job, data=data, queue=queue, max_tries=3 if job == "FailingJob" else 1)
    driver.push(queue, envelope.to_json())
    return envelope.id


def test_worker_metrics_count_real_jobs_per_class_queue_and_outcome(
    tmp_path: Path, redis_client: Any, processes: list[Process]
) -> None:
    driver = make_driver("redis", tmp_path)
    queue = f"m-{uuid.uuid4().hex[:10]}"
    for value in range(5):
        _push(driver, queue, "RecordJob", {"path": str(tmp_path / "record"), "value": value})
    _push(driver, queue, "FailingJob", {"path": str(tmp_path / "failing"), "value": 1})
    _push(driver, queue, "NoSuchJob", {})
    port = free_port()
    env = main_env("redis", tmp_path, METRICS_PORT=str(port))
    worker = Process(["--queue-work", "--queue", queue, "--sleep", "0.2"], env, tmp_path / "w.log")
    processes.append(worker)
    url = f"http://127.0.0.1:{port}"

    def settled() -> bool:
        samples = scrape(f"{url}/metrics")
        return total(samples, "queue_jobs_finished_total") >= 9

    assert wait_for(lambda: get_json(f"{url}/health")[0] == 200), worker.log()
    assert wait_for(settled), worker.log()

    samples = scrape(f"{url}/metrics")
    assert sample(samples, "queue_jobs_started_total", job="RecordJob", queue=queue) == 5
    assert sample(samples, "queue_jobs_started_total", job="FailingJob", queue=queue) == 3
    finished = "queue_jobs_finished_total"
    assert sample(samples, finished, job="RecordJob", queue=queue, outcome="succeeded") == 5
    assert sample(samples, finished, job="FailingJob", queue=queue, outcome="retried") == 2
    assert sample(samples, finished, job="FailingJob", queue=queue, outcome="failed") == 1
    assert sample(samples, finished, job="(unknown)", queue=queue, outcome="failed") == 1
    assert sample(samples, "queue_job_seconds_count", job="RecordJob", queue=queue) == 5
    assert sample(samples, "queue_job_pickup_seconds_count", queue=queue) == 6
    assert sample(samples, "queue_worker_up") == 1
    assert sample(samples, "queue_depth", connection="redis", queue=queue, state="failed") == 2
    assert sample(samples, "queue_depth", connection="redis", queue=queue, state="pending") == 0
    status, body = get_json(f"{url}/ready")
    assert (status, body["checks"]["queue"]) == (200, "ok")
    assert worker.stop() == 0
    driver.close()


def test_ready_turns_503_with_the_reason_while_redis_is_down_then_200_again(
    tmp_path: Path, processes: list[Process]
) -> None:
    server = PrivateRedis(tmp_path, appendfsync="no")
    port = free_port()
    env = main_env(
        "redis", tmp_path, METRICS_PORT=str(port), REDIS_PORT=str(server.port), REDIS_DB="0"
    )
    worker = Process(["--queue-work", "--sleep", "0.2"], env, tmp_path / "w.log")
    processes.append(worker)
    ready = f"http://127.0.0.1:{port}/ready"
    try:
        assert wait_for(lambda: get_json(ready)[0] == 200), worker.log()
        server.stop()
        down = wait_for(lambda: (r := get_json(ready))[0] == 503 and r)
        assert down, worker.log()
        _, body = down
        assert body["status"] == "not ready"
        assert f"127.0.0.1:{server.port}" in body["checks"]["queue"], body
        assert "unreachable" in body["checks"]["queue"], body
        assert get_json(f"http://127.0.0.1:{port}/health")[0] == 200, "alive while Redis is down"
        server.start()
        assert wait_for(lambda: get_json(ready)[0] == 200), worker.log()
        assert worker.stop() == 0
    finally:
        server.stop()


def _router_env(tmp_path: Path, port: int, prefix: str, **extra: str) -> dict[str, str]:
    package = f"mroutes_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(ROUTES_MODULE)
    return main_env(
        "database",
        tmp_path,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]),
        TEST_PREFIX=prefix,
        ROUTES_PACKAGE=package,
        MQTT_HOST="127.0.0.1",
        MQTT_PORT="1883",
        MQTT_CLIENT_ID=f"test-metrics-{uuid.uuid4().hex[:8]}",
        MQTT_GROUP_NAME=f"g{uuid.uuid4().hex[:8]}",
        MQTT_PERSISTENT_SESSION="false",
        MQTT_DEAD_LETTER_TOPIC=f"{prefix}/dead",
        METRICS_PORT=str(port),
        **extra,
    )


def test_router_metrics_count_real_messages_per_route_pattern(
    tmp_path: Path, mqtt_broker: tuple[str, int], processes: list[Process]
) -> None:
    prefix = unique_prefix("metrics")
    port = free_port()
    router = Process(["--run"], _router_env(tmp_path, port, prefix), tmp_path / "r.log")
    processes.append(router)
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: get_json(f"{url}/ready")[0] == 200), router.log()
    with publisher(*mqtt_broker) as pub:
        for n in range(7):
            pub.publish(f"{prefix}/devices/d{n}/telemetry", json.dumps({"v": n}))
        pub.publish(f"{prefix}/devices/d1/broken", b"{}")
        pub.publish(f"{prefix}/devices/d1/unknown", b"{}")  # subscribed by no route: not received
    telemetry = f"{prefix}/devices/{{device_id}}/telemetry"
    broken = f"{prefix}/devices/{{device_id}}/broken"

    def counted() -> Any:
        samples = scrape(f"{url}/metrics")
        done = total(samples, "mqtt_messages_total")
        return (
            samples if done >= 8 and sample(samples, "mqtt_messages_received_total") >= 8 else None
        )

    samples = wait_for(counted)
    assert samples, router.log()
    handled = sample(samples, "mqtt_messages_total", route=telemetry, outcome="handled")
    assert handled == 7
    assert sample(samples, "mqtt_messages_total", route=broken, outcome="dead_lettered") == 1
    assert sample(samples, "mqtt_handler_seconds_count", route=telemetry) == 7
    assert sample(samples, "mqtt_handler_failures_total", route=broken) == 1
    assert sample(samples, "mqtt_messages_received_total") == 8
    assert sample(samples, "mqtt_connected") == 1
    assert sample(samples, "mqtt_subscribed") == 1
    assert sample(samples, "mqtt_intake_in_flight") == 0
    assert not any(prefix + "/devices/d" in str(labels) for (_, labels) in samples), (
        "a raw topic became a label"
    )
    status, body = get_json(f"{url}/ready")
    assert status == 200 and body["checks"]["mqtt"] == "ok" and body["checks"]["queue"] == "ok"
    assert router.stop() == 0


def test_workers_n_serve_one_endpoint_whose_totals_survive_a_child_restart(
    tmp_path: Path, redis_client: Any, processes: list[Process]
) -> None:
    driver = make_driver("redis", tmp_path)
    queue = f"m-{uuid.uuid4().hex[:10]}"
    for value in range(10):
        _push(driver, queue, "RecordJob", {"path": str(tmp_path / "record"), "value": value})
    port = free_port()
    env = main_env("redis", tmp_path, METRICS_PORT=str(port))
    args = ["--queue-work", "--queue", queue, "--sleep", "0.2", "--workers", "2"]
    supervisor = Process(args, env, tmp_path / "s.log")
    processes.append(supervisor)
    url = f"http://127.0.0.1:{port}/metrics"

    def finished() -> float:
        return total(scrape(url), "queue_jobs_finished_total", queue=queue)

    assert wait_for(lambda: get_json(url.replace("metrics", "ready"))[0] == 200), supervisor.log()
    assert wait_for(lambda: finished() >= 10 and sample(scrape(url), "queue_worker_up") == 2)
    children = _child_pids(supervisor.process.pid)
    assert len(children) == 2, supervisor.log()
    os.kill(children[0], signal.SIGKILL)
    assert wait_for(lambda: "exited with code -9" in supervisor.log()), supervisor.log()
    after_kill = scrape(url)
    assert total(after_kill, "queue_jobs_finished_total", queue=queue) == 10, "a total went down"
    assert sample(after_kill, "queue_worker_up") <= 1, "the dead child's gauge stayed"
    assert wait_for(lambda: sample(scrape(url), "queue_worker_up") == 2), supervisor.log()
    for value in range(10, 15):
        _push(driver, queue, "RecordJob", {"path": str(tmp_path / "record"), "value": value})
    assert wait_for(lambda: finished() >= 15), supervisor.log()
    assert finished() == 15
    assert supervisor.stop() == 0
    driver.close()


def _child_pids(parent: int) -> list[int]:
    """Pids whose parent is `parent` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def test_a_port_in_use_stops_the_worker_with_one_line(tmp_path: Path, redis_client: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = main_env("redis", tmp_path, METRICS_PORT=str(port))
        worker = start_main(["--queue-work", "--sleep", "0.2"], env)
        _, err = worker.communicate(timeout=STOP_TIMEOUT)
    assert worker.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_run_with_workers_serves_one_endpoint_and_one_dashboard_for_all_children(
    tmp_path: Path, mqtt_broker: tuple[str, int], processes: list[Process]
) -> None:
    prefix = unique_prefix("metrics")
    port, dashboard_port = free_port(), free_port()
    env = _router_env(tmp_path, port, prefix, DASHBOARD="true", DASHBOARD_PORT=str(dashboard_port))
    router = Process(["--run", "--workers", "2"], env, tmp_path / "r.log")
    processes.append(router)
    url = f"http://127.0.0.1:{port}"
    ready = wait_for(lambda: (r := get_json(f"{url}/ready"))[0] == 200 and r)
    assert ready, router.log()
    assert ready[1]["checks"]["mqtt"] == "ok"
    with publisher(*mqtt_broker) as pub:
        for n in range(6):
            pub.publish(f"{prefix}/devices/d{n}/telemetry", json.dumps({"v": n}))
    telemetry = f"{prefix}/devices/{{device_id}}/telemetry"

    def counted() -> Any:
        samples = scrape(f"{url}/metrics")
        done = sample(samples, "mqtt_messages_total", route=telemetry, outcome="handled")
        return samples if done >= 6 else None

    samples = wait_for(counted)
    assert samples, router.log()
    assert sample(samples, "mqtt_subscribed") == 2 and sample(samples, "mqtt_connected") == 2
    status, overview = get_json(f"http://127.0.0.1:{dashboard_port}/api/overview")
    assert status == 200 and overview["routes"][0]["pattern"] == telemetry
    assert "cannot listen" not in router.log(), "a child tried to serve too"
    assert router.stop() == 0
