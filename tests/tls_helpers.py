"""TLS test kit: a private CA made by docker/make-certs.sh, and private TLS servers.

Every server here is this test's own, on a free loopback port, stopped on exit:
the shared Redis, MariaDB and Mosquitto are never reconfigured.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.broker import free_port
from tests.conftest import port_open

ROOT = Path(__file__).resolve().parent.parent
#: The certificate script the deployment documents; the tests use the same one.
MAKE_CERTS = ROOT / "docker" / "make-certs.sh"
#: Seconds a private server may take to accept connections.
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Certificates:
    """The files `docker/make-certs.sh` writes into `folder`."""

    folder: Path

    @property
    def ca(self) -> str:
        """The CA certificate clients trust."""
        return str(self.folder / "ca.crt")

    @property
    def server_cert(self) -> str:
        """The server certificate (localhost, 127.0.0.1 and the compose service names)."""
        return str(self.folder / "server.crt")

    @property
    def server_key(self) -> str:
        """The server certificate's key."""
        return str(self.folder / "server.key")

    @property
    def client_cert(self) -> str:
        """A client certificate (CN=app) signed by the same CA."""
        return str(self.folder / "client.crt")

    @property
    def client_key(self) -> str:
        """The client certificate's key."""
        return str(self.folder / "client.key")


def make_certificates(folder: Path) -> Certificates:
    """A fresh private CA with server and client certificates in `folder` (needs openssl)."""
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(folder)], check=True, capture_output=True, timeout=60
    )
    return Certificates(folder)


def wait_listening(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Return once 127.0.0.1:port accepts connections; raise if `process` died or took too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while not port_open("127.0.0.1", port, timeout=0.1):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on port {port} in {START_TIMEOUT} s")
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` and wait for it (killed if it lingers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def tls_redis(folder: Path, certs: Certificates, acl_users: list[str]) -> Iterator[int]:
    """A redis-server speaking only TLS, demanding a client certificate; yields its port.

    It listens on 127.0.0.1 and on 127.0.0.2, which the certificate does not name.

    `acl_users` are ACL rules (`app on >password ~* &* +@all`); the `default`
    user is disabled, so every client must name its user.
    """
    port = free_port()
    config = folder / "redis.conf"
    lines = [
        "port 0",
        f"tls-port {port}",
        "bind 127.0.0.1 127.0.0.2",  # 127.0.0.2: a name the certificate does not list
        f"tls-cert-file {certs.server_cert}",
        f"tls-key-file {certs.server_key}",
        f"tls-ca-cert-file {certs.ca}",
        "tls-auth-clients yes",
        'save ""',
        "appendonly no",
        f"dir {folder}",
        "user default off",
        *(f"user {rule}" for rule in acl_users),
    ]
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(["redis-server", str(config)], stdout=subprocess.DEVNULL)
    try:
        wait_listening(process, port, "TLS redis-server")
        yield port
    finally:
        stop(process)


@dataclass(frozen=True)
class PrivateMariaDB:
    """A private mariadbd: its TCP port and the unix socket root logs in through."""

    port: int
    socket: str


@contextmanager
def tls_mariadb(folder: Path, certs: Certificates) -> Iterator[PrivateMariaDB]:
    """A mariadbd on a fresh data directory with TLS on (not required by default).

    root@localhost has no password and is reached over `socket` only; make the
    users a test needs (`REQUIRE SSL`, `REQUIRE X509`) through it.
    """
    datadir, sock = folder / "data", folder / "mysqld.sock"
    user = getpass.getuser()
    small = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"]
    subprocess.run(
        [
            *("mariadb-install-db", "--no-defaults", f"--datadir={datadir}"),
            *("--auth-root-authentication-method=normal", "--skip-test-db", f"--user={user}"),
            *small,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            *("mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={sock}"),
            *(f"--port={port}", "--bind-address=127.0.0.1", f"--user={user}", "--skip-log-bin"),
            *(f"--ssl-ca={certs.ca}", f"--ssl-cert={certs.server_cert}"),
            *(f"--ssl-key={certs.server_key}", f"--log-error={folder / 'mariadb.err'}"),
            *small,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(process, port, "private mariadbd")
        yield PrivateMariaDB(port, str(sock))
    finally:
        stop(process)
