"""A network namespace joined to the root namespace by a veth pair, for partition tests.

`Partition` makes a namespace `rmq<n>` with one end of a veth pair inside
(`10.231.<k>.2/30`) and the other end in the root namespace (`10.231.<k>.1/30`).
A process started with `spawn` runs inside it and reaches servers in the root
namespace only over the veth, through `host_address`. `cut()` takes the root
end down: packets between the two sides are silently lost (TCP sees no error,
only silence, as when a cable or a switch fails), and `restore()` brings it back
with its route. Everything is removed by `close()`, also after a failure.

`forward(port, target)` starts a `socat` in the root namespace that listens on
`host_address:port` and forwards to a loopback server, so a shared server bound
to 127.0.0.1 (MariaDB, PostgreSQL) is reachable from the namespace across the
veth, and so partitioned with it.

Namespaces need root and a kernel that allows them: `netns_available()` says so
by creating and deleting one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

#: Seconds a forwarder may take to listen.
FORWARD_START_TIMEOUT = 10.0

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_available() -> tuple[bool, str]:
    """(True, "") when `ip netns add` works here, else (False, why)."""
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is not on PATH"
    name = f"rmqprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return False, f"ip netns add failed: {exc.stderr.strip()}"
    _ip("netns", "del", name)
    return True, ""


class Partition:
    """A namespace with a veth link to the root namespace (see the module docstring)."""

    def __init__(self) -> None:
        number = next(_counter)
        tag = f"{os.getpid() % 100000}{number}"
        self.namespace = f"rmq{tag}"
        self.host_end, self.inner_end = f"rmqh{tag}", f"rmqn{tag}"
        subnet = (os.getpid() * 7 + number) % 250 + 1
        self.host_address = f"10.231.{subnet}.1"
        self.inner_address = f"10.231.{subnet}.2"
        self._forwarders: list[subprocess.Popen[bytes]] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.inner_end)
        _ip("link", "set", self.inner_end, "netns", self.namespace)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_end)
        _ip("link", "set", self.host_end, "up")
        inside = ("netns", "exec", self.namespace, "ip")
        _ip(*inside, "addr", "add", f"{self.inner_address}/30", "dev", self.inner_end)
        _ip(*inside, "link", "set", self.inner_end, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def spawn(
        self,
        command: Sequence[str],
        env: dict[str, str],
        cwd: Path,
        log: IO[str],
    ) -> subprocess.Popen[str]:
        """Start `command` inside the namespace (`ip netns exec` execs it: same pid)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *command],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def forward(self, port: int, target_port: int, target_host: str = "127.0.0.1") -> None:
        """Listen on host_address:port in the root namespace, forwarding to target."""
        socat = shutil.which("socat")
        assert socat is not None, "socat is not on PATH"
        self._forwarders.append(
            subprocess.Popen(
                [
                    socat,
                    f"TCP-LISTEN:{port},bind={self.host_address},reuseaddr,fork",
                    f"TCP:{target_host}:{target_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + FORWARD_START_TIMEOUT
        listening = f"{self.host_address}:{port} "
        while listening not in subprocess.run(
            ["ss", "-ltnH"], capture_output=True, text=True, check=False
        ).stdout.replace("\t", " "):
            assert self._forwarders[-1].poll() is None, "socat exited at start"
            assert time.monotonic() < deadline, f"socat did not listen on {listening}"
            time.sleep(0.05)

    def cut(self) -> None:
        """Partition: take the root end of the veth down (silent loss both ways)."""
        _ip("link", "set", self.host_end, "down")

    def restore(self) -> None:
        """Heal the partition: the root end comes back up with its route."""
        _ip("link", "set", self.host_end, "up")

    def close(self) -> None:
        """Stop the forwarders and delete the veth pair and the namespace."""
        for forwarder in self._forwarders:
            forwarder.kill()
            forwarder.wait()
        self._forwarders.clear()
        subprocess.run(["ip", "link", "del", self.host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
