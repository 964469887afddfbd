"""The embedded MQTT broker `--run` starts when no MQTT_HOST is configured.

A `mosquitto` binary on PATH is preferred: it runs as a child process with a
generated config (loopback listener, anonymous access, persistence in
`storage/`), speaks MQTT 3.1.1 and 5 and supports `$share` subscriptions.
Without it, amqtt runs in-process on its own asyncio thread: MQTT 3.1.1 only and
no shared subscriptions, which the caller must account for
(`supports_shared_subscriptions`, `supports_mqtt5`).

The broker listens on 127.0.0.1:1883 unless that port is taken, in which case it
takes a free port; `EmbeddedBroker.address` says where it really listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from config.settings import PROJECT_ROOT, ConfigError, Settings

log = logging.getLogger(__name__)

#: Interface the embedded broker listens on: never exposed beyond this machine.
EMBEDDED_HOST = "127.0.0.1"
#: Port the embedded broker prefers; a free port is used when it is taken.
DEFAULT_EMBEDDED_PORT = 1883
#: Folder holding the embedded broker's persistence file (persistent sessions survive restarts).
DEFAULT_STORAGE_DIR = PROJECT_ROOT / "storage"
#: Seconds to wait for the embedded broker to accept connections.
START_TIMEOUT = 10.0
#: Seconds to wait for the embedded broker to exit after being asked to stop.
STOP_TIMEOUT = 5.0
#: Seconds between two probes of the listening port while starting.
PROBE_INTERVAL = 0.05
#: Messages mosquitto queues per offline persistent session before dropping (its default: 1000).
MAX_QUEUED_MESSAGES = 100_000
#: Seconds between two saves of mosquitto's persistence file (its default, 1800, would
#: lose half an hour of sessions and queued messages if the broker is killed).
AUTOSAVE_INTERVAL = 1
#: amqtt plugin letting clients connect without credentials (loopback only).
ANONYMOUS_AUTH_PLUGIN = "amqtt.plugins.authentication.AnonymousAuthPlugin"
#: Implementations `start_embedded_broker` accepts.
IMPLEMENTATIONS = ("auto", "mosquitto", "amqtt")


class BrokerStartError(RuntimeError):
    """The embedded broker could not start; the message says why and what to do."""


class EmbeddedBroker(Protocol):
    """A running broker on loopback, stopped with `stop()`."""

    @property
    def kind(self) -> str:
        """'mosquitto' or 'amqtt'."""

    @property
    def host(self) -> str:
        """Address it listens on."""

    @property
    def port(self) -> int:
        """Port it listens on."""

    @property
    def supports_mqtt5(self) -> bool:
        """True when MQTT 5 clients may connect."""

    @property
    def supports_shared_subscriptions(self) -> bool:
        """True when `$share/group/filter` subscriptions load-balance messages."""

    def stop(self) -> None:
        """Stop the broker and wait for it to exit; safe to call twice."""


def port_is_free(port: int, host: str = EMBEDDED_HOST) -> bool:
    """True if nothing listens on host:port (we could bind it right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the broker will: connections left in TIME_WAIT do not block a new listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = EMBEDDED_HOST) -> int:
    """A port the OS reports free on `host` (it may be taken again before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(host: str, port: int, timeout: float, alive: Any) -> bool:
    """Poll until host:port accepts a TCP connection, `alive()` is False, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=PROBE_INTERVAL * 4):
                return True
        except OSError:
            time.sleep(PROBE_INTERVAL)
    return False


