"""Private Redis topologies on free loopback ports: master + replicas, Sentinel, Cluster.

For the tests of REDIS_WAIT_REPLICAS, REDIS_SENTINELS and REDIS_CLUSTER. Every
process is a `redis-server` of its own (never the shared one on 6379), started
in the test's tmp folder and killed by `stop_all()`. Timings are low (Sentinel's
down-after 1 s, Cluster's node timeout 1 s) so a failover takes seconds.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from core.broker import free_port
from tests.conftest import port_open
from tests.private_servers import START_TIMEOUT, require_binary

#: Milliseconds without a reply before a sentinel counts the master as down.
SENTINEL_DOWN_AFTER_MS = 1000
#: Milliseconds a sentinel failover may take before another is tried.
SENTINEL_FAILOVER_TIMEOUT_MS = 5000
#: Name the sentinels monitor the master under.
SENTINEL_MASTER = "routemq-test"
#: Milliseconds without a reply before cluster nodes count a node as failing.
CLUSTER_NODE_TIMEOUT_MS = 1000
#: Environment variable naming a node (`host:port`) of the session's shared cluster.
CLUSTER_SEED_VARIABLE = "ROUTEMQ_TEST_CLUSTER_SEED"
#: Seconds a topology may take to be ready (replication linked, cluster slots covered).
READY_TIMEOUT = 30.0


#: Highest port a cluster node may use: its bus port is 10000 higher.
CLUSTER_MAX_PORT = 55535


def cluster_node_port() -> int:
    """A free port P <= CLUSTER_MAX_PORT whose bus port P + 10000 is free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, CLUSTER_MAX_PORT)
        if all(_bindable(p) for p in (port, port + 10000)):
            return port
    raise AssertionError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisProcess:
    """One `redis-server` (plain, replica, sentinel or cluster node) on a free port."""

    def __init__(
        self, folder: Path, args: list[str], sentinel: bool = False, port: int | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port() if port is None else port
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        binary = require_binary("redis-server")
        command = [binary]
        if sentinel:
            config = folder / "sentinel.conf"
            config.write_text("\n".join(args) + "\n", encoding="utf-8")
            command += [str(config), "--sentinel"]
            args = []
        command += ["--port", str(self.port), "--bind", self.host, "--dir", str(folder)]
        command += ["--save", "", "--appendonly", "no", "--logfile", str(folder / "log")]
        if not sentinel:
            # A new replica syncs at once (the default waits 5 s for more replicas).
            command += ["--repl-diskless-sync-delay", "0"]
        self.command = [*command, *args]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, after `kill`) the server on its port, with its folder's state
        (a cluster node keeps its nodes.conf and rejoins as it was configured)."""
        process = self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.host, self.port, timeout=0.1):
            assert process.poll() is None, f"redis-server exited at start: {self.folder / 'log'}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    @property
    def address(self) -> str:
        """`host:port`."""
        return f"{self.host}:{self.port}"

    def client(self) -> redis.Redis:
        """A plain client of this one process."""
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: the process is gone at once, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(START_TIMEOUT)
        self.process = None


def wait_until(check: object, what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll `check()` (errors count as False) until it is true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Replicated:
    """A master and `replicas` replicas linked by replication, optionally watched by sentinels."""

    def __init__(self, folder: Path, replicas: int = 1, sentinels: int = 0) -> None:
        self.processes: list[RedisProcess] = []
        try:
            self._build(folder, replicas, sentinels)
        except BaseException:
            self.stop_all()  # no process outlives a topology that failed to form
            raise

    def _build(self, folder: Path, replicas: int, sentinels: int) -> None:
        self.master = self._start(folder / "master", [])
        self.replicas = [
            self._start(
                folder / f"replica{i}", ["--replicaof", self.master.host, str(self.master.port)]
            )
            for i in range(replicas)
        ]
        master = self.master.client()
        wait_until(
            lambda: int(master.info("replication")["connected_slaves"]) >= replicas
            and all(r.client().info("replication")["master_link_status"] == "up"
                    for r in self.replicas),
            "replication links",
        )  # fmt: skip
        master.close()
        self.sentinels = [
            self._start(
                folder / f"sentinel{i}",
                [
                    f"sentinel monitor {SENTINEL_MASTER} {self.master.host} {self.master.port} 2",
                    f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SENTINEL_MASTER} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SENTINEL_MASTER} 1",
                ],
                sentinel=True,
            )
            for i in range(sentinels)
        ]
        for sentinel in self.sentinels:
            client = sentinel.client()
            wait_until(
                lambda c=client: (
                    int(c.sentinel_master(SENTINEL_MASTER)["num-other-sentinels"])
                    >= len(self.sentinels) - 1
                    and int(c.sentinel_master(SENTINEL_MASTER)["num-slaves"]) >= replicas
                ),
                "sentinels to see each other and the replica",
            )
            client.close()

    def _start(self, folder: Path, args: list[str], sentinel: bool = False) -> RedisProcess:
        process = RedisProcess(folder, args, sentinel)
        self.processes.append(process)
        return process

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS for these sentinels."""
        return ",".join(s.address for s in self.sentinels)

    def stop_all(self) -> None:
        """Kill every process of the topology."""
        for process in self.processes:
            process.kill()


class Cluster:
    """`masters` cluster masters with one replica each, joined by `redis-cli --cluster create`."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.nodes: list[RedisProcess] = []
        try:
            self._build(folder, masters)
        except BaseException:
            self.stop_all()  # no node outlives a cluster that failed to form
            raise

    def _build(self, folder: Path, masters: int) -> None:
        cli = require_binary("redis-cli")
        for i in range(2 * masters):
            self.nodes.append(
                RedisProcess(
                    folder / f"node{i}",
                    [
                        *("--cluster-enabled", "yes"),
                        *("--cluster-config-file", str(folder / f"node{i}" / "nodes.conf")),
                        *("--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)),
                    ],
                    port=cluster_node_port(),
                )
            )
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                *("--cluster-replicas", "1", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=READY_TIMEOUT,
        )
        wait_until(self.healthy, "the cluster to cover every slot")

    def healthy(self) -> bool:
        """True when every live node reports cluster_state:ok and every live replica's
        link to its master is up."""
        for node in self.nodes:
            if node.process is None:
                continue
            client = node.client()
            try:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            finally:
                client.close()
        return True

    @property
    def seed(self) -> RedisProcess:
        """A node that is alive (REDIS_HOST/PORT of the cluster)."""
        return next(n for n in self.nodes if n.process is not None)

    def master_of(self, key: str) -> RedisProcess:
        """The node that is master of `key`'s slot now."""
        client = self.seed.client()
        try:
            slot = int(client.cluster("keyslot", key))
            for start, end, master, *_ in client.cluster("slots"):
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise AssertionError(f"no master serves the slot of {key}")

    def stop_all(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            node.kill()


_shared: Cluster | None = None


def shared_cluster() -> Cluster:
    """One cluster for the whole test session (started on first use, killed at exit).

    The contract suite builds a driver per test; starting six servers each time
    would cost seconds per test, so the drivers share this one and flush it.
    """
    global _shared
    if _shared is None or _shared.seed.process is None:
        folder = Path(tempfile.mkdtemp(prefix="routemq-cluster-"))
        _shared = Cluster(folder)
        atexit.register(_shared.stop_all)
        atexit.register(shutil.rmtree, folder, True)
        # Child processes of the race tests (tests/driver_race_child.py) inherit it.
        os.environ[CLUSTER_SEED_VARIABLE] = _shared.seed.address
    return _shared
