"""Private server instances on free ports, for tests that stop, kill or restart a server.

The shared servers on the standard ports are never disturbed: a test that needs
an outage starts its own `redis-server` here and stops it as it likes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.broker import free_port
from tests.conftest import port_open, services_required

#: Seconds a private server may take to accept connections.
START_TIMEOUT = 10.0


def require_binary(name: str) -> str:
    """The path of `name`; skip the test without it (fail under REQUIRE_SERVICES=1)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not on PATH"
        if services_required():
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return path


class PrivateRedis:
    """A `redis-server` of one test on a free loopback port, with its data in `folder`.

    `appendfsync` "always" makes every acknowledged write survive `kill()`;
    "everysec" may lose up to a second of them, "no" keeps nothing on disk.
    """

    def __init__(self, folder: Path, appendfsync: str = "always", host: str = "127.0.0.1") -> None:
        require_binary("redis-server")
        self.host = host  # another address than loopback: tests/netns.py's veth end
        self.port = free_port()
        self.folder = folder
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart) the server on the same port and data folder."""
        persistence = (
            ["--appendonly", "no"]
            if self.appendfsync == "no"
            else ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        )
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", self.host),
                *("--save", "", "--dir", str(self.folder), *persistence),
                # Off loopback (a test's veth) protected mode refuses password-less clients.
                *(() if self.host == "127.0.0.1" else ("--protected-mode", "no")),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.host, self.port, timeout=0.1):
            assert self.process.poll() is None, "private redis-server exited at start"
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: what was not on disk yet is gone, clients see a dead server."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(START_TIMEOUT)
        self.process = None