class MosquittoBroker:
    """A `mosquitto` child process on loopback with a generated config.

    Persistence is on (`storage_dir/mosquitto.db`, written every
    `AUTOSAVE_INTERVAL` seconds and at shutdown), so persistent sessions and their
    queued QoS 1 messages survive a restart, and a crash loses at most the last
    interval.
    """

    kind = "mosquitto"
    supports_mqtt5 = True
    supports_shared_subscriptions = True

    def __init__(
        self,
        binary: str,
        port: int,
        storage_dir: Path,
        max_inflight: int,
        host: str = EMBEDDED_HOST,
    ) -> None:
        self.host = host
        self.port = port
        self._workdir = Path(tempfile.mkdtemp(prefix="mqtt-jobs-broker-"))
        self.log_path = self._workdir / "mosquitto.log"
        storage_dir.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "mosquitto.conf"
        config.write_text(
            "\n".join(
                [
                    f"listener {port} {host}",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {storage_dir.resolve()}/",
                    "persistence_file mosquitto.db",
                    f"max_inflight_messages {max_inflight}",
                    f"max_queued_messages {MAX_QUEUED_MESSAGES}",
                    f"autosave_interval {AUTOSAVE_INTERVAL}",
                    # Without it, Nagle's algorithm holds each small PUBLISH until the
                    # client's delayed TCP ACK (~40 ms) whenever acks come in batches.
                    "set_tcp_nodelay true",
                    # Run as ourselves: as root, mosquitto would otherwise switch
                    # to the `mosquitto` user, who may not own storage_dir.
                    f"user {getpass.getuser()}",
                    f"log_dest file {self.log_path}",
                    "",
                ]
            )
        )
        self._process = subprocess.Popen(
            [binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        if not _wait_listening(host, port, START_TIMEOUT, lambda: self._process.poll() is None):
            self.stop()
            raise BrokerStartError(
                f"embedded mosquitto did not start on {host}:{port}: {self._log_tail()}"
            )

    @property
    def pid(self) -> int:
        """Process id of the mosquitto child."""
        return self._process.pid

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log written"
        return " | ".join(lines[-3:]) or "empty log"

    def kill(self) -> None:
        """SIGKILL mosquitto, as a crash would: what it had not saved yet is gone."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Terminate mosquitto (it saves its persistence file) and remove the temp config."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)


class AmqttBroker:
    """An amqtt broker running in-process on its own asyncio event-loop thread.

    MQTT 3.1.1 only, no `$share` subscriptions, and sessions live in memory only.
    """

    kind = "amqtt"
    supports_mqtt5 = False
    supports_shared_subscriptions = False

    def __init__(self, port: int, host: str = EMBEDDED_HOST) -> None:
        self.host = host
        self.port = port
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        # amqtt logs every connection at INFO; keep our log readable.
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise BrokerStartError(
                f"embedded amqtt broker did not start on {host}:{port}: {self._error!r}"
            )

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()

    async def _main(self) -> None:
        from amqtt.broker import Broker

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config, loop=self._loop)
        await broker.start()
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            await broker.shutdown()

    def stop(self) -> None:
        """Shut the broker down and wait for its thread to end."""
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        self._thread.join(STOP_TIMEOUT)


def choose_port(preferred: int = DEFAULT_EMBEDDED_PORT) -> tuple[int, bool]:
    """(port to use, True if `preferred` was taken and a free port was chosen instead)."""
    if port_is_free(preferred):
        return preferred, False
    return free_port(), True


def start_embedded_broker(
    settings: Settings,
    implementation: str = "auto",
    port: int | None = None,
    storage_dir: Path = DEFAULT_STORAGE_DIR,
    mosquitto_binary: str | None = None,
) -> EmbeddedBroker:
    """Start a loopback broker and log, as the first thing, what runs where.

    `implementation` is 'auto' (mosquitto if on PATH, else amqtt), 'mosquitto' or
    'amqtt'. `port` None means 1883, or a free port if 1883 is taken. Raises
    `ConfigError` when MQTT_PROTOCOL=5 is asked of amqtt, `BrokerStartError` when
    the broker does not come up.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"embedded broker implementation must be one of {IMPLEMENTATIONS}, "
            f"got {implementation!r}"
        )
    binary = mosquitto_binary or shutil.which("mosquitto")
    if implementation == "mosquitto" and binary is None:
        raise BrokerStartError("no `mosquitto` binary on PATH: install mosquitto or set MQTT_HOST")
    use_mosquitto = implementation == "mosquitto" or (implementation == "auto" and binary)
    if not use_mosquitto and settings.mqtt_protocol == "5":
        raise ConfigError(
            "MQTT_PROTOCOL=5 needs a broker that speaks MQTT 5: the embedded amqtt broker "
            "only speaks 3.1.1; install mosquitto, set MQTT_HOST, or use MQTT_PROTOCOL=3.1.1"
        )
    if port is None:
        port, moved = choose_port()
    else:
        moved = False
    broker: EmbeddedBroker
    if use_mosquitto:
        assert binary is not None
        broker = MosquittoBroker(binary, port, storage_dir, settings.mqtt_max_inflight)
    else:
        broker = AmqttBroker(port)
    note = f" ({DEFAULT_EMBEDDED_PORT} was taken)" if moved else ""
    log.info(
        "embedded MQTT broker (%s) listening on %s:%d%s",
        broker.kind,
        broker.host,
        broker.port,
        note,
    )
    if not broker.supports_shared_subscriptions:
        log.warning(
            "embedded %s broker has no $share subscriptions: shared routes subscribe "
            "to their plain filter and --workers is limited to 1",
            broker.kind,
        )
    return broker
