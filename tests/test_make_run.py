"""`make run`: one Ctrl-C (or one SIGTERM to make) is one graceful stop of router and worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.broker import free_port
from tests.conftest import need_binaries

ROOT = Path(__file__).resolve().parent.parent

#: Seconds `make run` may take to serve (embedded broker, router, worker after 1 s).
START_TIMEOUT = 40.0
#: The Makefile's ports of `make run`, free ones per test (other checkouts run it too).
PORTS = ("ROUTER_METRICS_PORT", "WORKER_METRICS_PORT", "DASHBOARD_PORT")
#: Seconds both may take to stop (the idle worker finishes its 3 s wait for a job).
STOP_TIMEOUT = 30.0


def start_make_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, dict[str, int]]:
    """`make run` in a session of its own, as a terminal runs it, its output in a file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MQTT_", "REDIS_", "DB_", "QUEUE_", "ENABLE_"))
    }
    env.update(
        SQLITE_PATH=str(tmp_path / "queue.db"),
        MQTT_PERSISTENT_SESSION="false",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "make-run.log"
    ports = {name: free_port() for name in PORTS}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *("make", "-s", "-o", ".venv/.installed", f"PY={sys.executable}", "run"),
                *(f"{name}={port}" for name, port in ports.items()),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text()
        if "subscribed to" in text and re.search(r"worker \d+ started", text):
            return process, log, ports
        if process.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"make run did not start serving:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-make"])
def test_one_stop_signal_stops_router_and_worker_gracefully_once(tmp_path: Path, stop: str):
    need_binaries("make")
    process, log, ports = start_make_run(tmp_path)
    try:
        router = f"http://127.0.0.1:{ports['ROUTER_METRICS_PORT']}"
        assert f"metrics: {router}/metrics (router)" in log.read_text()
        with urllib.request.urlopen(f"{router}/health", timeout=10) as health:
            assert json.load(health)["status"] == "ok"
        dashboard = f"http://127.0.0.1:{ports['DASHBOARD_PORT']}/api/overview"
        with urllib.request.urlopen(dashboard, timeout=10) as overview:
            assert json.load(overview)["routes"], "the dashboard shows the app's routes"
        if stop == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert "second" not in text, text
    assert len(re.findall(r"core\.app: received SIG\w+; stopping", text)) == 1, text
    assert len(re.findall(r"worker \d+: SIG\w+, exiting", text)) == 1, text
    assert re.search(r"worker \d+ stopped after a signal", text), text
    assert "embedded MQTT broker stopped" in text


@pytest.mark.slow
def test_a_router_that_dies_takes_the_worker_down_gracefully(tmp_path: Path):
    need_binaries("make", "pgrep")
    process, log, _ = start_make_run(tmp_path)
    try:
        found = subprocess.run(
            ["pgrep", "-f", f"{re.escape(sys.executable)} main.py --run$"],
            capture_output=True,
            text=True,
        )
        routers = [int(pid) for pid in found.stdout.split()]
        assert len(routers) == 1, found
        children = subprocess.run(["pgrep", "-P", str(routers[0])], capture_output=True, text=True)
        os.kill(routers[0], signal.SIGKILL)
        for child in children.stdout.split():  # its embedded broker, orphaned by the crash
            os.kill(int(child), signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT) != 0  # the router's failure is make's
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert len(re.findall(r"worker \d+: SIGTERM, exiting", text)) == 1, text
    assert "second" not in text, text
